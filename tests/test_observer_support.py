"""Helpers for the observer's tests and benchmark: run ``python -m services.observer`` (or
another service) as a real process, and launch real workers (``python -m services.worker``) the way the launcher
does (liveness lock taken first and handed over, fresh run record, line moved to Active).
No tests here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from shared import outbox as queued, runs
from shared.config import CHECKOUT, Config
from shared.clock import now_iso
from shared.fsio import pending
from shared.locks import hold
from shared.records import read_record
from shared.clock import stamp
from shared.tasks import ACTIVE, PENDING, edit_tasks, make_marker, read_board
from shared.worktree import ensure_worktree
from tests.agents import proc_signals, wait_for


class ServiceProcess:
    """``python -m services.<name>`` for one sandbox; its stderr goes to ``log``."""

    def __init__(self, cfg: Config, log: Path, name: str = "observer"):
        self.cfg = cfg
        self.log = log
        self.name = name
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        """Start it and return once it is up: its heartbeat is written after it holds its
        lock and handles SIGTERM, before its first cycle."""
        heartbeat = self.cfg.heartbeat(self.name)
        heartbeat.unlink(missing_ok=True)  # a previous instance's
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}", "--config", str(self.cfg.file)],
                cwd=CHECKOUT, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        wait_for(lambda: heartbeat.exists() or self.proc.poll() is not None,
                 what=f"the {self.name} to start")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM; its exit status (``timeout`` is a liveness bound: it ends its cycle first)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def open_queued_prs(cfg: Config) -> None:
    """What the fetcher does with a pushed branch's queued PR: open it (or find it open) and
    write the marker. Comments stay queued, for the test to read."""
    from services.fetcher import Fetcher
    from shared.github import GitHub

    fetcher = Fetcher(cfg, GitHub.from_config(cfg))
    for item in queued.waiting(cfg):
        if queued.read_item(item).kind == queued.OPEN_PR:
            fetcher.send_item(queued.claim(cfg, item), maybe_sent=False)


class LaunchedWorker:
    def __init__(self, cfg: Config, task: str, worker_id: str, proc: subprocess.Popen):
        self.cfg, self.task, self.worker_id, self.proc = cfg, task, worker_id, proc

    def wait(self, timeout: float = 30.0) -> int:
        """The worker's exit status, once it has ended and (with GitHub) the fetcher's part,
        its PR, is done."""
        status = self.proc.wait(timeout)
        if self.cfg.github.repo:
            open_queued_prs(self.cfg)
        return status

    def agent(self, ignoring: bool = False) -> psutil.Process | None:
        """The agent, once its signal handling is in place: SIGINT caught (Python is up)
        or, with ``ignoring``, SIGINT and SIGTERM ignored (a stubborn agent)."""
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        wanted = ({signal.SIGINT, signal.SIGTERM}, "SigIgn") if ignoring \
            else ({signal.SIGINT}, "SigCgt")
        for kid in kids:
            try:
                if "fake_agent.py" in " ".join(kid.cmdline()) and \
                        wanted[0] <= proc_signals(kid.pid, wanted[1]):
                    return kid
            except (psutil.NoSuchProcess, FileNotFoundError):
                continue
        return None


def add_task(cfg: Config, title: str) -> str:
    """A new Pending task typed by a person; its id."""
    def change(board):
        board.add(title)
        board.assign_ids()
        return board.tasks(PENDING)[-1].id
    return edit_tasks(cfg, change)


def launch(cfg: Config, task: str, *, attempt: int = 1, log: Path | None = None) -> LaunchedWorker:
    """Start a real worker for ``task`` as the launcher does, and move its line to Active."""
    lock = hold(cfg.liveness_lock(task))
    try:
        tree = ensure_worktree(cfg, task, lock)
        worker_id = runs.new_worker_id()
        title = read_board(cfg.tasks_file).get(task).title
        runs.prompt_file(cfg, task).unlink(missing_ok=True)
        runs.start_run(cfg, task, {
            "task": task, "worker_id": worker_id, "attempt": attempt, "started": now_iso(),
            "branch": cfg.branch(task), "worktree": str(tree), "title": title,
        })
        with open(log or os.devnull, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.worker", task, "--config", str(cfg.file),
                 "--lock-fd", str(lock.fileno())],
                cwd=CHECKOUT, pass_fds=[lock.fileno()], start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        runs.update_run(cfg, task, lambda rec: rec.meta.update(pid=proc.pid))
    finally:
        lock.release()  # the worker holds it now (same open file description)

    def to_active(board):
        found = board.find(task)
        assert found is not None, f"{task} is not in tasks.md"
        board.move(found[1], ACTIVE, marker=make_marker(ACTIVE, worker_id), details=[
            ("Started", f"{stamp()} · attempt {attempt}/{cfg.launcher.max_attempts} · "
                        f"trees/{task} · {cfg.branch(task)}")])
    edit_tasks(cfg, to_active)
    return LaunchedWorker(cfg, task, worker_id, proc)


def section_of(cfg: Config, task: str) -> str | None:
    found = read_board(cfg.tasks_file).find(task)
    return found[0] if found else None


def line_of(cfg: Config, task: str):
    found = read_board(cfg.tasks_file).find(task)
    return found[1] if found else None


def outbox(cfg: Config) -> list[tuple[dict[str, Any], str]]:
    """Queued comments: (frontmatter, body), oldest first."""
    items = []
    for path in pending(cfg.outbox_dir):
        record = read_record(path)
        if record.meta.get("kind") == queued.ISSUE_COMMENT:
            items.append((record.meta, record.body))
    return items


def events(cfg: Config, kind: str | None = None) -> list[dict[str, Any]]:
    found = [read_record(p).meta for p in pending(cfg.events_dir)]
    return [e for e in found if kind is None or e["type"] == kind]


def applied(cfg: Config, task: str) -> list[str]:
    record = runs.read_run(cfg, task)
    return list((record.meta.get("applied") or []) if record else [])


def settled(cfg: Config, task: str, *steps: str) -> bool:
    """``steps`` are in the run's ``applied`` and its line has left Active (the observer
    moves it after announcing)."""
    return set(steps) <= set(applied(cfg, task)) and section_of(cfg, task) != ACTIVE
