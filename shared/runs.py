"""Run records, liveness and PR markers: what a worker did, and whether it still runs.

``state/runs/<task>.md`` is the run record (its fields, and who writes which: docs/PROTOCOL.md),
changed only through ``update_run`` under ``state/locks/run-<task>.lock``. A worker is alive
while ``state/live/<task>.lock`` is held (``worker_alive``, ``live_tasks``), never judged by a
PID. ``state/prs/<task>.md`` is the PR marker: the task's work is on a pull request (or, with no
GitHub repo configured, pushed); it completes only the run whose worker it names. Beside the
record: the rendered prompt (``prompt_file``), a blocked run's question (``question_file``: not
a run record, so record scans skip it) and the worker's own output (``worker_log``). Each run
has its own agent log: the latest is ``logs/<task>.jsonl``, earlier ones keep their worker's id.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from shared.clock import parse_iso
from shared.config import Config
from shared.locks import file_lock, is_held
from shared.records import Record, RecordError, read_record, update_record, write_record

PR, FAILED, BLOCKED, STOPPED = "pr", "failed", "blocked", "stopped"
OUTCOMES = (PR, FAILED, BLOCKED, STOPPED)
QUESTION_SUFFIX = ".question.md"  # state/runs/<task>.question.md: see question_file
RETRY = "retry"  # the observer's transition (in ``applied``) that sends a run's task back
EARLIER_LOGS_KEPT = 10  # agent logs of a task's earlier runs kept beside its latest
STALE_SAVE_WINDOW = 3600.0  # seconds after a run's end in which a save may still undo its move


def read_run(cfg: Config, task: str) -> Record | None:
    """The run record of ``task``, or None if there is none (or it is unreadable)."""
    try:
        return read_record(cfg.run_record(task))
    except (FileNotFoundError, RecordError):
        return None


def update_run(cfg: Config, task: str, change: Callable[[Record], Any]) -> Any:
    """Read-modify-write the run record under its lock; returns what ``change`` returns."""
    return update_record(cfg.run_record(task), cfg.run_record_lock(task), change)


def new_worker_id() -> str:
    """``w-`` and 6 hex digits: names one run of one task in tasks.md and the records."""
    return f"w-{os.urandom(3).hex()}"  # (secrets would load OpenSSL: 3.6 MB per program)


def start_run(cfg: Config, task: str, meta: dict[str, Any]) -> Record:
    """Replace the run record with a fresh one (a new attempt), under its lock; returns the
    record it replaced (empty if there was none), for ``restore_run``. The replaced run's
    agent log is set aside (``earlier_agent_log``)."""
    def fresh(record: Record) -> Record:
        previous = Record(dict(record.meta), record.body)
        _set_log_aside(cfg, task, record.meta.get("worker_id"))
        record.meta = dict(meta)
        record.body = ""
        return previous
    return update_run(cfg, task, fresh)


def earlier_agent_log(cfg: Config, task: str, worker_id: str) -> Path:
    """Where the agent log of an earlier run of ``task`` is kept: ``logs/<task>.<worker>.jsonl``
    (``logs/<task>.jsonl`` is the latest run's)."""
    return cfg.agent_log(task).with_name(f"{task}.{worker_id}.jsonl")


def _set_log_aside(cfg: Config, task: str, worker_id: str | None) -> None:
    """Keep the agent log of the run being replaced under its worker's name, and only the
    last ``EARLIER_LOGS_KEPT`` of them."""
    current = cfg.agent_log(task)
    if not current.exists():
        return
    os.replace(current, earlier_agent_log(cfg, task, worker_id or f"earlier-{time.time_ns()}"))
    earlier = sorted(current.parent.glob(f"{task}.*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
    for old in earlier[:-EARLIER_LOGS_KEPT]:
        old.unlink(missing_ok=True)


def restore_run(cfg: Config, task: str, worker_id: str, previous: Record) -> None:
    """Undo ``start_run`` for a launch that did not happen (its claim failed): put back the
    ``previous`` record, or remove the fresh one if there was none — only while the record
    is still ``worker_id``'s fresh one."""
    with file_lock(cfg.run_record_lock(task)):
        current = read_run(cfg, task)
        if current is None or current.meta.get("worker_id") != worker_id:
            return
        if previous.meta:
            write_record(cfg.run_record(task), previous.meta, previous.body)
            aside = earlier_agent_log(cfg, task, str(previous.meta.get("worker_id")))
            if aside.exists() and not cfg.agent_log(task).exists():
                os.replace(aside, cfg.agent_log(task))
        else:
            cfg.run_record(task).unlink(missing_ok=True)


def prompt_file(cfg: Config, task: str) -> Path:
    return cfg.runs_dir / f"{task}.prompt"


def question_file(cfg: Config, task: str) -> Path:
    """Where the launcher keeps the question of the task's last blocked run (``BLOCKED.md``,
    moved out of the tree when the task is launched again). Not a run record."""
    return cfg.runs_dir / f"{task}{QUESTION_SUFFIX}"


def worker_log(cfg: Config, task: str) -> Path:
    return cfg.paths.logs / f"{task}.worker.log"


def stale_copy(meta: dict[str, Any], line_worker: str | None) -> bool:
    """Whether a line that does not name this run's worker, outside Active, is a stale copy
    a save put there (an editor's buffer read before the run ended) rather than a person's
    requeue: the run ended lately and not with a retry. A person requeues a run's task by
    moving its line, which names the run's worker."""
    worker = meta.get("worker_id")
    ended = parse_iso(meta.get("finished"))
    if not worker or line_worker == worker or not (meta.get("outcome") or meta.get("applied")):
        return False
    if RETRY in (meta.get("applied") or []):
        return False
    return ended is not None and time.time() - ended.timestamp() < STALE_SAVE_WINDOW


def worker_alive(cfg: Config, task: str) -> bool:
    return is_held(cfg.liveness_lock(task))


def live_tasks(cfg: Config) -> set[str]:
    """Every task whose worker is alive (its liveness lock is held)."""
    try:
        entries = list(os.scandir(cfg.live_dir))
    except FileNotFoundError:
        return set()
    return {entry.name.removesuffix(".lock") for entry in entries
            if entry.name.endswith(".lock") and is_held(Path(entry.path))}


def read_pr_marker(cfg: Config, task: str) -> dict[str, Any] | None:
    try:
        return read_record(cfg.pr_marker(task)).meta
    except (FileNotFoundError, RecordError):
        return None


def write_pr_marker(cfg: Config, task: str, *, worker_id: str, url: str, number: int | None,
                    head: str, commit: str, found_by: str, error: str | None = None) -> None:
    """The task's PR marker, naming the run it completes (``worker_id``); with ``error``, the
    PR GitHub refused to open for the run (the run then failed)."""
    meta = {"task": task, "worker_id": worker_id, "url": url, "number": number, "head": head,
            "commit": commit, "found_by": found_by}
    if error:
        meta["error"] = error
    write_record(cfg.pr_marker(task), meta)
