"""Fetcher frugality and speed against the fake GitHub, with the real gh.

Rows: GitHub requests per poll with 0 / 10 / 100 / 300 active tasks (first poll, then an
unchanged poll, which must get only 304s), and the wall time of one poll with 300 open
labelled issues (3 pages): first (all new: snapshots and Pending lines), then unchanged.
Goal (issue 3): at most the listings' pages whatever the number of active tasks; each PR
found is followed, which costs 3 reads (reviews, check runs, status) on its first poll.
Then (issue 14) 300 tasks and 50 open tac8 PRs: an unchanged poll (only 304s, only the
listings' pages), one with a review on one PR, and one with a push to one PR.
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
from shared.runs import write_pr_marker
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
            fake.set_check_run(fake.add_pr(f"auto/t-{n}")["head"]["sha"], "tests")
        cfg = _sandbox(tmp, f"active-{active}", fake)
        _activate(cfg, active)
        fetcher = Fetcher(cfg, GitHub.from_config(cfg, env=_environment(fake)))
        fetcher.poll()
        first = fake.count()
        fake.reset_log()
        fetcher.poll()
        unchanged = fake.count()
        only_304 = all(r.status == 304 for r in fake.requests)
        pages = -(-OPEN_ISSUES // 100) + 1 + (max(1, -(-active // 100)) + 1 if active else 0)
        return first, unchanged, only_304, pages


def _conversation(tmp: str):
    """300 tasks (3 pages of issues), 50 of them Completed with an open PR of tac8's whose
    check passed: requests of an unchanged poll, then of a poll after one PR changed."""
    with FakeGitHub() as fake:
        for n in range(1, 301):
            fake.add_issue(f"issue {n}", "body " * 50)
        cfg = _sandbox(tmp, "conversation", fake)
        prs = {}
        for n in range(1, 51):
            pr = fake.add_pr(f"auto/gh-{n}")
            fake.set_check_run(pr["head"]["sha"], "tests")
            write_pr_marker(cfg, f"gh-{n}", worker_id=f"w-{n:06x}", url=pr["html_url"],
                            number=pr["number"], head=f"auto/gh-{n}", commit=pr["head"]["sha"],
                            found_by="fetcher")
            prs[n] = pr["number"]

        def board(b: tasks.Board) -> None:
            for n in range(1, 301):
                line = b.add(f"issue {n}", task_id=f"gh-{n}")
                if n <= 50:
                    b.move(line, tasks.COMPLETED, marker=tasks.make_marker(
                        tasks.COMPLETED, f"w-{n:06x}", "c0ffee1"))
        tasks.edit_tasks(cfg, board)
        gh = GitHub.from_config(cfg, env=_environment(fake))
        Fetcher(cfg, gh).poll()  # the first look at each PR: its reviews and checks
        listings = 3 + 1 + 1 + 1  # issues' pages, PRs', comments', review comments'

        def one_poll() -> tuple[int, bool]:
            fake.reset_log()
            Fetcher(cfg, gh).poll()  # a new fetcher each time: from its saved memory
            return fake.count(), all(r.status == 304 for r in fake.requests)

        unchanged, only_304 = one_poll()
        yield ("fetcher", "requests per poll, 300 tasks, 50 open tac8 PRs, unchanged",
               f"{unchanged}{' (all 304)' if only_304 else ''}",
               f"≤ {listings}: the listings' pages, all 304")
        fake.add_review(prs[7], "CHANGES_REQUESTED", "rename it", author="alice",
                        association="MEMBER")
        reviewed, _ = one_poll()
        yield ("fetcher", "… then a review requesting changes on one PR", str(reviewed),
               f"≤ {listings} + 2: its reviews, its line comments")
        fake.push_pr(prs[9])
        pushed, _ = one_poll()
        yield ("fetcher", "… then a push to one PR", str(pushed),
               f"≤ {listings} + 3: its reviews, check runs, status")


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
                   f"≤ {pages} + 3·{active} / ≤ {pages}: the lists' pages "
                   f"(the seed: 1 + {active})")
        yield from _conversation(tmp)
        first, unchanged = _poll_time(tmp)
        yield ("fetcher", "one poll, 300 open issues (3 pages), all new", f"{first:.2f} s",
               "< poll_interval (30 s)")
        yield ("fetcher", "one poll, 300 open issues (3 pages), unchanged", f"{unchanged:.2f} s",
               "< poll_interval (30 s)")
