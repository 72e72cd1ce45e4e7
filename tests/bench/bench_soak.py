"""An hour of steady work (issue 13): the real supervisord and its four programs
(``tests/e2e.py``), a labelled issue arriving every ``ARRIVAL`` s (``poll_interval`` the same),
each handled by the fast end-to-end agent with 2 workers. Once a task is completed its PR is
merged and its issue closed, as a person would, so the open list stays as short as a real
repository's.

Every ``SAMPLE`` s: the RSS, open fds and inotify watches of supervisord and of each program.
Reported at ``BASELINE`` minutes (start-up is over) and at the end, with the worst growth
after the baseline, the tasks completed, and the restarts supervisord made (a new pid).
Goal: flat. Watches and fds move with the work of the moment (the observer watches each
Active task's tree), so the highest sample after the baseline is shown beside them.

``TAC8_BENCH_SOAK_MINUTES`` sets the duration (default 60); progress goes to stderr. Only on
request (``ON_REQUEST``: ``make soak`` or ``python -m tests.bench soak``), not in ``make bench``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

from shared.config import MetricsSection
from shared.pause import read_pause
from tests.bench.footprint import Footprint, footprint
from tests.e2e import PROGRAMS, Installation, installed

ON_REQUEST = True
MINUTES = float(os.environ.get("TAC8_BENCH_SOAK_MINUTES", "60"))
ARRIVAL = 5.0  # seconds between issues
POLL = 5.0  # [github] poll_interval
SAMPLE = 30.0  # seconds between samples
BASELINE = min(5.0, MINUTES)  # minutes: the figures everything is compared with
DRAIN = 120.0  # seconds the last issues get to complete after the end
NAMES = ("supervisord", *PROGRAMS)


@dataclass
class Soak:
    inst: Installation
    added: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    completed_in_time: int = 0  # by the end, before the last issues' drain
    unfinished: dict[str, int] = field(default_factory=dict)  # after the drain: section → tasks
    paused: dict | None = None  # state/PAUSE at the end
    samples: list[tuple[float, dict[str, Footprint]]] = field(default_factory=list)  # (minute, …)
    pids: dict[str, set[int]] = field(default_factory=dict)  # every pid each process had

    def add_issue(self) -> None:
        self.added.append(self.inst.add_issue(f"Soak change {len(self.added) + 1}"))

    def follow_up(self) -> None:
        """Merge the PR and close the issue of each task completed since the last call."""
        fake = self.inst.fake
        for task in set(self.added) - set(self.completed):
            if self.inst.settled(task, "completed"):
                for pr in self.inst.pulls(task):
                    if pr["state"] == "open":
                        fake.merge_pr(pr["number"])
                fake.close_issue(int(task[3:]))
                self.completed.append(task)

    def sample(self, minute: float) -> None:
        pids = {"supervisord": self.inst.supervisord_pid(),
                **{name: pid for name, (_, pid) in self.inst.states().items() if name in PROGRAMS}}
        found = {}
        for name, pid in pids.items():
            try:
                found[name] = footprint(pid)
            except (psutil.NoSuchProcess, FileNotFoundError, TypeError):  # restarting: no pid
                continue
            self.pids.setdefault(name, set()).add(pid)
        self.samples.append((minute, found))
        print(f"  soak {minute:5.1f}/{MINUTES:g} min: {len(self.added)} issues, "
              f"{len(self.completed)} completed; RSS "
              + " · ".join(f"{name} {f.rss_mb:.1f}" for name, f in found.items()) + " MB",
              file=sys.stderr, flush=True)


def _soak(inst: Installation) -> Soak:
    soak = Soak(inst)
    started = time.monotonic()
    end = started + MINUTES * 60
    next_issue = next_sample = started
    while (now := time.monotonic()) < end:
        if now >= next_issue:
            soak.add_issue()
            next_issue += ARRIVAL
        if now >= next_sample:
            soak.sample((now - started) / 60)
            next_sample += SAMPLE
        soak.follow_up()
        time.sleep(max(0.0, min(next_issue, next_sample, end) - time.monotonic()))
    soak.sample(MINUTES)
    soak.completed_in_time = len(soak.completed)
    drained = time.monotonic() + DRAIN
    while len(soak.completed) < len(soak.added) and time.monotonic() < drained:
        soak.follow_up()
        time.sleep(1)
    for task in set(soak.added) - set(soak.completed):
        section = inst.where(task)[0] or "not in tasks.md"
        soak.unfinished[section] = soak.unfinished.get(section, 0) + 1
    soak.paused = read_pause(inst.cfg)
    if soak.unfinished or soak.paused:
        _show_problems(inst)
    return soak


def _show_problems(inst: Installation, most: int = 20) -> None:
    """The last warnings and errors of each program, on stderr: the installation goes with
    the run."""
    for name in PROGRAMS:
        lines = [line for line in (inst.root / "logs" / f"{name}.log").read_text(
            errors="replace").splitlines() if " WARNING " in line or " ERROR " in line]
        print(f"  {name}.log, its last {most} warnings and errors:", file=sys.stderr)
        for line in lines[-most:]:
            print(f"    {line}", file=sys.stderr)


def _rows(soak: Soak) -> Iterator[tuple]:
    base = next((found for minute, found in soak.samples if minute >= BASELINE - 0.01),
                soak.samples[0][1])
    last = soak.samples[-1][1]
    later = [(minute, found) for minute, found in soak.samples if minute >= BASELINE - 0.01]
    span = f"at {BASELINE:g} → {MINUTES:g} min"

    def peak(name: str, pick) -> tuple[float, float]:
        """The highest value after the baseline, and its minute."""
        return max((pick(found[name]), minute) for minute, found in later if name in found)

    yield ("soak", f"RSS {span} (MB)",
           " · ".join(f"{n} {base[n].rss_mb:.1f} → {last[n].rss_mb:.1f}" for n in NAMES), "flat")
    highest = {n: peak(n, lambda f: f.rss_mb) for n in NAMES}
    worst = max(NAMES, key=lambda n: highest[n][0] - base[n].rss_mb)
    growth = highest[worst][0] - base[worst].rss_mb
    yield ("soak", f"worst RSS growth after {BASELINE:g} min (highest sample − the "
                   f"{BASELINE:g}-min one, every {SAMPLE:g} s)",
           f"{worst} {growth:+.1f} MB ({growth / base[worst].rss_mb:+.0%}, at "
           f"{highest[worst][1]:.1f} min)", "flat")
    for label, pick in (("open fds", lambda f: f.fds), ("inotify watches", lambda f: f.watches)):
        yield ("soak", f"{label} {span} (highest after {BASELINE:g} min)",
               " · ".join(f"{n} {pick(base[n])} → {pick(last[n])} ({peak(n, pick)[0]})"
                          for n in NAMES), "flat")
    yield ("soak", f"tasks completed in {MINUTES:g} min: an issue every {ARRIVAL:g} s, "
                   f"poll_interval {POLL:g} s, 2 workers",
           f"{soak.completed_in_time} of {len(soak.added)} ({len(soak.completed)} after {DRAIN:g} s "
           "more" + "".join(f"; {n} {section}" for section, n in soak.unfinished.items())
           + (f"; launching paused: {soak.paused.get('reason')}" if soak.paused else "") + ")",
           "all")
    restarts = {n: len(pids) - 1 for n, pids in soak.pids.items() if len(pids) > 1}
    yield ("soak", "restarts by supervisord (a program's new pid)",
           ", ".join(f"{n} {k}" for n, k in restarts.items()) or "none", "none")


def run() -> Iterator[tuple]:
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, \
            installed(Path(tmp) / "tac8", github={"poll_interval": POLL},
                      launcher={"max_workers": 2},
                      metrics={"min_write_interval": MetricsSection().min_write_interval}) as inst:
        soak = _soak(inst)
    yield from _rows(soak)
