"""Launcher and worker benchmark (issue 4): a queue of 200 tasks, ``max_workers`` 4, an agent
that commits after 0.5 s — how close the makespan gets to the ideal 200 × 0.5 / 4 = 25 s,
what a launch costs beyond ``git worktree add``, and the memory of the launcher, of one
idle worker runner and of the standby runner.

Everything is real: git worktrees in a sandbox repository, pushes to its bare origin, the
launcher and worker processes; the agent is ``tests/agents/sleep_commit.sh`` (a shell
script, so the agent's own start-up does not count against tac8).
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

from shared import runs, worktree
from shared.config import CHECKOUT
from shared.locks import hold
from tests.agents import FAKE_AGENT, SLEEP_COMMIT, runner_kind, use_command, wait_for
from tests.sandbox import GIT_IDENTITY, Sandbox

TASKS = 200
WORKERS = 4
AGENT_SECONDS = 0.5
IDEAL = TASKS * AGENT_SECONDS / WORKERS
_LAUNCHED = re.compile(r"launched (\S+) .* in ([\d.]+) ms, worktree ([\d.]+) ms")


def _queue(n: int) -> str:
    lines = "".join(f"[] t-{i}: benchmark task {i}\n" for i in range(1, n + 1))
    return f"# Tasks\n\n## Active\n\n## Pending\n{lines}\n## Completed Today\n"


def _rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / (1024 * 1024)


def _runners(launcher: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The launcher's worker children and its standby (not its git commands)."""
    workers, standbys = [], []
    for child in launcher.children():
        kind = runner_kind(child)
        if kind:
            (workers if kind == "worker" else standbys).append(child)
    return workers, standbys


def _makespan(root: Path) -> list[tuple]:
    box = Sandbox(root / "makespan")
    cfg = use_command(box, [str(SLEEP_COMMIT), str(AGENT_SECONDS), "--output-format",
                            "stream-json"], stall_timeout=60)
    cfg = box.write_config(launcher={"max_workers": WORKERS, "min_free_memory_mb": 0})
    (box.root / "tasks.md").write_text(_queue(TASKS))
    log_path = root / "launcher.log"
    began = time.monotonic()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "services.launcher", "--config", str(cfg.file)],
        cwd=CHECKOUT, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    watched = psutil.Process(launcher.pid)
    peak_alive = peak_runners = peak_rss = standby_rss = 0.0
    finished = 0
    try:
        while finished < TASKS:  # cheap probes: the bench must not steal the CPU it measures
            finished = len(os.listdir(cfg.prs_dir)) if cfg.prs_dir.exists() else 0
            workers, standbys = _runners(watched)
            peak_alive = max(peak_alive, len(workers))
            peak_runners = max(peak_runners, len(workers) + len(standbys))
            peak_rss = max(peak_rss, _rss_mb(watched))
            for standby in standbys:
                try:
                    standby_rss = max(standby_rss, _rss_mb(standby))
                except psutil.NoSuchProcess:
                    pass
            if time.monotonic() - began > IDEAL * 4:
                raise RuntimeError(f"only {finished}/{TASKS} finished after {IDEAL * 4:.0f} s")
            time.sleep(0.05)
        wait_for(lambda: not any(runs.worker_alive(cfg, f"t-{i}") for i in range(1, TASKS + 1)),
                 timeout=30, what="the last workers to exit")
        makespan = time.monotonic() - began
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=10)
    outcomes = [runs.read_run(cfg, f"t-{i}").meta.get("outcome") for i in range(1, TASKS + 1)]
    log = log_path.read_text()
    launches = [(float(total) - float(tree)) for _, total, tree in _LAUNCHED.findall(log)]
    return [
        ("launcher", f"makespan: {TASKS} tasks, agent commits after {AGENT_SECONDS} s, "
                     f"max_workers {WORKERS}",
         f"{makespan:.1f} s = {makespan / IDEAL:.2f}x the ideal {IDEAL:.0f} s "
         f"({outcomes.count('pr')}/{TASKS} pr)", "<= 1.15x"),
        ("launcher", "launch time per task beyond git worktree add (median / p95)",
         f"{statistics.median(launches):.1f} / {sorted(launches)[int(len(launches) * .95)]:.1f} ms"
         f" over {len(launches)} launches", "-"),
        ("launcher", "slot overhead per task (makespan x workers / tasks - agent time)",
         f"{(makespan * WORKERS / TASKS - AGENT_SECONDS) * 1000:.0f} ms", "-"),
        ("launcher", "most worker processes at once (sampled every 50 ms)", f"{peak_alive:.0f}",
         f"<= {WORKERS}"),
        ("launcher", "most worker runner processes at once, the idle standby included",
         f"{peak_runners:.0f}", f"<= {WORKERS + 1}"),
        ("launcher", "launches handed to the standby (the rest started a new process)",
         f"{log.count(', the standby)')}/{len(launches)}", "-"),
        ("launcher", "launcher RSS, peak during the run", f"{peak_rss:.1f} MB", "-"),
        ("launcher", "standby RSS, peak while it waits for a task", f"{standby_rss:.1f} MB", "-"),
    ]


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
        yield from _makespan(root)
        yield _idle_worker(root)
