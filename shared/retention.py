"""Retention: a task's files leave the working folders once the task has left tasks.md.

While a task is in tasks.md its files stay where the programs use them: run record, prompt
and question in ``state/runs/``, PR marker in ``state/prs/``, feedback in ``state/feedback/``,
record lock in ``state/locks/``, agent and worker logs in ``logs/``. Once it is in no section (archived on the day rollover,
deleted by a person, removed by the fetcher), no worker of it is alive, its last run ended
more than ``runs.STALE_SAVE_WINDOW`` ago (a save may still bring its line back until then)
its outcome was announced and no feedback waits for it, the observer *retires* it: the files move into
``state/archive/tasks/<task>/`` (``runs/``, ``prs/``, ``logs/``), the run record last, so a crash midway leaves a record that
is retired again. A retired folder is deleted ``[paths] keep_days`` after it was made. So
every scan the programs make per cycle costs O(tasks in tasks.md), not O(history).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from shared import feedback, runs
from shared.clock import parse_iso
from shared.config import Config
from shared.locks import file_lock

DAY = 86400.0


def retired_dir(cfg: Config, task: str) -> Path:
    return cfg.archive_dir / "tasks" / task


def task_files(cfg: Config, task: str) -> list[Path]:
    """The files tac8 keeps about ``task`` outside its tree, the run record last."""
    logs = cfg.agent_log(task).parent
    return [runs.prompt_file(cfg, task), runs.question_file(cfg, task), cfg.pr_marker(task),
            runs.worker_log(cfg, task), *sorted(logs.glob(f"{task}.*.jsonl")),
            cfg.agent_log(task), cfg.feedback_file(task), cfg.run_record(task)]


def due(meta: dict[str, Any], now: float) -> bool:
    """Whether a run record of a task that is no longer in tasks.md may be retired: its run
    ended (or its launch failed) long enough ago, and an outcome was announced."""
    ended = parse_iso(meta.get("finished"))
    if ended is None or now - ended.timestamp() < runs.STALE_SAVE_WINDOW:
        return False
    return not meta.get("outcome") or "announced" in (meta.get("applied") or [])


def retire(cfg: Config, task: str) -> bool:
    """Move the task's files into its retired folder, under its record lock, unless a
    worker of it is alive. True if it was retired."""
    lock, feedback_lock = cfg.run_record_lock(task), feedback.lock_file(cfg, task)
    with file_lock(lock), file_lock(feedback_lock):
        if runs.worker_alive(cfg, task) or feedback.read_feedback(cfg, task).open_items():
            return False  # (feedback waiting: the fetcher brings the task back for it)
        folder = retired_dir(cfg, task)
        for path in task_files(cfg, task):
            if path.exists():  # kept as runs/…, prs/…, logs/…: a record and a marker share a name
                (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.move(path, folder / path.parent.name / path.name)  # a rename, unless
                # logs/ is on another filesystem
        os.utime(folder)  # its age counts from now (keep_days)
        lock.unlink(missing_ok=True)  # while held: a later taker locks a new file
        feedback_lock.unlink(missing_ok=True)
    return True


def prune(cfg: Config, keep_days: float, now: float | None = None) -> list[str]:
    """Delete the retired folders older than ``keep_days``; the tasks deleted."""
    now = time.time() if now is None else now
    gone = []
    try:
        folders = list((cfg.archive_dir / "tasks").iterdir())
    except FileNotFoundError:
        return gone
    for folder in folders:
        try:
            if now - folder.stat().st_mtime > keep_days * DAY:
                shutil.rmtree(folder)
                gone.append(folder.name)
        except FileNotFoundError:
            continue
    return gone
