"""The fetcher as a real process: signals, crashes, restarts, idling (real gh, fake GitHub)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from shared import tasks
from shared.fsio import pending
from shared.outbox import queue_comment
from shared.program import read_cycles
from tests.agents import proc_signals, wait_cycles, wait_for

CHECKOUT = Path(__file__).resolve().parent.parent


def start(cfg) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.fetcher", "--config", str(cfg.file)],
        cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def started(cfg) -> subprocess.Popen:
    """The fetcher, once up: its heartbeat is written after its signal handlers are in place
    and before its first cycle."""
    cfg.heartbeat("fetcher").unlink(missing_ok=True)
    proc = start(cfg)
    wait_for(lambda: cfg.heartbeat("fetcher").exists() or proc.poll() is not None,
             what="the fetcher to start")
    return proc


def stop(proc: subprocess.Popen, *signals: int) -> str:
    """Send ``signals`` (SIGTERM by default); returns the program's output once it has
    exited. Two stop signals must be two different ones: the same signal sent twice in a
    row may arrive as one (a signal already pending is not queued again)."""
    for signum in signals or (signal.SIGTERM,):
        proc.send_signal(signum)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return out


@contextmanager
def answers_held(fake_github):
    """Hold every answer of the fake GitHub until the block ends (a call hangs as long as a
    test needs it to); yields an Event that is set once a call is being held."""
    held, released = threading.Event(), threading.Event()

    def hold(entry):
        held.set()
        released.wait(timeout=120)
    fake_github.on_request = hold
    try:
        yield held
    finally:
        fake_github.on_request = None
        released.set()


def running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gh_children(proc: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "gh"]


@pytest.fixture
def cfg(sandbox, fake_github):
    # a short timeout: an item a killed fetcher may have sent is looked for after 2 × 2 s
    return sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.2,
                                        "timeout": 2})


def started_with_an_issue(cfg, fake_github) -> subprocess.Popen:
    """A fetcher that has polled once: the issue it found is in tasks.md."""
    fake_github.add_issue("from the process")
    proc = start(cfg)
    try:
        wait_for(lambda: tasks.read_board(cfg.tasks_file).get("gh-1") is not None,
                 what="the issue to reach tasks.md")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_a_first_sigterm_is_warm_the_call_in_flight_completes(cfg, fake_github):
    proc = started_with_an_issue(cfg, fake_github)
    try:
        assert cfg.heartbeat("fetcher").exists()
        with answers_held(fake_github) as held:  # SIGTERM while a gh call hangs
            wait_for(held.is_set, what="the next poll")
            gh = wait_for(lambda: gh_children(proc), what="its gh call")
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: signal.SIGTERM not in proc_signals(proc.pid, "ShdPnd"),
                     what="the signal to reach the fetcher")
            assert all(running(p) for p in gh)  # the call is not cut short...
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out  # ...it completes, then the fetcher stops
    assert "fetcher INFO stopped\n" in out and "cycle failed" not in out
    assert not any(running(p) for p in gh)
    assert "github_api_error" not in "".join(p.read_text() for p in pending(cfg.events_dir))


def test_a_second_stop_signal_is_cold_and_kills_the_call_in_flight(cfg, fake_github):
    proc = started_with_an_issue(cfg, fake_github)
    try:
        with answers_held(fake_github) as held:  # held for longer than stop() waits
            wait_for(held.is_set, what="the next poll")
            gh = wait_for(lambda: gh_children(proc), what="its gh call")
            out = stop(proc, signal.SIGTERM, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT), out
    assert "stopped (cold)" in out
    psutil.wait_procs(gh, timeout=10)
    assert not any(running(p) for p in gh)


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
        wait_cycles(cfg, "fetcher", 2)  # and its polls after that: nothing is posted again
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
    for delay in (0.0, 0.05, 0.15, 0.3, 0.45):  # into its work, not into its start
        proc = started(cfg)
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
