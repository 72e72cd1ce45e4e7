"""Events: one small frontmatter file per thing that happened (DESIGN.md §2, §6).

Every program publishes events into the ``state/events`` maildir; only the metrics program
reads them, folds them into ``metrics.json`` and deletes them. An event is
``type``, ``at`` (ISO 8601 with offset), ``program``, optional ``task``, then details.

Event types and who emits them (metrics counts from these, so each is emitted exactly once
by the one program that owns the fact):

======================  =========  =====================================================
type                    by         details
======================  =========  =====================================================
task_added              fetcher    issue, title
issue_ignored           fetcher    issue, author, association (untrusted author)
task_removed            fetcher    issue, reason (closed / unlabelled)
github_api_error        fetcher    error, status; during: outbox (see services/fetcher)
rate_limit              fetcher    remaining, reset
comment_sent            fetcher    issue, key
comment_set_aside       fetcher    item, issue, key, reason (moved to outbox/bad/)
worker_launched         launcher   worker_id, attempt, pid
launch_failed           launcher   error, attempt
worktree_error          launcher   error
paused / resumed        launcher   reason (paused by the launcher itself: auto or USR1)
worktrees_cleaned       launcher   removed, kept
run_finished            worker     outcome (pr/failed/blocked/stopped), exit_code, error,
                                   cost_usd, tokens, seconds, worker_id — or observer for
                                   a worker found dead (it sets the outcome in the record)
pr_created              worker     url, number (a PR this run opened, not found existing)
task_completed          observer   pr, commit
task_blocked            observer   question
task_stopped            observer   commit
task_failed             observer   error, attempt
task_retry              observer   attempt, not_before, error
stop_requested          observer   worker_id, alive, signalled (one per STOP touched)
======================  =========  =====================================================

Delivery is at least once; the metrics program deduplicates by ``key``. An event about one
run has a key of its own that a producer redoing its step after a crash emits again
(``<task>/<worker_id>/launched``, ``…/run_finished``, ``…/pr_created``, and the observer's
``<task>/<worker_id>/<transition>``, as on its comment); any other event gets a unique key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared.clock import now_iso
from shared.fsio import publish, unique_name
from shared.records import render_record


def run_key(task: str, worker_id: Any, what: str) -> str:
    """The key of an event about one run (the same when a step is redone after a crash)."""
    return f"{task}/{worker_id}/{what}"


def emit(events_dir: Path, type: str, task: str | None = None, *, key: str | None = None,
         **details: Any) -> Path:
    """Publish one event; returns its path in ``new/``. Without ``key`` it is unique."""
    name = unique_name()
    program = os.environ.get("TAC8_PROGRAM", "tac8")
    meta: dict[str, Any] = {"type": type, "at": now_iso(), "program": program,
                            "key": key or f"{program}/{name}"}
    if task:
        meta["task"] = task
    meta.update({k: v for k, v in details.items() if v is not None})
    return publish(events_dir, render_record(meta), name=name)

