"""The metrics program: SD-card writes under load, and its cost when idle.

Goals (issue 6): metrics.json written at most once per ``min_write_interval`` (5 s: ≤ 12 a
minute) however many events arrive; idle, a small RSS and next to no CPU.

Each window lasts 60 s; ``TAC8_BENCH_METRICS_SECONDS`` shortens it for a quick run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from shared.config import CHECKOUT
from shared.health import read_metrics
from services.metrics import state_path
from tests.sandbox import Sandbox

SECONDS = float(os.environ.get("TAC8_BENCH_METRICS_SECONDS", "60"))
RATE = 100  # events per second
PACED_PRODUCER = """
import sys, time
from pathlib import Path
from shared.events import emit
events, rate, seconds = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
n = 0
while n < rate * seconds:
    emit(events, "worker_launched" if n % 2 else "task_added", task=f"gh-{n}")
    n += 1
    time.sleep(max(0.0, start + n / rate - time.monotonic()))
print(n)
"""


class _Replacements(FileSystemEventHandler):
    def __init__(self, *paths: Path):
        self.counts = {str(p): 0 for p in paths}

    def on_moved(self, event):
        if event.dest_path in self.counts:
            self.counts[event.dest_path] += 1


def _start(box: Sandbox) -> subprocess.Popen:
    env = {**os.environ, "TAC8_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "services.metrics", "--config", str(box.config_path)],
                            cwd=CHECKOUT, env=env)


def _settle(box: Sandbox) -> None:
    deadline = time.monotonic() + 30
    while read_metrics(box.cfg) is None and time.monotonic() < deadline:
        time.sleep(0.1)


def _under_load(box: Sandbox):
    cfg = box.cfg
    proc = _start(box)
    _settle(box)
    writes = _Replacements(cfg.paths.metrics, state_path(cfg))
    observer = Observer()
    observer.schedule(writes, str(cfg.paths.metrics.parent))
    observer.schedule(writes, str(state_path(cfg).parent))
    observer.start()
    try:
        started = time.monotonic()
        produced = int(subprocess.run([sys.executable, "-c", PACED_PRODUCER, str(cfg.events_dir), str(RATE),
                                       str(SECONDS)], cwd=CHECKOUT, check=True, capture_output=True,
                                      text=True).stdout)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = read_metrics(cfg)
            if data and sum(data["events"].values()) == produced:
                break
            time.sleep(0.1)
        lag = time.monotonic() - started - elapsed
    finally:
        observer.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    per_minute = 60 / elapsed
    counted = sum(read_metrics(cfg)["events"].values())
    interval = cfg.metrics.min_write_interval
    yield ("metrics", f"metrics.json writes/min at {produced / elapsed:.0f} events/s",
           f"{writes.counts[str(cfg.paths.metrics)] * per_minute:.1f}", f"≤ {60 / interval:.0f}")
    yield ("metrics", "state file writes/min at the same load",
           f"{writes.counts[str(state_path(cfg))] * per_minute:.1f}", f"≤ {60 / interval:.0f}")
    yield ("metrics", "events counted / produced", f"{counted} / {produced}", "all")
    yield ("metrics", "last event → metrics.json", f"{lag:.1f} s", f"≤ {interval:g} s + a fold")


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()  # counted in clock ticks (10 ms)
    return times.user + times.system


def _idle(box: Sandbox):
    proc = _start(box)
    _settle(box)
    time.sleep(2)  # past start-up
    before = _cpu_seconds(proc.pid)
    time.sleep(SECONDS)
    cpu = _cpu_seconds(proc.pid) - before
    rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    yield ("metrics", f"idle RSS after {SECONDS:g} s", f"{rss:.1f} MB", "≤ 50 MB")
    yield ("metrics", f"idle CPU over {SECONDS:g} s", f"{cpu * 1000:.0f} ms, ±10 ms ({cpu / SECONDS * 100:.2f}%)", "≤ 0.5%")


def run():
    with tempfile.TemporaryDirectory() as tmp:
        box = Sandbox(Path(tmp) / "tac8")
        yield from _under_load(box)
        yield from _idle(box)
