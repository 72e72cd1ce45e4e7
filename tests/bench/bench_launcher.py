"""Launcher and worker benchmark: what tac8 itself adds to each launch, the agent excluded.

Real agents run for minutes, so a launch's own cost matters only as a share of that; this
measures it directly. One worker slot and a queue of ``TASKS`` tasks whose agent (a shell
script: ``tests/agents/sleep_commit.sh``, its start-up weighs nothing) notes the moments it
starts and ends. tac8's overhead per launch is the gap between one agent's end and the next
agent's start: the worker's commit, push and records, the launcher's wake-up, the worktree,
the prompt, the claim and the new worker's start-up. Everything is real: git worktrees in a
sandbox repository, pushes to its bare origin, the launcher and worker processes.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from shared import runs, sandbox, worktree
from shared.config import CHECKOUT
from shared.locks import hold
from tests.agents import FAKE_AGENT, SLEEP_COMMIT, use_command, wait_for
from tests.sandbox import GIT_IDENTITY, Sandbox

TASKS = 20
AGENT_SECONDS = 1.0
_LAUNCHED = re.compile(r"launched (\S+) .* in ([\d.]+) ms, worktree ([\d.]+) ms")


def _queue(n: int) -> str:
    lines = "".join(f"[] t-{i}: benchmark task {i}\n" for i in range(1, n + 1))
    return f"# Tasks\n\n## Active\n\n## Pending\n{lines}\n## Completed Today\n"


def _rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / (1024 * 1024)


def _p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * .95))]


def _overhead(root: Path) -> list[tuple]:
    box = Sandbox(root / "overhead")
    moments = root / "moments"
    moments.touch()  # the agent appends to it from inside its sandbox (bound as it exists)
    cfg = use_command(box, [str(SLEEP_COMMIT), str(AGENT_SECONDS), "--output-format",
                            "stream-json"], stall_timeout=60,
                      env={"SLEEP_COMMIT_MOMENTS": str(moments)})
    cfg = box.write_config(launcher={"max_workers": 1, "min_free_memory_mb": 0})
    (box.root / "tasks.md").write_text(_queue(TASKS))
    log_path = root / "launcher.log"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "services.launcher", "--config", str(cfg.file)],
        cwd=CHECKOUT, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    watched = psutil.Process(launcher.pid)
    peak_rss = 0.0
    try:
        deadline = time.monotonic() + TASKS * (AGENT_SECONDS + 10)
        while not all((r := runs.read_run(cfg, f"t-{i}")) and r.meta.get("outcome")
                      for i in range(1, TASKS + 1)):
            peak_rss = max(peak_rss, _rss_mb(watched))
            if time.monotonic() > deadline:
                raise RuntimeError("the queue did not finish in time")
            time.sleep(0.2)
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=10)
    outcomes = [runs.read_run(cfg, f"t-{i}").meta.get("outcome") for i in range(1, TASKS + 1)]
    spans = sorted(tuple(map(float, line.split())) for line in moments.read_text().splitlines())
    gaps = [(nxt[0] - prev[1]) * 1000 for prev, nxt in zip(spans, spans[1:])]
    launches = [(float(total) - float(tree))
                for _, total, tree in _LAUNCHED.findall(log_path.read_text())]
    return [
        ("launcher", f"tac8 overhead per launch: one agent's end to the next one's start "
                     f"(median / p95 of {len(gaps)}; {outcomes.count('pr')}/{TASKS} pr)",
         f"{statistics.median(gaps):.0f} / {_p95(gaps):.0f} ms",
         "<= 3000 ms (1 % of a 5-minute agent run)"),
        ("launcher", "of which the launch itself, beyond git worktree add (median / p95)",
         f"{statistics.median(launches):.1f} / {_p95(launches):.1f} ms", "-"),
        ("launcher", "launcher RSS, peak during the run", f"{peak_rss:.1f} MB", "-"),
    ]


def _sandbox_start(root: Path) -> tuple:
    """What the sandbox adds to an agent's start: ``sh -c :`` through the worker's bwrap
    command line, against the same command started directly (median / p95 of 40 each)."""
    box = Sandbox(root / "sandbox")
    cfg = box.cfg
    with hold(cfg.liveness_lock("t-1")) as lock:
        tree = worktree.ensure_worktree(cfg, "t-1", lock)
    command = ["/bin/sh", "-c", ":"]
    wrapped = sandbox.wrap(cfg, tree, worktree.admin_dir(tree), worktree.common_dir(cfg), command)

    def timed(argv: list[str]) -> list[float]:
        took = []
        for _ in range(40):
            began = time.monotonic()
            subprocess.run(argv, cwd=tree, check=True)
            took.append((time.monotonic() - began) * 1000)
        return took
    direct, boxed = timed(command), timed(wrapped)
    extra = [b - statistics.median(direct) for b in boxed]
    return ("launcher", "sandbox start-up per launch (bwrap around the agent, beyond a direct "
                        "start; median / p95 of 40)",
            f"{statistics.median(extra):.1f} / {_p95(extra):.1f} ms", "report")


def _worktree_add(root: Path) -> tuple:
    box = Sandbox(root / "trees")
    cfg = box.cfg
    took = []
    for i in range(20):
        with hold(cfg.liveness_lock(f"t-{i}")) as lock:
            began = time.monotonic()
            worktree.ensure_worktree(cfg, f"t-{i}", lock)
            took.append((time.monotonic() - began) * 1000)
    return ("launcher", "git worktree add (ensure_worktree, new tree; median of 20)",
            f"{statistics.median(took):.1f} ms", "-")


def _idle_worker(root: Path) -> tuple:
    box = Sandbox(root / "idle")
    cfg = use_command(box, [sys.executable, str(FAKE_AGENT), "hang", "--output-format",
                            "stream-json"], stall_timeout=60)
    with hold(cfg.liveness_lock("t-1")) as lock:
        worktree.ensure_worktree(cfg, "t-1", lock)
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.worker", "t-1", "--config", str(cfg.file)],
        cwd=CHECKOUT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = psutil.Process(worker.pid)
        wait_for(lambda: proc.children(), timeout=10, what="the agent to start")
        time.sleep(1.0)  # settle: the runner is now just waiting on the agent
        rss = _rss_mb(proc)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    return ("launcher", "worker runner RSS while its agent runs (runner only)",
            f"{rss:.1f} MB", "-")


def run():
    os.environ.update(GIT_IDENTITY)
    with tempfile.TemporaryDirectory(prefix="tac8-bench-launcher-") as tmp:
        root = Path(tmp)
        yield _worktree_add(root)
        yield from _overhead(root)
        yield _sandbox_start(root)
        yield _idle_worker(root)
