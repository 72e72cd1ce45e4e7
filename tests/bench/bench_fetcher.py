"""Fetcher frugality and speed against the fake GitHub, with the real gh.

Rows: GitHub requests per poll with 0 / 10 / 100 / 300 active tasks (first poll, then an
unchanged poll, which must get only 304s), and the wall time of one poll with 300 open
labelled issues (3 pages): first (all new: snapshots and Pending lines), then unchanged.
Goal (issue 3): at most 2 requests plus pages whatever the number of active tasks.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from services.fetcher import Fetcher
from shared import tasks
from shared.github import GitHub
from tests.fakegithub import FakeGitHub
from tests.sandbox import Sandbox

OPEN_ISSUES = 150  # two pages of issues for the request-count rows


def _environment(fake: FakeGitHub) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, **fake.env, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}


def _sandbox(tmp: str, name: str, fake: FakeGitHub):
    box = Sandbox(Path(tmp) / name)
    return box.write_config(github={"repo": fake.repo, "poll_interval": 30})


def _activate(cfg, count: int) -> None:
    def change(board: tasks.Board) -> None:
        for n in range(1, count + 1):
            task = board.add(f"task {n}", task_id=f"t-{n}")
            board.move(task, tasks.ACTIVE, marker=tasks.make_marker(tasks.ACTIVE, f"w-{n:06x}"))
    tasks.edit_tasks(cfg, change)


def _requests_per_poll(tmp: str, active: int):
    with FakeGitHub() as fake:
        for n in range(OPEN_ISSUES):
            fake.add_issue(f"issue {n}", "body " * 50)
        for n in range(1, active + 1):
            fake.add_pr(f"auto/t-{n}")
        cfg = _sandbox(tmp, f"active-{active}", fake)
        _activate(cfg, active)
        fetcher = Fetcher(cfg, GitHub.from_config(cfg, env=_environment(fake)))
        fetcher.poll()
        first = fake.count()
        fake.reset_log()
        fetcher.poll()
        unchanged = fake.count()
        only_304 = all(r.status == 304 for r in fake.requests)
        pages = -(-OPEN_ISSUES // 100) + (max(1, -(-active // 100)) if active else 0)
        return first, unchanged, only_304, pages


def _poll_time(tmp: str) -> tuple[float, float]:
    with FakeGitHub() as fake:
        for n in range(300):
            fake.add_issue(f"issue {n}", "a realistic issue body\n" * 40)
        cfg = _sandbox(tmp, "time-300", fake)
        fetcher = Fetcher(cfg, GitHub.from_config(cfg, env=_environment(fake)))
        started = time.perf_counter()
        fetcher.poll()
        first = time.perf_counter() - started
        assert len(tasks.read_board(cfg.tasks_file).tasks(tasks.PENDING)) == 300
        started = time.perf_counter()
        fetcher.poll()
        return first, time.perf_counter() - started


def run():
    with tempfile.TemporaryDirectory() as tmp:
        for active in (0, 10, 100, 300):
            first, unchanged, only_304, pages = _requests_per_poll(tmp, active)
            yield ("fetcher", f"requests per poll, {active} active tasks, {OPEN_ISSUES} issues "
                              "(first / unchanged)",
                   f"{first} / {unchanged}{' (all 304)' if only_304 else ''}",
                   f"≤ {pages}: 2 lists' pages (the seed: 1 + {active})")
        first, unchanged = _poll_time(tmp)
        yield ("fetcher", "one poll, 300 open issues (3 pages), all new", f"{first:.2f} s",
               "< poll_interval (30 s)")
        yield ("fetcher", "one poll, 300 open issues (3 pages), unchanged", f"{unchanged:.2f} s",
               "< poll_interval (30 s)")
