"""``state/PAUSE``: while it exists the launcher starts no worker; running workers go on.

Frontmatter ``by`` (cli, launcher…), ``at`` (ISO 8601), ``reason``; written by ``tac8 pause``
and the launcher (SIGUSR1, auto-pause), removed by ``tac8 resume`` or SIGUSR1 (docs/PROTOCOL.md).

Every change (``pause``, ``resume``, ``toggle``) holds ``state/locks/PAUSE.lock``, so a
toggle's read and its write are one step: a ``tac8 pause`` written meanwhile is never
removed by a toggle that read "not paused". Each change emits its event (``paused`` or
``resumed``, with ``by`` and ``reason``) just before it: whoever sees the file changed finds
the event already out. Reads need no lock (the file is replaced atomically).
"""

from __future__ import annotations

from typing import Any

from shared.config import Config
from shared.clock import now_iso
from shared.events import emit
from shared.locks import file_lock
from shared.records import RecordError, read_record, write_record


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


def _write(cfg: Config, by: str, reason: str) -> None:
    emit(cfg.events_dir, "paused", by=by, reason=reason)
    write_record(cfg.pause_file, {"by": by, "at": now_iso(), "reason": reason})


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
