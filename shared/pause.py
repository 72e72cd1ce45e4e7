"""``state/PAUSE``: while it exists the launcher starts no worker (DESIGN.md §2, §7).

Frontmatter ``by`` (cli, launcher, usr1…), ``at`` (ISO 8601), ``reason``; written atomically
by the CLI (``tac8 pause``), the launcher (SIGUSR1, auto-pause on critical health or a
repeated startup failure); removed by ``tac8 resume`` or SIGUSR1. Running workers go on.
"""

from __future__ import annotations

from typing import Any

from shared.config import Config
from shared.events import now_iso
from shared.records import RecordError, read_record, write_record


def read_pause(cfg: Config) -> dict[str, Any] | None:
    """The pause record, or None when not paused. An unreadable PAUSE still pauses."""
    try:
        return read_record(cfg.pause_file).meta
    except FileNotFoundError:
        return None
    except RecordError:
        return {"by": "unknown", "reason": "state/PAUSE exists (not a frontmatter file)"}


def pause(cfg: Config, by: str, reason: str) -> None:
    write_record(cfg.pause_file, {"by": by, "at": now_iso(), "reason": reason})


def resume(cfg: Config) -> bool:
    """Remove the pause; returns whether there was one."""
    try:
        cfg.pause_file.unlink()
        return True
    except FileNotFoundError:
        return False
