"""The two time formats tac8 writes, and the one parser for each.

* ISO 8601 with offset, to the second (``2026-11-24T10:15:02+01:00``): records, events,
  PAUSE — what programs read. ``parse_iso`` also takes the datetime YAML may hand over.
* ``YYYY-MM-DD HH:MM:SS`` in local wall-clock time (``stamp``): tasks.md — what a person
  reads (``- Started:``, ``- Retry: … not before …``).

``duration`` shows a number of seconds as a person reads it (``5m 03s``).

A Pi has no real-time clock: these are for people and records, never for ordering across a
reboot; timeouts use ``time.monotonic``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def now_iso() -> str:
    """The local time, ISO 8601 with offset, to the second."""
    return iso_at(time.time())


def iso_at(epoch: float) -> str:
    """The moment ``epoch`` (seconds) in local time, ISO 8601 with offset, to the second."""
    return datetime.fromtimestamp(epoch, timezone.utc).astimezone().isoformat(timespec="seconds")


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 time (text, or a datetime from YAML) as an aware local datetime; None if
    it is not one. A time without offset is taken as local."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except (TypeError, ValueError):
            return None
    return moment.astimezone()


def stamp(moment: datetime | None = None) -> str:
    """``moment`` (default now) as a tasks.md timestamp, in local time."""
    return (moment or datetime.now()).astimezone().strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime | None:
    """A tasks.md timestamp as an aware local datetime, or None if it is not one."""
    try:
        return datetime.strptime(text.strip(), STAMP_FORMAT).astimezone()
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """``seconds`` as a person reads it, truncated to two units (``5m 03s``, ``2h 07m``)."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d {seconds // 3600 % 24:02d}h"
