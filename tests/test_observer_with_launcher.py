"""The observer and the real launcher together: the launcher honours the observer's
``- Retry:`` lines and the observer settles what the launcher's workers end with."""

from __future__ import annotations

import pytest

from shared import runs
from shared.tasks import COMPLETED, FAILED
from tests.agents import use_agent, wait_for
from tests.test_observer_support import (ServiceProcess, add_task, events, line_of,
                                         section_of, settled)


@pytest.fixture
def services(sandbox, tmp_path):
    """Start the launcher and the observer; stopped (SIGTERM, exit 0) at the end, after
    every worker has ended."""
    started: list[ServiceProcess] = []

    def start():
        for name in ("observer", "launcher"):
            started.append(ServiceProcess(sandbox.cfg, tmp_path / f"{name}.log", name).start())

    yield start
    cfg = sandbox.cfg
    wait_for(lambda: not any(runs.worker_alive(cfg, p.stem) for p in cfg.live_dir.glob("*.lock")),
             timeout=30, what="every worker to end")
    for proc in started:
        assert proc.stop() == 0, proc.log.read_text()


def test_failed_attempts_are_retried_by_the_launcher_until_the_task_fails(sandbox, services):
    use_agent(sandbox, "exit1")
    cfg = sandbox.write_config(launcher={"max_attempts": 3, "retry_backoff": 0.2})
    task = add_task(cfg, "Never works")
    services()

    wait_for(lambda: section_of(cfg, task) == FAILED, timeout=60, what="the final failure")
    wait_for(lambda: settled(cfg, task, "announced"), what="the failure announced")
    assert line_of(cfg, task).detail("Failed").endswith("· attempt 3/3")
    assert [e["attempt"] for e in events(cfg, "task_retry")] == [2, 3]
    assert [e["attempt"] for e in events(cfg, "task_failed")] == [3]
    assert [e["attempt"] for e in events(cfg, "worker_launched")] == [1, 2, 3]


def test_a_launched_task_that_pushes_is_completed_and_not_launched_again(sandbox, services):
    cfg = use_agent(sandbox, "commit")  # no GitHub configured: "pr" means the branch is pushed
    task = add_task(cfg, "Works first time")
    services()

    wait_for(lambda: settled(cfg, task, "completed", "announced", "cleaned"),
             timeout=60, what="completion and cleanup")
    line = line_of(cfg, task)
    assert section_of(cfg, task) == COMPLETED and line.detail("Pushed") == cfg.branch(task)
    assert not cfg.tree(task).exists()
    assert len(events(cfg, "worker_launched")) == 1
