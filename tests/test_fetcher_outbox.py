"""The fetcher's outbox when GitHub refuses or fails a send (real gh, fake GitHub): a bad
item is retried a few times then set aside, and it never holds up other comments or polls."""

from __future__ import annotations

import signal
import time

import pytest

from services.fetcher import SEND_ATTEMPTS, Memory
from shared import tasks
from shared.fsio import pending
from shared.outbox import queue_comment
from shared.program import ColdShutdown
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
    while fetcher.memory.attempts or outbox_items(cfg):
        fetcher.outbox_retry_at = 0.0  # no backoff in this test: only the settling counts
        fetcher.send_outbox()
        time.sleep(0.05)
    assert len(fake_github.issue_comments(1)) == 1 and fake_github.count("POST") == 1
    assert [e["comment"] for e in events(cfg, "comment_sent")] == ["gh-1/w-1/completed"]


def outbox_items(cfg) -> list:
    return [p for sub in ("new", "cur") for p in pending(cfg.outbox_dir, sub)]
