"""Observer latency (issue 5), with the real observer process, real workers and worktrees:

* ``touch STOP`` → the agent receives its first stop signal (observer → SIGTERM to the
  worker → SIGINT to the agent's group); the agent notes ``CLOCK_MONOTONIC`` in its handler;
* the PR marker's creation (by the worker, after its push) → tasks.md shows the task in
  Completed Today; both polled every 0.5 ms on ``CLOCK_MONOTONIC``;

each as median and p99 over ``TRIALS`` trials, one fresh task per trial, each trial started
once the observer has finished with the previous one. Also SIGTERM to an idle observer → its
exit (``EXIT_TRIALS`` starts), the observer's RSS, and the cost of one rescan with 300
finished runs and a 300-line tasks.md (in process).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator
from unittest import mock

import psutil

from services.observer import TaskObserver
from shared.program import Program, read_cycles
from shared.records import render_record, write_record
from tests.agents import FAKE_AGENT, TEMPLATE_BODY, wait_for
from tests.sandbox import EMPTY_QUEUE, GIT_IDENTITY, Sandbox
from tests.test_observer_support import ServiceProcess, add_task, launch, settled

TRIALS = 60
EXIT_TRIALS = 10  # each one starts an observer
POLL = 0.0005  # seconds

# Notes when it gets its first SIGINT or SIGTERM, then exits (the worker then ends "stopped").
SIGNAL_AGENT = '''
import os, signal, sys, time
marks, name = sys.argv[1], os.path.basename(os.getcwd())
def first(signum, frame):
    at = time.monotonic_ns()
    with open(os.path.join(marks, name + ".signal"), "w") as out:
        out.write(str(at))
    os._exit(0)
signal.signal(signal.SIGINT, first)
signal.signal(signal.SIGTERM, first)
sys.stdin.read()
open(os.path.join(marks, name + ".ready"), "w").close()
while True:
    time.sleep(3600)
'''


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f} ms"


def _rows(name: str, values: list[float], goal: str) -> list[tuple[str, str, str, str]]:
    return [("observer", f"{name}: median of {len(values)}", f"{statistics.median(values):.1f} ms", ""),
            ("observer", f"{name}: p99 of {len(values)}", _ms(values, 0.99), goal)]


def _use_agent(box: Sandbox, command: list[str], visible: tuple[str, ...] = ()):
    """The agent ``command``; ``visible``: folders it writes to, bound into its sandbox."""
    template = box.conf_dir / "worker_template.md"
    template.write_text(render_record({"command": command}, TEMPLATE_BODY))
    return box.write_config(worker={"template": str(template), "sandbox_binds": list(visible)})


@contextmanager
def _sandbox() -> Iterator[tuple[Sandbox, Path]]:
    saved = {k: os.environ.get(k) for k in (*GIT_IDENTITY, "TAC8_CONFIG")}
    os.environ.update(GIT_IDENTITY)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-observer-") as tmp:
            box = Sandbox(Path(tmp) / "tac8")
            os.environ["TAC8_CONFIG"] = str(box.config_path)
            yield box, Path(tmp)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stop_latencies(box: Sandbox, tmp: Path) -> tuple[list[float], float]:
    """The latencies, and the observer's RSS (MB) after the trials."""
    marks = tmp / "marks"
    marks.mkdir()
    agent = tmp / "signal_agent.py"
    agent.write_text(SIGNAL_AGENT)
    cfg = _use_agent(box, [sys.executable, str(agent), str(marks)], visible=(str(marks),))
    observer = ServiceProcess(cfg, tmp / "observer-stop.log").start()
    latencies = []
    try:
        for n in range(TRIALS):
            task = add_task(cfg, f"stop trial {n}")
            worker = launch(cfg, task)
            wait_for(lambda: (marks / f"{task}.ready").exists(), what="the agent")
            touched = time.monotonic_ns()
            (cfg.tree(task) / "STOP").touch()
            signalled = wait_for(lambda: _read(marks / f"{task}.signal"), interval=POLL,
                                 what="the stop signal")
            latencies.append((int(signalled) - touched) / 1e6)
            worker.wait()
            wait_for(lambda: settled(cfg, task, "announced"), what="Stopped applied")
        rss = psutil.Process(observer.proc.pid).memory_info().rss / 2**20
    finally:
        observer.stop()
    return latencies, rss


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


def marker_latencies(box: Sandbox, tmp: Path) -> list[float]:
    cfg = _use_agent(box, [sys.executable, str(FAKE_AGENT), "commit"])
    observer = ServiceProcess(cfg, tmp / "observer-marker.log").start()
    tasks_md = cfg.tasks_file
    latencies = []
    try:
        for n in range(TRIALS):
            task = add_task(cfg, f"marker trial {n}")
            worker = launch(cfg, task)
            done_line = f"] {task}: marker trial {n}"
            created = None
            while True:
                now = time.monotonic_ns()
                if created is None and cfg.pr_marker(task).exists():
                    created = now
                if created is not None and any(line.startswith("[✅") and done_line in line
                                               for line in tasks_md.read_text().splitlines()):
                    latencies.append((now - created) / 1e6)
                    break
                if worker.proc.poll() is not None and created is None:
                    raise AssertionError(f"{task}: the worker ended without a PR marker")
                time.sleep(POLL)
            worker.wait()
            wait_for(lambda: settled(cfg, task, "announced", "cleaned"), what="cleanup")
    finally:
        observer.stop()
    return latencies


def exit_latencies(box: Sandbox, tmp: Path) -> list[float]:
    """SIGTERM to an idle observer (past its first cycle, its watches in place) → its exit,
    in ms. That the signal ends the wait at once is tests/test_program.py's; this is what the
    warm shutdown costs."""
    latencies = []
    # a heartbeat after every cycle, so the first one shows
    with mock.patch.dict(os.environ, TAC8_HEARTBEAT_EVERY="0"):
        for _ in range(EXIT_TRIALS):
            observer = ServiceProcess(box.cfg, tmp / "observer-exit.log").start()
            wait_for(lambda: read_cycles(box.cfg.heartbeat("observer")) >= 1,
                     what="a first cycle")
            began = time.monotonic_ns()
            observer.proc.send_signal(signal.SIGTERM)
            observer.proc.wait()  # blocking waitpid: no polling step in the figure
            latencies.append((time.monotonic_ns() - began) / 1e6)
    return latencies


def rescan_cost(box: Sandbox, runs_count: int = 300, cycles: int = 50) -> float:
    """Median ms of one rescan over ``runs_count`` settled runs (nothing to do: the common
    case on every wake-up)."""
    cfg = box.cfg
    now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    lines = [EMPTY_QUEUE]
    for n in range(1, runs_count + 1):
        task = f"t-{n}"
        lines.append(f"[✅ abcdef{n % 10}, w-{n:06x}] {task}: Finished task {n}\n"
                     f"- Completed: {now}\n- Pushed: auto/{task}\n")
        write_record(cfg.run_record(task), {
            "task": task, "worker_id": f"w-{n:06x}", "attempt": 1, "outcome": "pr",
            "applied": ["completed", "announced", "cleaned"]})
    cfg.tasks_file.write_text("".join(lines))
    prog = Program("observer-bench", cfg)
    try:
        observer = TaskObserver(prog)
        observer.cycle()  # warm: every record parsed once
        times = []
        for _ in range(cycles):
            began = time.perf_counter()
            observer.cycle()
            times.append((time.perf_counter() - began) * 1000)
    finally:
        prog.__exit__(None, None, None)  # stops its watchdog thread
    return statistics.median(times)


def run():
    with _sandbox() as (box, tmp):
        latencies, rss = stop_latencies(box, tmp)
        yield from _rows("touch STOP → agent's first stop signal", latencies, "≤ 100 ms")
        yield ("observer", f"RSS after {TRIALS} stop trials", f"{rss:.1f} MB", "")
    with _sandbox() as (box, tmp):
        yield from _rows("PR marker → tasks.md Completed", marker_latencies(box, tmp),
                         "≤ 500 ms")
    with _sandbox() as (box, tmp):
        yield from _rows("SIGTERM → idle observer exited", exit_latencies(box, tmp), "≤ 1000 ms")
    with _sandbox() as (box, _):
        yield ("observer", "one rescan, 300 finished runs, nothing to do",
               f"{rescan_cost(box):.2f} ms", "")
