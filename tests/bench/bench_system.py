"""The whole system as installed (issue 7): supervisord from the shipped
``conf/supervisord.conf`` running the four programs, against a fake GitHub that the real gh
talks to (``tests/e2e.py``).

* Idle footprint: the RSS (and PSS, which counts shared pages once) of supervisord and the
  four programs, and their CPU time over ``SECONDS`` of idling — the processes' own time
  plus that of the children they reaped (the fetcher's ``gh`` calls) — with the shipped
  ``poll_interval`` and ``min_write_interval``. Goals: ≤ 120 MB, ≤ 0.2 % of a core.
* Issue → PR: from the moment a labelled issue appears in the fake GitHub to the worker's
  PR marker (its file's mtime), minus the agent's own time (start to end of
  ``tests/e2e_agent.py``, as it records them). Issues go one at a time, arriving at evenly
  spread points of the fetcher's poll cycle, as issues filed at random times would. The wait
  for the next poll, uniform in [0, poll_interval] (median poll_interval / 2), dominates:
  the run with the shipped ``poll_interval`` (30 s) shows what a user sees; the run at
  0.5 s shows tac8's own part (fetch, tasks.md, launch, worktree, worker, push, the ``gh``
  PR calls, the marker). Each row splits the median into the wait and what follows.

``TAC8_BENCH_SYSTEM_SECONDS`` shortens the idle window (default 60), and
``TAC8_BENCH_SYSTEM_ISSUES`` sets how many issues go at the shipped interval (default 3;
each costs ``poll_interval`` on average).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

from shared.config import GithubSection, MetricsSection
from tests.agents import wait_for
from tests.e2e import PROGRAMS, Installation, installed

SECONDS = float(os.environ.get("TAC8_BENCH_SYSTEM_SECONDS", "60"))
SHIPPED_POLL = GithubSection().poll_interval
SHIPPED_WRITE_INTERVAL = MetricsSection().min_write_interval
QUICK_POLL = 0.5
QUICK_ISSUES = 7
SHIPPED_ISSUES = int(os.environ.get("TAC8_BENCH_SYSTEM_ISSUES", "3"))
SETTLE = 5.0  # seconds after RUNNING before the idle window: start-up work is over


def _system(inst: Installation) -> dict[str, psutil.Process]:
    """supervisord and the four programs (not their short-lived children), by name."""
    pids = inst.wait_running()
    return {"supervisord": psutil.Process(inst.supervisord_pid()),
            **{name: psutil.Process(pids[name]) for name in PROGRAMS}}


def _cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, tuple[float, float]]:
    """By name: (the process's own CPU seconds, those of the children it reaped)."""
    times = {name: proc.cpu_times() for name, proc in procs.items()}  # 10 ms clock ticks
    return {name: (t.user + t.system, t.children_user + t.children_system)
            for name, t in times.items()}


def _idle() -> Iterator[tuple]:
    with tempfile.TemporaryDirectory(prefix="tac8-bench-") as tmp, \
            installed(Path(tmp) / "tac8", github={"poll_interval": SHIPPED_POLL},
                      metrics={"min_write_interval": SHIPPED_WRITE_INTERVAL}) as inst:
        procs = _system(inst)
        time.sleep(SETTLE)
        before = _cpu_seconds(procs)
        time.sleep(SECONDS)
        after = _cpu_seconds(procs)
        memory = {name: proc.memory_full_info() for name, proc in procs.items()}
    own = {name: after[name][0] - before[name][0] for name in procs}
    reaped = {name: after[name][1] - before[name][1] for name in procs}
    cpu = sum(own.values()) + sum(reaped.values())
    rss = {name: m.rss / 2**20 for name, m in memory.items()}
    pss = sum(m.pss for m in memory.values()) / 2**20
    per_minute = 60 / SECONDS
    yield ("system", "idle RSS: supervisord + 4 programs",
           f"{sum(rss.values()):.1f} MB (PSS {pss:.1f} MB)", "≤ 120 MB")
    yield ("system", "idle RSS by process",
           " · ".join(f"{name} {mb:.1f}" for name, mb in rss.items()) + " MB", "—")
    yield ("system", f"idle CPU over {SECONDS:g} s (poll_interval {SHIPPED_POLL:g} s)",
           f"{cpu * per_minute:.2f} s/min ({cpu / SECONDS * 100:.3f}% of a core; "
           "10 ms ticks per process)", "≤ 0.2%")
    yield ("system", "idle CPU s/min by process (+ the children it ran: gh, git)",
           " · ".join(f"{name} {own[name] * per_minute:.2f}"
                      + (f" + {reaped[name] * per_minute:.2f}" if reaped[name] else "")
                      for name in procs), "—")


def _through(inst: Installation, title: str) -> tuple[float, float, float]:
    """One labelled issue, all the way to Completed. Returns the seconds from the issue to
    its PR marker (the file's mtime) less the agent's own time; of those, the seconds until
    the fetcher had it; and when it had it (the snapshot's mtime: the poll's moment)."""
    appeared = time.time()
    task = inst.add_issue(title)
    marker = inst.cfg.pr_marker(task)
    wait_for(marker.exists, timeout=inst.cfg.github.poll_interval + 60, interval=0.005,
             what=f"{task}'s PR marker")
    made = marker.stat().st_mtime
    fetched = inst.cfg.issue_snapshot(int(task[3:])).stat().st_mtime
    [run] = inst.agent_runs(task)
    inst.wait_settled([task], "completed")  # the next issue finds tac8 idle
    return made - appeared - (run["ended"] - run["started"]), fetched - appeared, fetched


def _issue_to_pr(poll: float, issues: int) -> list[tuple[float, float]]:
    """``issues`` issues, one at a time, arriving at evenly spread points of the poll cycle
    (a warm-up issue, not counted, shows when the fetcher polls)."""
    samples = []
    with tempfile.TemporaryDirectory(prefix="tac8-bench-") as tmp, \
            installed(Path(tmp) / "tac8", github={"poll_interval": poll}) as inst:
        polled = _through(inst, "Warm-up change")[2]
        for n in range(issues):
            arrival = polled + (n + 0.5) / issues * poll
            while arrival < time.time() + 0.01:
                arrival += poll
            time.sleep(arrival - time.time())
            total, waited, polled = _through(inst, f"Benchmark change {n}")
            samples.append((total, waited))
    return samples


def _latency_row(poll: float, samples: list[tuple[float, float]], note: str) -> tuple:
    totals = [total for total, _ in samples]
    after_fetch = statistics.median(total - fetch for total, fetch in samples)
    return ("system", f"issue → PR marker, agent time subtracted, poll_interval {poll:g} s{note}",
            f"median {statistics.median(totals):.2f} s (min {min(totals):.2f}, "
            f"max {max(totals):.2f}, n={len(totals)}): fetched after "
            f"{statistics.median(f for _, f in samples):.2f} s, marker {after_fetch:.2f} s later",
            "report: ≈ poll_interval / 2 + tac8's part")


def run():
    yield from _idle()
    quick = _issue_to_pr(QUICK_POLL, QUICK_ISSUES)
    yield _latency_row(QUICK_POLL, quick, " (tac8's own part)")
    shipped = _issue_to_pr(SHIPPED_POLL, SHIPPED_ISSUES)
    yield _latency_row(SHIPPED_POLL, shipped, " (shipped default)")
