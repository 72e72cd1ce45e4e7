"""History weighs nothing on a cycle (issue 13): the real launcher and observer processes,
each started on an installation with no history and on one holding what 5,000 archived
tasks leave after retention (``tests/bench/history.py``: 100 day files of 50 tasks, the
retired folders of the last 14 days' 700 tasks, 5,000 issue snapshots), cost the same CPU
per cycle and hold the same memory, inotify watches and open descriptors. Both have the
same tasks.md at rest (Completed Today, Failed and Blocked lines, nothing Pending), so no
agent runs; a check that the programs changed nothing guards the comparison.

A cycle is caused by touching tasks.md, which both programs watch; a program's CPU per
cycle is its CPU time over ``CYCLES`` cycles, counted on its heartbeat
(``TAC8_HEARTBEAT_EVERY=0``: one after every cycle), measured ``ROUNDS`` times alternating
the two installations (neither always first): median (min–max). Also the disk the history takes (state/ and
logs/), against what 5,000 tasks' files would take if they were never retired.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Iterator
from unittest import mock

import psutil

from shared.config import Config
from shared.program import read_cycles
from tests.agents import wait_cycles, wait_for
from tests.bench import history
from tests.bench.footprint import Footprint, footprint
from tests.sandbox import GIT_IDENTITY, Sandbox
from tests.test_observer_support import ServiceProcess

PROGRAMS = ("launcher", "observer")
CYCLES = 300  # a 10 ms CPU tick over 300 cycles: 0.03 ms resolution
ROUNDS = 5  # the machine's own noise moves a figure by ±10 %: the spread shows it
WARM_UP = 3  # cycles before measuring: start-up work (the first prune among it) is over
DAYS, PER_DAY, KEEP_DAYS = 100, 50, 14
ARCHIVED = DAYS * PER_DAY
FIRST_LISTED = ARCHIVED + 1  # the queue's first issue number
EQUAL = "equal within noise"
MB = 2**20


def _touch(cfg: Config) -> None:
    """Open tasks.md for writing and close it, changing nothing: the close after a write
    wakes both programs (the launcher listens for it, the observer for all but reads)."""
    with open(cfg.tasks_file, "ab"):
        pass


def _files_at_rest(cfg: Config) -> dict[Path, tuple[int, int]]:
    """(size, mtime) of tasks.md and of every run record, prompt, question and PR marker."""
    paths = [cfg.tasks_file, *cfg.runs_dir.iterdir(), *cfg.prs_dir.iterdir()]
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _measure(cfg: Config, log_dir: Path) -> dict[str, tuple[float, Footprint]]:
    """Per program: CPU ms per cycle over ``CYCLES`` cycles, and its footprint after them."""
    services = [ServiceProcess(cfg, log_dir / f"{name}.log", name) for name in PROGRAMS]
    try:
        for service in services:
            service.start()
        procs = {s.name: psutil.Process(s.proc.pid) for s in services}
        for name in PROGRAMS:
            wait_cycles(cfg, name, WARM_UP, nudge=lambda: _touch(cfg))
        cycles = {name: read_cycles(cfg.heartbeat(name)) for name in PROGRAMS}
        cpu = {name: _cpu_seconds(proc) for name, proc in procs.items()}
        for _ in range(CYCLES):
            goals = {name: read_cycles(cfg.heartbeat(name)) + 1 for name in PROGRAMS}
            _touch(cfg)
            wait_for(lambda: all(read_cycles(cfg.heartbeat(n)) >= goal for n, goal in goals.items()),
                     interval=0.005, what="a cycle of both programs")
        return {name: ((_cpu_seconds(proc) - cpu[name]) * 1000
                       / (read_cycles(cfg.heartbeat(name)) - cycles[name]),
                       footprint(proc.pid))
                for name, proc in procs.items()}
    finally:
        for service in services:
            if service.running():
                service.stop()


def _disk(folder: Path, directories: bool = True) -> int:
    """Bytes of disk ``folder`` takes, as du counts them (allocated blocks)."""
    total = folder.lstat().st_blocks * 512 if directories else 0
    for root, dirs, files in os.walk(folder):
        names = files + dirs if directories else files
        total += sum(os.lstat(os.path.join(root, name)).st_blocks * 512 for name in names)
    return total


def _spread(values: list[float], unit: str, digits: int) -> str:
    return (f"{statistics.median(values):.{digits}f} {unit} "
            f"({min(values):.{digits}f}–{max(values):.{digits}f})")


def _comparison(bare: list[dict], full: list[dict]) -> Iterator[tuple]:
    what = f"no history → {ARCHIVED:,} archived tasks"
    for name in PROGRAMS:
        def values(rounds: list[dict], pick) -> list[float]:
            return [pick(*found[name]) for found in rounds]

        yield ("history", f"{name}: CPU per cycle (tasks.md touched, {CYCLES} cycles × "
                          f"{ROUNDS} rounds), {what}",
               f"{_spread(values(bare, lambda ms, _: ms), 'ms', 2)} → "
               f"{_spread(values(full, lambda ms, _: ms), 'ms', 2)}", EQUAL)
        for label, pick, unit, digits in (("RSS", lambda _, f: f.rss_mb, " MB", 1),
                                          ("inotify watches", lambda _, f: f.watches, "", 0),
                                          ("open fds", lambda _, f: f.fds, "", 0)):
            yield ("history", f"{name}: {label}, {what}",
                   f"{statistics.median(values(bare, pick)):.{digits}f}{unit} → "
                   f"{statistics.median(values(full, pick)):.{digits}f}{unit}", EQUAL)


def _disk_rows(cfg: Config) -> Iterator[tuple]:
    retired = cfg.archive_dir / "tasks"
    kept = len(list(retired.iterdir()))
    total = _disk(cfg.state_dir) + _disk(cfg.agent_log("x").parent)
    days = sum(p.lstat().st_blocks * 512 for p in cfg.archive_dir.glob("*.md"))
    yield ("history", f"disk: state/ + logs/ with {ARCHIVED:,} archived tasks (retired folders "
                      f"of {kept} · {DAYS} day files · issue snapshots)",
           f"{total / MB:.1f} MB ({_disk(retired) / MB:.1f} · {days / MB:.1f} · "
           f"{_disk(cfg.issues_dir) / MB:.1f})", "report")
    per_task = _disk(retired, directories=False) / kept
    yield ("history", f"disk: {ARCHIVED:,} tasks' files never retired (a task's files "
                      f"{per_task / 1024:.0f} KB × {ARCHIVED:,})",
           f"{per_task * ARCHIVED / MB:.1f} MB", "report")


def run() -> Iterator[tuple]:
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp, \
            mock.patch.dict(os.environ, {"TAC8_HEARTBEAT_EVERY": "0", **GIT_IDENTITY}):
        installs = {}
        for label in ("bare", "full"):
            cfg = Sandbox(Path(tmp) / label).write_config(paths={"keep_days": KEEP_DAYS})
            history.write_queue(cfg, FIRST_LISTED)
            if label == "full":
                history.write_history(cfg, DAYS, PER_DAY, KEEP_DAYS)
            installs[label] = (cfg, _files_at_rest(cfg))
        found: dict[str, list[dict]] = {"bare": [], "full": []}
        for round in range(ROUNDS):
            for label in sorted(installs, reverse=bool(round % 2)):  # neither always first
                found[label].append(_measure(installs[label][0], Path(tmp) / label))
        for label, (cfg, before) in installs.items():
            after = _files_at_rest(cfg)
            changed = sorted(p.name for p in before.keys() | after.keys()
                             if before.get(p) != after.get(p))
            if changed:
                raise RuntimeError(f"the queue was not at rest: the programs changed {changed}")
        yield from _comparison(found["bare"], found["full"])
        yield from _disk_rows(installs["full"][0])
