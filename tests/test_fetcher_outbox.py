"""The fetcher's outbox when GitHub refuses or fails a send (real gh, fake GitHub): a bad
item is retried a few times then set aside, and it never holds up other comments or polls."""

from __future__ import annotations

import signal
import time

import pytest

from services.fetcher import SEND_ATTEMPTS, Memory
from shared import tasks
from shared.fsio import pending
from shared import runs
from shared.clock import now_iso
from shared.outbox import queue_comment, queue_pr
from shared.records import write_record
from shared.tasks import ACTIVE, edit_tasks, make_marker
from shared.program import ColdShutdown
from tests.agents import wait_for
from tests.test_fetcher import events, make_fetcher

NO_WRITE = "Resource not accessible by personal access token"


@pytest.fixture
def cfg(sandbox, fake_github):
    return sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.05})


def bodies(fake_github, issue: int) -> list[str]:
    return [c["body"] for c in fake_github.issue_comments(issue)]


def test_a_refused_comment_is_retried_then_set_aside_while_others_and_polls_go_on(
        cfg, fake_github):
    fake_github.add_issue("refuses comments")
    fake_github.add_issue("takes comments")
    fake_github.fail_next(100, status=403, match="/issues/1/comments", method="POST",
                          message=NO_WRITE)
    refused = queue_comment(cfg, 1, "gh-1", "k-refused", "never lands")
    queue_comment(cfg, 2, "gh-2", "k-first", "lands")
    fetcher = make_fetcher(cfg)

    fetcher.step()

    assert bodies(fake_github, 2) == ["lands\n\n<!-- tac8:k-first -->\n"]  # went on past it
    assert fetcher.memory.attempts == {refused.name: 1}
    assert Memory(cfg.state_dir / "fetcher.md").attempts == {refused.name: 1}  # on disk
    queue_comment(cfg, 2, "gh-2", "k-second", "also lands")
    fetcher.outbox_retry_at = time.monotonic() + 60
    fetcher.step()
    assert len(bodies(fake_github, 2)) == 2  # a new item goes out while the failed one waits
    assert fake_github.count("POST", "/repos/octo/demo/issues/1/comments") == 1

    fetcher.outbox_retry_at = 0.0
    fake_github.add_issue("opened meanwhile")
    bad = cfg.outbox_dir / "bad" / refused.name
    deadline = time.monotonic() + 20
    while not bad.exists():
        assert time.monotonic() < deadline, "the refused item was never set aside"
        fetcher.step()
        time.sleep(0.01)

    assert fake_github.count("POST", "/repos/octo/demo/issues/1/comments") == SEND_ATTEMPTS
    assert bodies(fake_github, 1) == []
    assert tasks.read_board(cfg.tasks_file).get("gh-3") is not None  # polls went on
    assert fetcher.failures == 0 and fetcher.not_before == 0.0
    errors = events(cfg, "github_api_error")
    assert [(e["status"], e["during"]) for e in errors] == [(403, "outbox")]  # once, not 5×
    assert NO_WRITE in errors[0]["error"]
    [aside] = events(cfg, "comment_set_aside")
    assert (aside["item"], aside["issue"], aside["comment"]) == (refused.name, 1, "k-refused")
    assert f"{SEND_ATTEMPTS} sends failed" in aside["reason"] and NO_WRITE in aside["reason"]
    assert fetcher.memory.attempts == {}
    fetcher.step()  # a clean pass ends the streak
    assert fetcher.outbox_failures == 0 and not fetcher.outbox_blocked


@pytest.mark.parametrize("status", [502, 401])
def test_an_error_every_call_would_get_ends_the_pass_and_the_outbox_waits(
        cfg, fake_github, status):
    fake_github.add_issue("x")
    queue_comment(cfg, 1, "gh-1", "k-a", "first")
    second = queue_comment(cfg, 1, "gh-1", "k-b", "second")
    fake_github.fail_next(1, status=status, match="/comments", method="POST")
    fetcher = make_fetcher(cfg)

    fetcher.step()

    assert fake_github.count("POST") == 1
    assert pending(cfg.outbox_dir) == [second]  # not tried: it would fail the same way
    assert fetcher.outbox_blocked and fetcher.not_before == 0.0
    fetcher.outbox_retry_at = time.monotonic() + 60
    queue_comment(cfg, 1, "gh-1", "k-c", "third")
    fetcher.step()
    assert fake_github.count("POST") == 1  # the whole outbox waits, new items too

    fetcher.outbox_retry_at = 0.0
    fetcher.step()

    assert bodies(fake_github, 1) == [f"{text}\n\n<!-- tac8:{key} -->\n" for text, key in
                                      [("first", "k-a"), ("second", "k-b"), ("third", "k-c")]]
    assert [e["status"] for e in events(cfg, "github_api_error")] == [status]
    assert fetcher.outbox_failures == 0 and not fetcher.outbox_blocked
    assert fetcher.memory.attempts == {}


def test_failed_attempts_count_across_restarts(cfg, fake_github):
    fake_github.add_issue("x")
    item = queue_comment(cfg, 1, "gh-1", "k", "refused")
    fake_github.fail_next(SEND_ATTEMPTS, status=403, match="/comments", method="POST")
    for attempt in range(1, SEND_ATTEMPTS):
        make_fetcher(cfg).send_outbox()  # a fresh process each time
        assert Memory(cfg.state_dir / "fetcher.md").attempts == {item.name: attempt}
    assert (cfg.outbox_dir / "cur" / item.name).exists()

    make_fetcher(cfg).send_outbox()

    assert (cfg.outbox_dir / "bad" / item.name).exists()
    assert Memory(cfg.state_dir / "fetcher.md").attempts == {}


def test_a_send_cut_short_by_a_cold_shutdown_is_not_counted(cfg, fake_github):
    """A second SIGTERM raises ColdShutdown from the handler in the middle of a send: the
    item stays for the next start, and no failed attempt is recorded."""
    fake_github.add_issue("x")
    item = queue_comment(cfg, 1, "gh-1", "k", "hello")
    fake_github.slow_next(1, seconds=3, match="/comments")
    fetcher = make_fetcher(cfg)

    def cold(signum, frame):
        raise ColdShutdown(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGALRM, cold)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(ColdShutdown):
            fetcher.send_outbox()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert (cfg.outbox_dir / "cur" / item.name).exists()
    assert Memory(cfg.state_dir / "fetcher.md").attempts == {}
    assert events(cfg, "github_api_error") == []


def test_a_comment_whose_post_timed_out_is_looked_for_not_posted_again(sandbox, fake_github):
    """GitHub writes the comment after the client gave up (a POST slower than the timeout).
    The item may have been sent: tac8 waits twice the timeout for such a late write, then
    finds it among its own comments instead of posting it again. (Without the wait, the
    re-send came 0.1 s after the timeout and raced the late write: two comments.)"""
    cfg = sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.05,
                                       "timeout": 1})
    fake_github.add_issue("x")
    queue_comment(cfg, 1, "gh-1", "gh-1/w-1/completed", "PR ready")
    fake_github.slow_next(1, seconds=1.5, match="/comments")  # lands 0.5 s after the timeout
    fetcher = make_fetcher(cfg, settle=None)
    assert fetcher.settle == 2.0  # twice [github] timeout
    fetcher.send_outbox()  # the POST times out: maybe sent
    assert events(cfg, "comment_sent") == []

    def sent() -> bool:
        fetcher.outbox_retry_at = 0.0  # no backoff in this test: only the settling counts
        fetcher.send_outbox()
        return not outbox_items(cfg)
    wait_for(sent, timeout=60, interval=0.05, what="the comment item to be done")
    assert len(fake_github.issue_comments(1)) == 1 and fake_github.count("POST") == 1
    assert [e["comment"] for e in events(cfg, "comment_sent")] == ["gh-1/w-1/completed"]


def outbox_items(cfg) -> list:
    return [p for sub in ("new", "cur") for p in pending(cfg.outbox_dir, sub)]


def test_a_pr_is_opened_through_5xx_and_a_late_write_without_a_second_or_a_rerun(
        sandbox, fake_github):
    """The worker pushed and queued its PR. GitHub answers 502 twice, then takes longer than
    the timeout (the PR is created all the same): the fetcher keeps trying (a fault costs no
    attempt and reruns no agent), finds the late PR open instead of opening a second one,
    and writes the run's marker."""
    cfg = sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.05,
                                       "timeout": 1})
    fake_github.add_issue("x")
    queue_pr(cfg, "gh-1", "w-abc123", "auto/gh-1", "main", "Fix it", "c0ffee", "Closes #1.")
    fake_github.fail_next(2, status=502, match="/pulls", method="POST")
    fake_github.slow_next(1, seconds=1.5, match="/pulls", method="POST")
    fetcher = make_fetcher(cfg, settle=None)

    def sent() -> bool:
        fetcher.outbox_retry_at = 0.0  # no backoff in this test: only the settling counts
        fetcher.send_outbox()
        return not outbox_items(cfg)
    wait_for(sent, timeout=60, interval=0.1, what="the PR item to be done")
    [pr] = fake_github.open_prs()
    marker = runs.read_pr_marker(cfg, "gh-1")
    assert (marker["url"], marker["worker_id"], marker["commit"]) == \
        (pr["html_url"], "w-abc123", "c0ffee")
    assert pending(cfg.outbox_dir, "bad") == [] and fetcher.memory.attempts == {}


def test_a_pr_github_refuses_fails_its_run_with_the_reason(sandbox, fake_github):
    cfg = sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.05})
    queue_pr(cfg, "gh-1", "w-abc123", "auto/gh-1", "main", "Fix it", "c0ffee", "")
    fake_github.fail_next(1, status=422, match="/pulls", method="POST")
    make_fetcher(cfg).send_outbox()
    marker = runs.read_pr_marker(cfg, "gh-1")
    assert marker["worker_id"] == "w-abc123" and "GitHub did not open the PR" in marker["error"]
    [refused] = events(cfg, "pr_refused")
    assert refused["task"] == "gh-1" and fake_github.open_prs() == []

    # The run ended "pr" (pushed); its refused marker makes it a failure, retried.
    from tests.test_observer_handover import InProcess
    from services import observer as observer_module

    edit_tasks(cfg, lambda board: board.move(board.add("Fix it", task_id="gh-1"), ACTIVE,
                                             marker=make_marker(ACTIVE, "w-abc123")))
    write_record(cfg.run_record("gh-1"), {"task": "gh-1", "worker_id": "w-abc123",
                                          "attempt": 1, "outcome": "pr", "finished": now_iso()})
    observer_module.TaskObserver(InProcess(cfg)).cycle()
    meta = runs.read_run(cfg, "gh-1").meta
    assert meta["applied"][0] == "retry" and "GitHub did not open the PR" in meta["error"]
