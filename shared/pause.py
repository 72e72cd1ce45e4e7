"""``state/PAUSE``: while it exists the launcher starts no worker; running workers go on.

Frontmatter ``by`` (cli, launcher, worker), ``at`` (ISO 8601), ``reason`` and, for a pause that
ends by itself, ``until``; written by ``tac8 pause``, the launcher (SIGUSR1, auto-pause) and a
worker whose agent hit the provider's usage limit (``pause_for_limit``); removed by ``tac8
resume``, SIGUSR1, or the launcher once ``until`` has passed (docs/PROTOCOL.md).

Every change (``pause``, ``resume``, ``toggle``) holds ``state/locks/PAUSE.lock``, so a
toggle's read and its write are one step: a ``tac8 pause`` written meanwhile is never
removed by a toggle that read "not paused". Each change emits its event (``paused`` or
``resumed``, with ``by`` and ``reason``) just before it: whoever sees the file changed finds
the event already out. Reads need no lock (the file is replaced atomically).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.config import Config
from shared.clock import iso_at, now_iso, parse_iso, stamp
from shared.events import emit
from shared.locks import file_lock
from shared.records import RecordError, read_record, write_record

LIMIT_AUTO = "auto: usage limit reached"  # how the reason of a usage-limit pause begins
LIMIT_BACKOFF, LIMIT_BACKOFF_MAX = 15 * 60, 4 * 3600  # seconds, when no reset time is given
LIMITS_FORGOTTEN = timedelta(days=1)  # a count whose last limit is older starts afresh


def read_pause(cfg: Config) -> dict[str, Any] | None:
    """The pause record, or None when not paused. An unreadable PAUSE still pauses."""
    try:
        return read_record(cfg.pause_file).meta
    except FileNotFoundError:
        return None
    except RecordError:
        return {"by": "unknown", "reason": "state/PAUSE exists (not a frontmatter file)"}


def _lock(cfg: Config) -> Any:
    return file_lock(cfg.locks_dir / "PAUSE.lock")


def _write(cfg: Config, by: str, reason: str, until: str | None = None) -> None:
    emit(cfg.events_dir, "paused", by=by, reason=reason, **({"until": until} if until else {}))
    write_record(cfg.pause_file, {"by": by, "at": now_iso(), "reason": reason,
                                  **({"until": until} if until else {})})


def _remove(cfg: Config, by: str, reason: str) -> bool:
    if not cfg.pause_file.exists():
        return False
    emit(cfg.events_dir, "resumed", by=by, reason=reason)
    cfg.pause_file.unlink(missing_ok=True)
    return True


def pause(cfg: Config, by: str, reason: str) -> None:
    with _lock(cfg):
        _write(cfg, by, reason)


def resume(cfg: Config, by: str = "cli", reason: str = "resumed") -> bool:
    """Remove the pause; returns whether there was one."""
    with _lock(cfg):
        return _remove(cfg, by, reason)


def toggle(cfg: Config, by: str, reason: str) -> bool:
    """Pause if not paused, else resume (``by`` and ``reason`` say who and why); whether it
    is paused now."""
    with _lock(cfg):
        if read_pause(cfg) is None:
            _write(cfg, by, f"paused {reason}")
            return True
        _remove(cfg, by, f"resumed {reason}")
        return False


# --- a pause that ends by itself: the provider's usage limit ----------------------------------

def pause_end(meta: dict[str, Any] | None) -> datetime | None:
    """When the pause ``meta`` (``read_pause``) ends by itself; None: until resumed."""
    return parse_iso(meta.get("until")) if meta and meta.get("until") else None


def limit_backoff(hits: int) -> float:
    """The wait after the ``hits``-th usage limit in a row that gave no reset time."""
    return min(LIMIT_BACKOFF * 2 ** min(max(hits, 1) - 1, 16), LIMIT_BACKOFF_MAX)


def _limit_hits(cfg: Config, now: datetime) -> int:
    """Usage limits in a row so far (``state/usage_limit.md``)."""
    try:
        meta = read_record(cfg.usage_limit_file).meta
    except (FileNotFoundError, RecordError):
        return 0
    last = parse_iso(meta.get("at"))
    hits = meta.get("hits")
    if last is None or now - last > LIMITS_FORGOTTEN or not isinstance(hits, int):
        return 0
    return hits


def pause_for_limit(cfg: Config, reset_at: float | None, now: datetime | None = None) -> datetime:
    """A worker's agent hit the provider's usage limit: pause launching until ``reset_at``
    (epoch) or, when the provider gave no time, for ``limit_backoff`` of the limits in a
    row. Returns when launching resumes. One step under the pause lock, so workers hitting
    the limit together count it once: a limit met while a limit's pause is on extends it (if
    it ends later) without counting. A pause that does not end by itself (a person's, or the
    launcher's own) is left as it is: it is not the worker's to end."""
    now = now or datetime.now().astimezone()
    with _lock(cfg):
        current = read_pause(cfg)
        end = pause_end(current)
        hits = _limit_hits(cfg, now)
        if end is None or end <= now:  # not already paused for a limit: a new one in a row
            hits += 1
            write_record(cfg.usage_limit_file, {"hits": hits, "at": iso_at(now.timestamp())})
        if reset_at is not None:
            until, reason = datetime.fromtimestamp(reset_at).astimezone(), LIMIT_AUTO
        else:
            wait = limit_backoff(hits)
            until = now + timedelta(seconds=wait)
            reason = (f"{LIMIT_AUTO} (no reset time given; {hits} in a row: waiting "
                      f"{int(wait // 60)} min)")
        if current is None or (end is not None and end < until):
            _write(cfg, "worker", reason, iso_at(until.timestamp()))
        return until


def limit_passed(cfg: Config, started: datetime) -> bool:
    """A run that began at ``started`` ended without meeting the usage limit: forget the
    limits in a row if that run began after the last of them. Whether it forgot them."""
    path = cfg.usage_limit_file
    if not path.exists():  # the usual case: no lock taken
        return False
    with _lock(cfg):
        try:
            last = parse_iso(read_record(path).meta.get("at"))
        except FileNotFoundError:
            return False
        except RecordError:
            last = None
        if last is not None and started <= last:
            return False  # it was already running when the limit was met: it proves nothing
        path.unlink(missing_ok=True)
        return True


def lift_if_over(cfg: Config, by: str, now: datetime | None = None) -> dict[str, Any] | None:
    """Remove a pause whose ``until`` has passed; the pause removed, or None (none, not
    over, or replaced meanwhile by one that is not)."""
    now = now or datetime.now().astimezone()
    with _lock(cfg):
        current = read_pause(cfg)
        end = pause_end(current)
        if end is None or end > now:
            return None
        _remove(cfg, by, f"auto: the pause ended at {stamp(end)} ({current.get('reason')})")
        return current
