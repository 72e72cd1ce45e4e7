"""Run records and PR markers: what a worker did (DESIGN.md §2, §4).

``state/runs/<task>.md`` — frontmatter run record, body = tail of the agent's log::

    task, worker_id, attempt, pid, started, branch, worktree,   (launcher, at launch)
    outcome, exit_code, finished, error, commit,                 (worker, at its end)
    cost_usd, tokens, turns,
    applied                                                      (observer: transitions done)

``outcome`` is one of ``OUTCOMES``, or absent while the run is going. The worker writes it
*before* it exits, so "liveness lock free and no outcome" means the worker died (killed,
power loss); the observer then writes ``outcome: failed`` itself. Whoever sets the outcome
emits the ``run_finished`` event, so it is emitted exactly once. ``applied`` lists the
transitions the observer has already carried out for this run (so none is done twice).

Edits go through ``update_run`` under ``state/locks/run-<task>.lock``; liveness is the
``flock`` on ``state/runs/<task>.lock`` (``worker_alive``), never a PID.

``state/prs/<task>.md`` — PR marker: ``url, number, head, commit, found_by`` (worker or
fetcher). Its presence means the task's work is on a pull request (or, with no GitHub repo
configured, pushed: then ``url`` is empty and ``head`` names the pushed branch).
"""

from __future__ import annotations

from typing import Any, Callable

from shared.config import Config
from shared.locks import is_held
from shared.records import Record, RecordError, read_record, update_record, write_record

PR, FAILED, BLOCKED, STOPPED = "pr", "failed", "blocked", "stopped"
OUTCOMES = (PR, FAILED, BLOCKED, STOPPED)


def read_run(cfg: Config, task: str) -> Record | None:
    """The run record of ``task``, or None if there is none (or it is unreadable)."""
    try:
        return read_record(cfg.run_record(task))
    except (FileNotFoundError, RecordError):
        return None


def update_run(cfg: Config, task: str, change: Callable[[Record], Any]) -> Any:
    """Read-modify-write the run record under its lock; returns what ``change`` returns."""
    return update_record(cfg.run_record(task), cfg.run_record_lock(task), change)


def worker_alive(cfg: Config, task: str) -> bool:
    return is_held(cfg.liveness_lock(task))


def read_pr_marker(cfg: Config, task: str) -> dict[str, Any] | None:
    try:
        return read_record(cfg.pr_marker(task)).meta
    except (FileNotFoundError, RecordError):
        return None


def write_pr_marker(cfg: Config, task: str, *, url: str, number: int | None, head: str,
                    commit: str, found_by: str) -> None:
    write_record(cfg.pr_marker(task), {
        "task": task, "url": url, "number": number, "head": head, "commit": commit,
        "found_by": found_by,
    })
