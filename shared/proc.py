"""Running a program: the one way tac8 starts git and gh and waits for them.

``run`` takes an argv (never a shell). The child gets a session and process group of its
own, ``/dev/null`` as stdin unless data is given, and no descriptor of ours. Both output
streams are drained as they come (a chatty child never blocks on a full pipe) and at most
``MAX_OUTPUT`` bytes of each are kept, so a hostile program cannot exhaust our memory.

The whole group is SIGKILLed when the timeout expires, when anything interrupts the wait (a
program's cold shutdown raises from its signal handler), and also as soon as the child
itself has exited: whatever it left running in its group (a hook's ``sleep &``) dies with it
instead of holding our pipes open. Failing to start and timing out raise ``ExternalError``;
a non-zero exit does not, the caller reads ``returncode``.

``ExternalError`` is also the base of the errors callers map it to (``GitError``,
``GitHubError``): whatever failed outside tac8 is caught as one kind.
"""

from __future__ import annotations

import os
import selectors
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from shared.errors import ExternalError

MAX_OUTPUT = 8 * 1024 * 1024  # bytes kept of each stream: a page of 100 long issues fits
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Result:
    returncode: int  # negative: killed by that signal
    stdout: bytes
    stderr: bytes
    truncated: bool = False  # output beyond MAX_OUTPUT was read and dropped


def run(argv: Sequence[str], *, cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None, stdin: bytes | str | None = None,
        timeout: float) -> Result:
    """Run ``argv`` to its end within ``timeout`` seconds; see the module docstring."""
    shown = _shown(argv)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        child = subprocess.Popen(
            list(argv), cwd=cwd, env=env, close_fds=True, start_new_session=True,
            stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ExternalError(f"{shown}: cannot start: {exc.strerror or exc}") from None
    try:
        out, err, truncated = _drain(child, data, timeout)
    except _Stopped as why:
        raise ExternalError(f"{shown}: {why}") from None
    finally:
        _kill_group(child)
        child.wait()
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    return Result(child.returncode, out, err, truncated)


class _Stopped(Exception):
    """The timeout expired."""


def _drain(child: subprocess.Popen, data: bytes | None,
           timeout: float) -> tuple[bytes, bytes, bool]:
    """Feed ``data`` to the child and read both its streams until they end and the child
    has exited. Leaves the child unreaped, so its pid still names its process group."""
    kept = {child.stdout.fileno(): bytearray(), child.stderr.fileno(): bytearray()}
    truncated = False
    pidfd = os.pidfd_open(child.pid)  # readable once the child has exited
    unsent, written = memoryview(data or b""), 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        try:
            for fd in (*kept, pidfd):
                sel.register(fd, selectors.EVENT_READ)
            if data:
                os.set_blocking(child.stdin.fileno(), False)
                sel.register(child.stdin.fileno(), selectors.EVENT_WRITE)
            elif child.stdin is not None:
                child.stdin.close()  # empty input: EOF at once
            while sel.get_map():
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise _Stopped(f"timed out after {timeout:g} s")
                ready = sel.select(wait)
                for key, _ in ready:
                    fd = key.fd
                    if fd == pidfd:
                        sel.unregister(fd)
                        _kill_group(child)  # its leftovers: the child is gone, so are they
                    elif fd in kept:
                        chunk = os.read(fd, _CHUNK)
                        if not chunk:
                            sel.unregister(fd)
                            continue
                        room = MAX_OUTPUT - len(kept[fd])
                        kept[fd] += chunk[:room]
                        truncated = truncated or len(chunk) > room
                    else:
                        try:
                            written += os.write(fd, unsent[written:written + _CHUNK])
                        except BrokenPipeError:  # it stopped reading; its exit status tells
                            written = len(unsent)
                        if written == len(unsent):
                            sel.unregister(fd)
                            child.stdin.close()
        finally:
            os.close(pidfd)
    return bytes(kept[child.stdout.fileno()]), bytes(kept[child.stderr.fileno()]), truncated


def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL the child's process group. Called only before the child is reaped: until
    then its pid, the group's id, cannot be reused for anybody else's group."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:  # nobody left in it
        pass


def _shown(argv: Sequence[str]) -> str:
    """The command for a message: the program's name and its arguments, shortened."""
    text = shlex.join([os.path.basename(argv[0]), *argv[1:]])
    return text if len(text) <= 300 else text[:299] + "…"
