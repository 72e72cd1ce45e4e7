"""Whether an agent ended because the model provider's usage limit was reached, and when the
limit resets. Pure: the worker asks it about the final ``result`` message of a stream-json
agent (Claude Code), and nothing else: ordinary agent text never counts, however it reads.

A limit is a result with ``is_error: true`` whose text (``result``, or an ``errors`` entry)
says so. The forms Claude Code has ended with::

    Claude AI usage limit reached|1767225600          (the reset as an epoch)
    Claude usage limit reached. Your limit will reset at 9am (America/Chicago).
    You've hit your limit · resets 3pm (Europe/Berlin)       (also "session", "weekly")
    5-hour limit reached · resets 8:30pm (Asia/Tokyo)
    Weekly limit reached · resets Dec 2, 7pm (Europe/Moscow)
    API Error: 429 {"type":"error","error":{"type":"rate_limit_error",...}}

A time is its next occurrence in its zone (the local zone when none is named). A time that
passed less than ``OVERDUE`` ago (a date: ``LAST_YEAR``; a date alone: today), a past epoch,
an unknown zone or a time more than ``FURTHEST`` ahead give no reset time: the limit is late
or the text unusable, and the caller backs off instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

OVERDUE = timedelta(hours=1)  # a stated time this recently past is late, not tomorrow's
LAST_YEAR = timedelta(days=2)  # a date this far past is next year's; nearer: late
FURTHEST = timedelta(days=8)  # a weekly limit is at most a week ahead; beyond: not believed
SAID_LIMIT = 300  # characters of the provider's message kept

_LIMIT = re.compile(
    r"usage limit reached"  # "Claude (AI) usage limit reached"
    r"|\bhit your (?:[\w-]+ )?limit\b"  # "You've hit your (session|weekly|Opus) limit"
    r"|\blimit reached\s*[·∙|]"  # "5-hour limit reached · resets …"
    r"|\brate_limit_error\b"
    r"|\b(?:api error|error|http|status(?: code)?)\W{0,3}429\b", re.I)
_EPOCH = re.compile(r"limit reached\|(\d{9,11})\b", re.I)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CLOCK = re.compile(
    r"\breset(?:s| at)\s+(?:at\s+|on\s+)?"
    r"(?:(?P<month>[a-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?\b,?\s*(?:at\s+)?)?"
    r"(?:(?P<hour>\d{1,2})(?::(?P<minute>\d\d))?\s*(?P<ampm>[ap]\.?m\.?)"
    r"|(?P<hour24>\d{1,2}):(?P<minute24>\d\d))?"
    r"(?:\s*\((?P<zone>[A-Za-z][\w+\-]*(?:/[\w+\-]+)*)\))?", re.I)


@dataclass(frozen=True)
class Limit:
    said: str  # the provider's message, as the agent reported it (untrusted text)
    reset_at: float | None  # epoch seconds; None when no usable reset time was given


def _texts(result: dict[str, Any]) -> list[str]:
    texts = [result.get("result")]
    errors = result.get("errors")
    if isinstance(errors, list):
        texts += errors
    return [t for t in texts if isinstance(t, str) and t.strip()]


def limit_reached(result: dict[str, Any] | None, now: datetime | None = None) -> Limit | None:
    """The limit a final ``result`` message reports, or None: not a result, not an error, or
    an error that is no limit. ``now`` (aware; default: now) anchors a wall-clock reset."""
    if not isinstance(result, dict) or result.get("type") != "result" \
            or result.get("is_error") is not True:
        return None
    said = next((t for t in _texts(result) if _LIMIT.search(t)), None)
    if said is None:
        return None
    now = now or datetime.now().astimezone()
    return Limit(said.strip()[:SAID_LIMIT], reset_time(said, now))


def reset_time(text: str, now: datetime) -> float | None:
    """When the limit ``text`` names resets (epoch seconds), if it names a usable time."""
    epoch = _EPOCH.search(text)
    if epoch:
        moment: datetime | None = datetime.fromtimestamp(int(epoch.group(1))).astimezone()
    else:
        moment = _wall_clock(text, now)
    if moment is None or moment <= now or moment - now > FURTHEST:
        return None
    return moment.timestamp()


def _wall_clock(text: str, now: datetime) -> datetime | None:
    """The next occurrence of the ``resets …`` time in ``text`` (None: none, or unusable)."""
    for match in _CLOCK.finditer(text):
        month = match["month"] and match["month"].lower()
        if month and month not in _MONTHS:
            continue  # "reset at some point" and the like
        if not month and match["hour"] is None and match["hour24"] is None:
            continue
        try:
            zone = ZoneInfo(match["zone"]) if match["zone"] else now.tzinfo
        except (ZoneInfoNotFoundError, ValueError):
            return None
        hour, minute = _hour_minute(match)
        if hour is None:
            return None
        here = now.astimezone(zone)
        try:
            if month:
                moment = here.replace(month=_MONTHS.index(month) + 1, day=int(match["day"]),
                                      hour=hour, minute=minute, second=0, microsecond=0)
                if moment < here - LAST_YEAR:  # "resets Jan 2" said on Dec 30
                    moment = moment.replace(year=moment.year + 1)
            else:
                moment = here.replace(hour=hour, minute=minute, second=0, microsecond=0)
                if moment < here - OVERDUE:
                    moment += timedelta(days=1)
        except ValueError:  # Feb 30, or Feb 29 in a year without one
            return None
        return moment
    return None


def _hour_minute(match: re.Match[str]) -> tuple[int | None, int]:
    """The 24-hour clock of a ``_CLOCK`` match (midnight when it names only a date)."""
    if match["hour24"] is not None:
        hour, minute = int(match["hour24"]), int(match["minute24"])
    elif match["hour"] is not None:
        hour, minute = int(match["hour"]) % 12, int(match["minute"] or 0)
        if match["ampm"][0].lower() == "p":
            hour += 12
        if int(match["hour"]) > 12:
            return None, 0
    else:
        hour, minute = 0, 0
    return (hour, minute) if hour < 24 and minute < 60 else (None, 0)
