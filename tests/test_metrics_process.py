"""The metrics program as a real process: bursts of events, the write budget, kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from shared.config import CHECKOUT
from shared.events import emit
from shared.fsio import pending
from shared.health import read_metrics

KINDS = ("worker_launched", "pr_created", "worktree_error", "task_added", "run_finished")
PRODUCER = """
import sys
from pathlib import Path
from shared.events import emit
events, start, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
kinds = sys.argv[4].split(",")
for n in range(start, start + count):
    kind = kinds[n % len(kinds)]
    extra = {"outcome": "pr", "cost_usd": 0.25, "tokens": 3} if kind == "run_finished" else {}
    emit(events, kind, task=f"gh-{n}", **extra)
"""


def _expected(total: int) -> dict[str, int]:
    return {kind: len(range(i, total, len(KINDS))) for i, kind in enumerate(KINDS)}


def _producer(cfg, start: int, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PRODUCER, str(cfg.events_dir), str(start), str(count),
                             ",".join(KINDS)], cwd=CHECKOUT)


def _metrics(sandbox, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TAC8_LOG_LEVEL": "WARNING"}
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "services.metrics", "--config", str(sandbox.config_path)],
                                cwd=CHECKOUT, env=env, stderr=err)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _counted(cfg, total: int):
    data = read_metrics(cfg)
    return data if data and sum(data["events"].values()) == total and not pending(cfg.events_dir) else None


class _Replacements(FileSystemEventHandler):
    """Counts atomic replacements of one file (a rename onto its name)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.count = 0

    def on_moved(self, event):
        if event.dest_path == self.path:
            self.count += 1


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def test_a_burst_of_10000_events_is_counted_in_a_handful_of_writes(sandbox, tmp_path):
    cfg = sandbox.cfg
    interval = cfg.metrics.min_write_interval
    assert interval == 5  # the default
    writes = _Replacements(cfg.paths.metrics)
    observer = Observer()
    observer.schedule(writes, str(cfg.paths.metrics.parent))
    observer.start()
    proc = _metrics(sandbox, tmp_path / "metrics.log")
    try:
        _wait_for(lambda: writes.count == 1, 15, "the first metrics.json")  # started: nothing folded
        assert read_metrics(cfg)["events"] == {}
        started = time.monotonic()
        producers = [_producer(cfg, n * 5000, 5000) for n in range(2)]
        for p in producers:
            assert p.wait(timeout=90) == 0
        data = _wait_for(lambda: _counted(cfg, 10_000), 30, "all 10,000 events in metrics.json")
        print(f"{writes.count - 1} writes in {time.monotonic() - started:.1f} s")
        elapsed = time.monotonic() - started
        burst_writes = writes.count - 1
        assert data["events"] == _expected(10_000)
        assert data["workers_launched"] == 2000 and data["prs_created"] == 2000
        assert data["workers_completed"] == 2000 and data["cost_usd_total"] == 500.0
        assert len(data["history"]) == 100
        # at most one write per interval, plus the one that may start a burst: a handful
        assert 1 <= burst_writes <= elapsed / interval + 1, (burst_writes, elapsed)
        assert burst_writes <= 8, (burst_writes, elapsed)
        # and none while nothing changes
        time.sleep(interval * 1.2)
        assert writes.count - 1 == burst_writes
        assert _stop(proc) == 0
    finally:
        observer.stop()
        proc.kill()
        proc.wait()


def test_metrics_killed_at_random_instants_during_a_burst_counts_every_event_once(sandbox, tmp_path):
    cfg = sandbox.write_config(metrics={"min_write_interval": 0})
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    total = 4000
    backlog = 1000  # already waiting when the program first starts: the first runs fold big batches
    for n in range(backlog):
        kind = KINDS[n % len(KINDS)]
        emit(cfg.events_dir, kind, task=f"gh-{n}",
             **({"outcome": "pr", "cost_usd": 0.25, "tokens": 3} if kind == "run_finished" else {}))
    producer = _producer(cfg, backlog, total - backlog)
    kills = 0
    log = tmp_path / "metrics.log"
    while producer.poll() is None or kills < 8:
        proc = _metrics(sandbox, log)
        time.sleep(rng.uniform(0.05, 0.8))
        proc.kill()
        proc.wait()
        kills += 1
    assert producer.wait() == 0
    launched = time.time()
    proc = _metrics(sandbox, log)
    try:
        # up (signal handlers in place) once it has touched its heartbeat
        _wait_for(lambda: cfg.heartbeat("metrics").stat().st_mtime >= launched, 15, "metrics to start")
        data = _wait_for(lambda: _counted(cfg, total), 30, f"all {total} events (seed {seed})")
        assert data["events"] == _expected(total), f"seed {seed}"
        assert data["cost_usd_total"] == total / len(KINDS) * 0.25
        assert list(cfg.state_dir.glob(".*.tmp.*")) == [] and list(sandbox.root.glob(".*.tmp.*")) == []
        assert _stop(proc) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
