"""Whether a GitHub issue still asks for work, from the fetcher's snapshot of it.

The fetcher alone writes ``state/issues/gh-<n>.md`` (frontmatter ``state``, ``labels``…; format:
docs/PROTOCOL.md). ``withdrawn`` reads what a snapshot says: an issue that was closed, deleted
or lost the trigger label (``[github] label``, matched ignoring case as GitHub does) is
withdrawn, and its task is not worked on: the fetcher removes its Pending line or writes
``STOP`` for its Active one, the launcher does not launch it, and the observer's stop comment
says which it was (``explain``) and how to resume. A task with no snapshot (a ``t-`` task, no
GitHub configured, an issue not fetched yet) is not withdrawn.
"""

from __future__ import annotations

from typing import Any

from shared.config import Config
from shared.records import Record, RecordError, read_record
from shared.tasks import issue_number

CLOSED, DELETED, UNLABELLED = "closed", "deleted", "unlabelled"


def trusted(cfg: Config, login: str, association: str) -> bool:
    """Whether GitHub user ``login`` may steer tac8 (file an issue it works on, answer, review,
    command): their ``author_association`` is a trusted one, or they are an allowed author."""
    return association in cfg.github.trusted_associations \
        or login.lower() in {a.lower() for a in cfg.github.allowed_authors}


def read_issue(cfg: Config, number: int) -> Record | None:
    """The fetcher's snapshot of issue ``number``; None if there is none (or it is unreadable)."""
    try:
        return read_record(cfg.issue_snapshot(number))
    except (FileNotFoundError, RecordError):
        return None


def withdrawn(cfg: Config, meta: dict[str, Any]) -> str | None:
    """Why the issue in snapshot ``meta`` no longer asks for work (``CLOSED``, ``DELETED`` or
    ``UNLABELLED``); None while it is open with the trigger label."""
    state = str(meta.get("state") or "")
    if state != "open":
        return DELETED if state == DELETED else CLOSED
    label = cfg.github.label.lower()
    if any(str(name).lower() == label for name in meta.get("labels") or []):
        return None
    return UNLABELLED


def task_withdrawn(cfg: Config, task: str) -> str | None:
    """``withdrawn`` for the issue of a ``gh-<n>`` task; None for any other task, or with no
    snapshot."""
    number = issue_number(task)
    snapshot = read_issue(cfg, number) if number is not None else None
    return withdrawn(cfg, snapshot.meta) if snapshot else None


def explain(cfg: Config, task: str, reason: str) -> tuple[str, str]:
    """What happened to the task's issue, and what a person does to have the task run again."""
    issue = f"issue #{issue_number(task)}"
    return {
        CLOSED: (f"{issue} was closed", "reopen the issue"),
        DELETED: (f"{issue} was deleted", "file a new issue"),
        UNLABELLED: (f"{issue} lost its '{cfg.github.label}' label",
                     f"label the issue '{cfg.github.label}' again"),
    }[reason]
