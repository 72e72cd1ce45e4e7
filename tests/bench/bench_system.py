"""The whole system as installed: supervisord from the shipped ``conf/supervisord.conf``
running the four programs, against a fake GitHub that the real gh talks to (``tests/e2e.py``).

* Footprint: idle RSS and PSS (shared pages counted once) of supervisord + the four programs;
  a workload of ``WORKLOAD`` labelled issues with 2 workers at the shipped ``poll_interval``:
  peak RSS of tac8's processes (supervisord, programs, workers, their git and gh; agents
  excluded) sampled every 0.1 s, and tac8's CPU per task (all of it, reaped children
  included, less what the agents report using); then idle CPU over ``SECONDS`` after it.
* Issue → PR: from a labelled issue's appearance to the worker's PR marker, less the agent's
  own time. The wait for the next poll (uniform in [0, poll_interval]) dominates: the run
  at 0.5 s shows tac8's own part; the run at the shipped 30 s what a user sees.

``TAC8_BENCH_SYSTEM_SECONDS`` shortens the idle window (default 60), and
``TAC8_BENCH_SYSTEM_ISSUES`` sets how many issues go at the shipped interval (default 3).
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
WORKLOAD = 10  # issues in the footprint workload
AGENT_MARK = "e2e_agent.py"  # in an agent's command line (tests/e2e.py)


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


def _tac8_processes(root: psutil.Process) -> list[psutil.Process]:
    """supervisord and everything below it, except agents and what they started."""
    found, todo = [], [root]
    while todo:
        proc = todo.pop()
        try:
            if any(AGENT_MARK in part for part in proc.cmdline()):
                continue
            found.append(proc)
            todo.extend(proc.children())
        except psutil.NoSuchProcess:
            pass
    return found


def _memory_mb(procs: list[psutil.Process]) -> tuple[float, float, float]:
    """(RSS, PSS, RSS of gh and git) of ``procs`` in MB; PSS counts a page shared by n
    processes as 1/n (several gh or Python processes share their program's pages)."""
    rss = pss = tools = 0
    for proc in procs:
        try:
            rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
            name = proc.name()
        except (OSError, psutil.NoSuchProcess):
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
        if name in ("gh", "git"):
            tools += fields.get("Rss", 0)
    return rss / 1024, pss / 1024, tools / 1024


def _all_cpu(procs: dict[str, psutil.Process]) -> float:
    return sum(own + reaped for own, reaped in _cpu_seconds(procs).values())


def _footprint() -> Iterator[tuple]:
    with tempfile.TemporaryDirectory(prefix="tac8-bench-") as tmp, \
            installed(Path(tmp) / "tac8", github={"poll_interval": SHIPPED_POLL},
                      launcher={"max_workers": 2},
                      metrics={"min_write_interval": SHIPPED_WRITE_INTERVAL}) as inst:
        procs = _system(inst)
        time.sleep(SETTLE)
        memory = {name: proc.memory_full_info() for name, proc in procs.items()}
        rss = {name: m.rss / 2**20 for name, m in memory.items()}
        pss = sum(m.pss for m in memory.values()) / 2**20

        before = _all_cpu(procs)
        tasks = [inst.add_issue(f"Workload change {n}") for n in range(WORKLOAD)]
        peak = (0.0, 0.0, 0.0)  # at the moment of the highest PSS
        deadline = time.monotonic() + SHIPPED_POLL + 120
        while not all(inst.settled(t, "completed") for t in tasks):
            peak = max(peak, _memory_mb(_tac8_processes(procs["supervisord"])),
                       key=lambda m: m[1])
            if time.monotonic() > deadline:
                raise RuntimeError("the workload did not finish in time")
            time.sleep(0.1)
        wait_for(lambda: not inst.live_workers(), what="the last workers to be reaped")
        agents = sum(run.get("cpu", 0.0) for run in inst.agent_runs())
        per_task = (_all_cpu(procs) - before - agents) / WORKLOAD

        time.sleep(SETTLE)
        idle_before = _cpu_seconds(procs)
        time.sleep(SECONDS)
        idle_after = _cpu_seconds(procs)
    own = {name: idle_after[name][0] - idle_before[name][0] for name in procs}
    reaped = {name: idle_after[name][1] - idle_before[name][1] for name in procs}
    per_minute = 60 / SECONDS
    idle_cpu = (sum(own.values()) + sum(reaped.values())) * per_minute
    yield ("system", "idle RSS (PSS): supervisord + 4 programs, fresh start",
           f"{sum(rss.values()):.1f} MB (PSS {pss:.1f} MB)", "≤ 110 MB")
    yield ("system", "idle RSS by process",
           " · ".join(f"{name} {mb:.1f}" for name, mb in rss.items()) + " MB", "—")
    yield ("system", f"peak memory of tac8's processes, {WORKLOAD} issues, 2 workers "
                     "(agents excluded; sampled every 0.1 s)",
           f"PSS {peak[1]:.1f} MB (RSS {peak[0]:.1f} MB, of which gh and git {peak[2]:.1f})",
           "PSS ≤ 110 MB")
    yield ("system", "CPU of tac8's own processes per task (agents' own CPU subtracted)",
           f"{per_task:.2f} s", "report")
    yield ("system", f"idle CPU after the workload, poll_interval {SHIPPED_POLL:g} s "
                     f"(over {SECONDS:g} s)", f"{idle_cpu:.3f} s/min", "≤ 0.10 s/min")
    yield ("system", "idle CPU s/min by process (+ the children it ran: gh, git)",
           " · ".join(f"{name} {own[name] * per_minute:.3f}"
                      + (f" + {reaped[name] * per_minute:.3f}" if reaped[name] else "")
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
    yield from _footprint()
    quick = _issue_to_pr(QUICK_POLL, QUICK_ISSUES)
    yield _latency_row(QUICK_POLL, quick, " (tac8's own part)")
    shipped = _issue_to_pr(SHIPPED_POLL, SHIPPED_ISSUES)
    yield _latency_row(SHIPPED_POLL, shipped, " (shipped default)")
