"""What several ``tac8`` commands share: the user's task ids, where a task is on the board,
and the error a user can fix. (Durations as a person reads them: ``shared.clock.duration``.)"""

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

