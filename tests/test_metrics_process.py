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
from tests.agents import wait_cycles, wait_for

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


def _started(sandbox, log: Path) -> subprocess.Popen:
    """The metrics program, once up: its heartbeat is written after its signal handlers are
    in place and before its first cycle."""
    heartbeat = sandbox.cfg.heartbeat("metrics")
    heartbeat.unlink(missing_ok=True)
    proc = _metrics(sandbox, log)
    wait_for(lambda: heartbeat.exists() or proc.poll() is not None, 15, what="metrics to start")
    return proc


def _counted(cfg, total: int):
    data = read_metrics(cfg)
    return data if data and sum(data["events"].values()) == total and not pending(cfg.events_dir) else None


class _Replacements(FileSystemEventHandler):
    """Counts the atomic replacements (renames onto a name) of one file, as its folder's
    watch reports them; ``settled`` gives the count once every earlier event has come in."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.markers: set[str] = set()
        self._observer = Observer()
        self._observer.schedule(self, str(path.parent))
        self._observer.start()

    def on_moved(self, event):
        if event.dest_path == str(self.path):
            self.count += 1
        elif os.path.basename(event.dest_path).startswith(".settled-"):
            self.markers.add(event.dest_path)

    def settled(self) -> int:
        """The count including every replacement made before this call: a marker renamed
        into the folder now is reported after them (a watch reports in order)."""
        marker = self.path.parent / f".settled-{len(self.markers)}"
        staged = marker.with_suffix(".tmp")
        staged.write_text("")
        staged.rename(marker)
        wait_for(lambda: str(marker) in self.markers, what="the watch to catch up")
        marker.unlink()
        return self.count

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join()


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)  # liveness only: it ends its cycle first


def test_a_burst_of_10000_events_is_counted_within_the_write_budget(sandbox, tmp_path):
    cfg = sandbox.cfg
    interval = cfg.metrics.min_write_interval
    assert interval == 5  # the default
    writes = _Replacements(cfg.paths.metrics)
    proc = _metrics(sandbox, tmp_path / "metrics.log")
    try:
        wait_for(lambda: writes.count == 1, 15, what="the first metrics.json")  # nothing folded
        assert read_metrics(cfg)["events"] == {}
        producers = [_producer(cfg, n * 5000, 5000) for n in range(2)]
        for p in producers:
            assert p.wait(timeout=90) == 0
        data = wait_for(lambda: _counted(cfg, 10_000), 30, what="all 10,000 events in metrics.json")
        assert data["events"] == _expected(10_000)
        assert data["workers_launched"] == 2000 and data["prs_created"] == 2000
        assert data["workers_completed"] == 2000 and data["cost_usd_total"] == 500.0
        assert len(data["history"]) == 100

        # the same event delivered again and again wakes the program each time: counted
        # once, it changes nothing after that, so nothing more is written
        emit(cfg.events_dir, "task_added", key="redelivered")
        wait_for(lambda: _counted(cfg, 10_001), 30, what="the first delivery counted")
        written = writes.settled()
        wait_cycles(cfg, "metrics", 2,
                    nudge=lambda: emit(cfg.events_dir, "task_added", key="redelivered"))
        assert writes.settled() == written
        assert sum(read_metrics(cfg)["events"].values()) == 10_001
        assert _stop(proc) == 0
        written = writes.settled()
    finally:
        writes.stop()
        proc.kill()
        proc.wait()
    # Writes are min_write_interval apart on the program's own clock, so between its start
    # and its last write (uptime_seconds there, truncated) fit at most uptime / interval + 1.
    uptime = read_metrics(cfg)["uptime_seconds"]
    assert 3 <= written < (uptime + 1) / interval + 1, (written, uptime)


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
        proc = _started(sandbox, log)
        time.sleep(rng.uniform(0.0, 0.5))  # a random instant of its work, not of its start
        proc.kill()
        proc.wait()
        kills += 1
    assert producer.wait() == 0
    proc = _started(sandbox, log)
    try:
        data = wait_for(lambda: _counted(cfg, total), 30, what=f"all {total} events (seed {seed})")
        assert data["events"] == _expected(total), f"seed {seed}"
        assert data["cost_usd_total"] == total / len(KINDS) * 0.25
        assert list(cfg.state_dir.glob(".*.tmp.*")) == [] and list(sandbox.root.glob(".*.tmp.*")) == []
        assert _stop(proc) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
