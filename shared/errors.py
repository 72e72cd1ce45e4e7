"""The three kinds of failure tac8 expects, and their base.

* ``ConfigError``: a setting or a file a person writes is wrong (the message names the file
  and, where there is one, the key); fixing the file fixes it.
* ``LockError``: a lock (or a file kept changing under a transaction) could not be had in
  time; it passes on its own.
* ``ExternalError``: something outside tac8 failed: git, gh, GitHub, a program that would not
  start or timed out.

Each program's loop (``shared.program``) logs a ``Tac8Error`` from a cycle as one line and
goes on; anything else is a bug and is logged with its traceback.
"""

from __future__ import annotations


class Tac8Error(Exception):
    """A failure tac8 expects and reports in one line."""


class ConfigError(Tac8Error, ValueError):
    """A setting or a person's file is wrong."""


class LockError(Tac8Error):
    """A lock could not be had in time."""


class ExternalError(Tac8Error):
    """Something outside tac8 failed."""
