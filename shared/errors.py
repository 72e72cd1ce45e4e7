"""The three kinds of failure tac8 expects, and their base.

* ``ConfigError``: a setting or a file a person writes is wrong (the message names the file
  and, where there is one, the key); fixing the file fixes it.
* ``LockError``: a lock (or a file kept changing under a transaction) could not be had in
  time; it passes on its own.
* ``ExternalError``: something outside tac8 failed: git, gh, GitHub, a program that would not
  start or timed out.

Each program's loop (``shared.program``) logs a ``Tac8Error`` from a cycle as one line and
goes on; anything else is a bug and is logged with its traceback.

``describe`` is how an exception reads in a message for people: an ``OSError`` as
"No such file or directory: /srv/tasks.md", without Python's ``[Errno 2]``, quotes or
``PosixPath('…')``.
"""

from __future__ import annotations

import os


class Tac8Error(Exception):
    """A failure tac8 expects and reports in one line."""


class ConfigError(Tac8Error, ValueError):
    """A setting or a person's file is wrong."""


class LockError(Tac8Error):
    """A lock could not be had in time."""


class ExternalError(Tac8Error):
    """Something outside tac8 failed."""


def describe(exc: BaseException) -> str:
    """``exc`` as one line for a person (see the module docstring): an ``OSError`` as its
    reason and the file(s) it names, anything else as its message, or its class's name when
    it has none."""
    if isinstance(exc, OSError) and exc.strerror:
        files = [_file_name(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{exc.strerror}: {' -> '.join(files)}" if files else exc.strerror
    return str(exc) or type(exc).__name__


def _file_name(name: object) -> str:
    """A file an ``OSError`` names (a str, bytes or a path object; subprocess keeps the
    ``Path`` it was given, which ``str(exc)`` shows as ``PosixPath('…')``) as plain text."""
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
