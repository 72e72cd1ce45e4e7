"""What several ``tac8`` commands share: the user's task ids, where a task is on the board,
durations as a person reads them, and the error a user can fix."""

from __future__ import annotations

import re

from shared.config import Config
from shared.tasks import read_board


class UserError(Exception):
    """A mistake or a state the user can fix; printed as one line."""


def task_id(text: str) -> str:
    """``gh-12``, ``t-3``, or an issue number (``12``, ``#12``) as its task id."""
    text = text.strip()
    if re.fullmatch(r"#?\d+", text):
        return f"gh-{text.lstrip('#')}"
    if re.fullmatch(r"(gh|t)-\d+", text):
        return text
    raise UserError(f"not a task id: {text!r} (expected gh-N, t-N or an issue number)")


def section_of(cfg: Config, task: str) -> str | None:
    """The tasks.md section the task is in, or None."""
    found = read_board(cfg.tasks_file).find(task)
    return found[0] if found else None


def duration(seconds: float | None) -> str:
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
