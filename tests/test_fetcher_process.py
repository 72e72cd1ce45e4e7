"""The fetcher as a real process: signals, crashes, restarts, idling (real gh, fake GitHub)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shared import tasks
from shared.fsio import pending
from shared.outbox import queue_comment
from shared.program import read_cycles

CHECKOUT = Path(__file__).resolve().parent.parent


def start(cfg) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.fetcher", "--config", str(cfg.file)],
        cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(proc: subprocess.Popen, signals: int = 1) -> str:
    """Send SIGTERM ``signals`` times; returns the program's output once it has exited."""
    for n in range(signals):
        if n:
            time.sleep(0.5)  # two signals at once would be handled as one
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return out


def gh_children(proc: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "gh"]


@pytest.fixture
def cfg(sandbox, fake_github):
    return sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.2})


def test_a_first_sigterm_is_warm_the_call_in_flight_completes(cfg, fake_github):
    fake_github.add_issue("from the process")
    proc = start(cfg)
    try:
        wait_for(lambda: tasks.read_board(cfg.tasks_file).get("gh-1") is not None,
                 what="the issue to reach tasks.md")
        assert cfg.heartbeat("fetcher").exists()
        fake_github.slow_next(1, seconds=2)  # SIGTERM while a gh call hangs
        fake_github.reset_log()
        wait_for(lambda: fake_github.count() >= 1, what="the next poll")
        gh = gh_children(proc)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "fetcher INFO stopped\n" in out and "cycle failed" not in out
    assert gh and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in gh)
    assert "github_api_error" not in "".join(p.read_text() for p in pending(cfg.events_dir))


def test_a_second_sigterm_is_cold_and_kills_the_call_in_flight(cfg, fake_github):
    fake_github.add_issue("from the process")
    proc = start(cfg)
    try:
        wait_for(lambda: tasks.read_board(cfg.tasks_file).get("gh-1") is not None,
                 what="the issue to reach tasks.md")
        fake_github.slow_next(1, seconds=60)
        fake_github.reset_log()
        wait_for(lambda: fake_github.count() >= 1 and gh_children(proc), what="a hanging call")
        gh = gh_children(proc)
    finally:
        out = stop(proc, signals=2)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped (cold)" in out
    psutil.wait_procs(gh, timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in gh)


def test_killed_right_after_posting_a_comment_posts_it_once(cfg, fake_github):
    fake_github.add_issue("talk to me")
    queue_comment(cfg, 1, "gh-1", "gh-1/r1/blocked", "I have a question")
    proc = start(cfg)

    def kill_on_post(entry):
        if entry.method == "POST" and entry.path.endswith("/comments"):
            os.kill(proc.pid, signal.SIGKILL)  # the comment exists; the fetcher never hears
            proc.wait()
    fake_github.on_request = kill_on_post
    try:
        wait_for(lambda: proc.poll() is not None, what="the fetcher to be killed")
    finally:
        fake_github.on_request = None
    assert proc.returncode == -signal.SIGKILL
    assert len(fake_github.issue_comments(1)) == 1
    assert list((cfg.outbox_dir / "cur").iterdir())  # claimed, not known to be sent

    again = start(cfg)
    try:
        wait_for(lambda: not list((cfg.outbox_dir / "cur").iterdir())
                 and not pending(cfg.outbox_dir), what="the outbox to drain")
        time.sleep(0.5)  # a few more polls: nothing may be posted again
    finally:
        stop(again)
    assert len(fake_github.issue_comments(1)) == 1
    assert fake_github.count("POST") == 1
    assert fake_github.count("GET", "/repos/octo/demo/issues/1/comments") == 1


def test_killed_at_any_instant_loses_and_duplicates_nothing(cfg, fake_github):
    for n in range(30):
        fake_github.add_issue(f"issue {n}", labels=["agent", "priority:P1"])
    for n in range(5):
        queue_comment(cfg, 1, "gh-1", f"key-{n}", f"comment {n}")
    for delay in (0.05, 0.15, 0.3, 0.45, 0.6):
        proc = start(cfg)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    proc = start(cfg)
    try:
        wait_for(lambda: len(tasks.read_board(cfg.tasks_file).tasks(tasks.PENDING)) == 30
                 and not pending(cfg.outbox_dir)
                 and not list((cfg.outbox_dir / "cur").glob("*")), what="everything done")
    finally:
        stop(proc)
    bodies = sorted(c["body"].split("\n")[0] for c in fake_github.issue_comments(1))
    assert bodies == [f"comment {n}" for n in range(5)]
    ids = [t.id for t in tasks.read_board(cfg.tasks_file).tasks()]
    assert sorted(ids) == sorted(f"gh-{n}" for n in range(1, 31)) and len(ids) == 30


def test_idles_with_no_repository(sandbox, fake_github):
    fake_github.add_issue("not fetched")
    cfg = sandbox.write_config(github={"repo": "", "poll_interval": 0.1})
    proc = start(cfg)
    try:
        wait_for(lambda: cfg.heartbeat("fetcher").exists(), what="a heartbeat")
        cycles = read_cycles(cfg.heartbeat("fetcher"))
        for n in range(3):  # each queued comment wakes the loop: three cycles, no poll
            queue_comment(cfg, 1, "gh-1", f"k{n}", "hello")
            wait_for(lambda: read_cycles(cfg.heartbeat("fetcher")) > cycles + n,
                     what=f"cycle {n + 1} after the first")
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert fake_github.count() == 0


def test_a_second_instance_refuses_to_run(cfg, fake_github):
    first = start(cfg)
    try:
        wait_for(lambda: cfg.heartbeat("fetcher").exists(), what="the first instance")
        second = start(cfg)
        out, _ = second.communicate(timeout=10)
        assert second.returncode == 1 and "another instance" in out
    finally:
        stop(first)
