"""The retry schedule, and the ``- Retry:`` line of tasks.md that carries it.

A run that ended without a PR while attempts remain goes back to Pending with::

    - Retry: attempt 2/3 not before 2026-11-24 10:20:00

and the launcher starts it no earlier. The wait after attempt ``k`` is
``retry_backoff * 2**(k-1)`` seconds, capped at ``retry_backoff_max`` (``[launcher]``).
The time is a tasks.md stamp (``shared.clock``); who writes the line: docs/PROTOCOL.md.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import NamedTuple

from shared.clock import parse_stamp, stamp
from shared.config import Config

_RETRY = re.compile(
    r"^attempt (?P<attempt>\d+)/(?P<max>\d+) not before "
    r"(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$"
)


class Retry(NamedTuple):
    attempt: int  # the attempt that will run next
    max_attempts: int
    not_before: datetime  # aware, local


def backoff_seconds(cfg: Config, failed_attempt: int) -> float:
    """How long to wait after attempt ``failed_attempt`` (1-based) before the next one."""
    exponent = max(failed_attempt, 1) - 1
    base = cfg.launcher.retry_backoff
    cap = cfg.launcher.retry_backoff_max
    return min(base * 2 ** min(exponent, 64), cap)  # min(): 2**huge stays a small int


def next_retry(cfg: Config, failed_attempt: int, ended: datetime) -> Retry:
    """The retry that follows attempt ``failed_attempt``, which ended at ``ended``."""
    not_before = ended + timedelta(seconds=backoff_seconds(cfg, failed_attempt))
    return Retry(failed_attempt + 1, cfg.launcher.max_attempts, not_before.astimezone())


def retry_value(retry: Retry) -> str:
    """The value of the ``- Retry:`` detail line."""
    return f"attempt {retry.attempt}/{retry.max_attempts} not before {stamp(retry.not_before)}"


def parse_retry(value: str) -> Retry | None:
    """The ``- Retry:`` detail's value as a ``Retry``; None if it is not one."""
    match = _RETRY.match(value.strip())
    if not match:
        return None
    when = parse_stamp(match.group("when"))
    if when is None:
        return None
    return Retry(int(match.group("attempt")), int(match.group("max")), when)
