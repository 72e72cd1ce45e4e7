"""Lockfiles (docs/PROTOCOL.md, rules 3, 4 and 7).

Two kinds, both ``flock(2)`` on a file, so the kernel releases them when the process dies
(``kill -9``, power loss) and a PID that was reused can never look like a holder:

* ``file_lock(path)`` guards a read-modify-write of a shared file. It waits at most
  ``timeout`` seconds and, once held, writes who holds it (pid, program, since) into the lock
  file, so a timeout can say who was in the way.
* ``hold(path)`` is held for a whole process's life: a worker's liveness lock
  (``state/live/<task>.lock``) or a program's single-instance lock
  (``state/locks/<program>.lock``). ``is_held(path)`` asks without blocking. Its holder
  removes the file when it is done (``HeldLock.remove``, the default on leaving a ``with``),
  so ``state/live/`` holds only the locks of live (or crashed) workers.

A lock file may be unlinked by whoever holds it, so taking a lock checks, once it holds the
flock, that the path still names the file it locked, and starts again if not.

Every lock descriptor is close-on-exec, so a child process (an agent) never inherits a lock
and never keeps a dead worker looking alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from shared.errors import LockError, describe


class LockTimeout(LockError, TimeoutError):
    """The lock stayed held by someone else for longer than the timeout."""


class AlreadyHeld(LockError):
    """A life-long lock is held by another live process."""


def _program_name() -> str:
    return os.environ.get("TAC8_PROGRAM") or Path(sys.argv[0]).name or "python"


def _open_lockfile(path: Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _describe_holder(fd: int) -> None:
    since = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    text = f"pid={os.getpid()} program={_program_name()} since={since}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)


def holder(path: Path) -> str:
    """Who last took the lock at ``path`` (informational; empty if unknown)."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""


def _flock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive flock on ``fd``, retrying for up to ``seconds``; False if not."""
    deadline = time.monotonic() + seconds
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open on ``fd`` (its holder may have unlinked it)."""
    try:
        theirs = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _take(path: Path, seconds: float) -> int | None:
    """A descriptor of ``path`` holding its exclusive flock, taken within ``seconds``; None
    if someone else held it all along."""
    deadline = time.monotonic() + seconds
    while True:
        fd = _open_lockfile(path)
        if not _flock_within(fd, max(0.0, deadline - time.monotonic())):
            os.close(fd)
            return None
        if _names(path, fd):
            return fd
        os.close(fd)  # we locked a file its last holder removed: lock the one there now


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 10.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the ``with`` block, waiting up to ``timeout``."""
    fd = _take(path, timeout)
    if fd is None:
        raise LockTimeout(
            f"{path}: still locked after {timeout:g}s by {holder(path) or 'unknown'}")
    try:
        _describe_holder(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class HeldLock:
    """A life-long exclusive lock; released by ``release()`` or by the process's death.
    Leaving a ``with`` block removes its file too, unless it was handed over to a child."""

    def __init__(self, path: Path, fd: int):
        self.path = Path(path)
        self._fd: int | None = fd
        self._handed_over = False

    def fileno(self) -> int:
        """The locked descriptor, e.g. to pass to a child that takes the lock over."""
        if self._fd is None:
            raise ValueError(f"{self.path}: lock already released")
        return self._fd

    def hand_over(self) -> None:
        """A child process holds it now (through a shared descriptor): leaving the ``with``
        block only closes ours; the child removes the file when it is done."""
        self._handed_over = True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Remove the lock file, then release the lock: a prober that opens the path from
        now on finds no file (not held), one that opened it earlier finds it held until the
        release."""
        if self._fd is not None and _names(self.path, self._fd):
            self.path.unlink()
        self.release()

    def __enter__(self) -> "HeldLock":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handed_over:
            self.release()
        else:
            self.remove()


def hold(path: Path, wait: float = 2.0) -> HeldLock:
    """Take the life-long lock at ``path`` or raise ``AlreadyHeld``.

    ``wait`` covers the instant in which an ``is_held`` probe holds a shared lock.
    """
    fd = _take(path, wait)
    if fd is None:
        raise AlreadyHeld(f"{path} is held by {holder(path) or 'another process'}")
    _describe_holder(fd)
    return HeldLock(path, fd)


def adopt(path: Path, fd: int) -> HeldLock:
    """Take over a life-long lock on ``path`` that a parent took and passed down as ``fd``.

    flock belongs to the open file description, which parent and child share, so the lock
    is held without a gap from before the child existed (the launcher uses this so a worker
    is "alive" from the instant it is launched). Raises ``AlreadyHeld`` if ``fd`` is not
    that file or does not hold its lock.
    """
    try:
        mine, theirs = os.fstat(fd), os.stat(path)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            raise AlreadyHeld(f"{path}: inherited descriptor {fd} is another file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op if fd already holds it
    except OSError as exc:
        raise AlreadyHeld(f"{path}: inherited descriptor {fd} does not hold it ({describe(exc)})") from None
    os.set_inheritable(fd, False)
    _describe_holder(fd)
    return HeldLock(path, fd)


def remove_if_free(path: Path) -> bool:
    """Remove the lock file at ``path`` if nobody holds it (a holder that crashed left it);
    True if it is gone."""
    try:
        lock = hold(path, wait=0)
    except AlreadyHeld:
        return False
    lock.remove()
    return True


def is_held(path: Path) -> bool:
    """True if a live process holds the lock at ``path``. Never blocks, never creates it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock, if it got one
    return False
