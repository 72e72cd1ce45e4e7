"""The standby worker runner and its handover (DESIGN.md §4): both ends of one socketpair.

Starting ``python -m services.worker`` costs about 80 ms of interpreter start and imports
before the agent can start. While tasks wait for a slot, the launcher keeps at most one
runner started in advance, ``python -m services.worker --standby FD`` (FD: the runner's end
of an ``AF_UNIX``/``SOCK_SEQPACKET`` pair; the launcher keeps the other end). It runs in its
own session, with its imports done and nothing else: no task, no lock, no child, no config
read yet. It is not a worker and counts against nothing; ``ps`` shows it as ``tac8-standby``
(its ``comm``) until it takes a task. The messages, one per packet:

* runner → launcher ``ready``: it waits for a task.
* launcher → runner ``task <id>``, carrying one descriptor (``SCM_RIGHTS``): the task's
  liveness lock, which the launcher took and still holds. ``flock`` belongs to the open
  file description, which both processes now hold, so the lock is never free for an
  instant (the observer reads "lock free and no outcome" as a dead worker).
* runner → launcher ``took <id>``: from here on the runner is that task's worker, exactly
  as if started with ``<id> --lock-fd N`` (it reads the config then, so it is as fresh as
  for a worker started at that moment). The launcher then closes its end and its copy of
  the lock. No reply in time: the launcher kills the runner (still holding the lock itself)
  and starts the worker the ordinary way.
* end of file: the launcher went away (stopped, killed) or dismissed the standby; a runner
  that has no task exits at once, with status 0.
"""

from __future__ import annotations

import socket

READY = b"ready"
_TASK = b"task "
_TOOK = b"took "
_MAX = 256  # bytes in a message (a task id is short)


def pair() -> tuple[socket.socket, socket.socket]:
    """(launcher's end, runner's end); both close-on-exec, the runner's end is passed on."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


# --- the runner's side --------------------------------------------------------------------

def await_task(sock: socket.socket) -> tuple[str, int] | None:
    """Say ``ready``, then wait for a task: (task id, lock descriptor), or None at end of file
    (the launcher is gone). Answers ``took <id>`` before it returns."""
    try:
        sock.send(READY)
        message, fds, _, _ = socket.recv_fds(sock, _MAX, 1)
    except (BrokenPipeError, ConnectionResetError):
        return None
    if not message:
        for fd in fds:  # nothing is sent with end of file; be tidy anyway
            socket.close(fd)
        return None
    if not message.startswith(_TASK) or len(fds) != 1:
        for fd in fds:
            socket.close(fd)
        raise ValueError(f"standby: unexpected message {message[:60]!r} with {len(fds)} fd(s)")
    task = message.removeprefix(_TASK).decode()
    sock.send(_TOOK + task.encode())
    return task, fds[0]


# --- the launcher's side ------------------------------------------------------------------

def wait_ready(sock: socket.socket, timeout: float) -> bool | None:
    """True once the runner said ``ready`` (ask until True, then stop: it says it once),
    False if it did not within ``timeout`` seconds (still starting), None if it is gone."""
    try:
        sock.settimeout(timeout)
        message = sock.recv(_MAX)
    except (TimeoutError, BlockingIOError):  # (BlockingIOError: with no timeout at all)
        return False
    except OSError:
        return None
    return True if message == READY else None  # else end of file, or not this protocol


def offer(sock: socket.socket, task: str, lock_fd: int, timeout: float) -> bool:
    """Hand ``task`` and its held lock to a ready runner; True once it answered ``took``."""
    try:
        socket.send_fds(sock, [_TASK + task.encode()], [lock_fd])
        sock.settimeout(timeout)
        return sock.recv(_MAX) == _TOOK + task.encode()
    except OSError:  # gone (EPIPE, ECONNRESET) or too slow (TimeoutError)
        return False
