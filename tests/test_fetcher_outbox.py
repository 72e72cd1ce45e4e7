"""The fetcher's outbox when GitHub refuses or fails a send (real gh, fake GitHub): a bad
item is retried a few times then set aside, and it never holds up other comments or polls."""

from __future__ import annotations

import threading
import time

import pytest

from services.fetcher import SEND_ATTEMPTS, Fetcher, Memory
from shared import tasks
from shared.fsio import pending
from shared.github import GitHub
from shared.outbox import queue_comment
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
    assert (aside["item"], aside["issue"], aside["key"]) == (refused.name, 1, "k-refused")
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


def test_a_send_cut_short_by_sigterm_is_not_counted(cfg, fake_github):
    fake_github.add_issue("x")
    item = queue_comment(cfg, 1, "gh-1", "k", "hello")
    fake_github.slow_next(1, seconds=3, match="/comments")
    stopping = threading.Event()
    fetcher = Fetcher(cfg, GitHub.from_config(cfg, cancel=stopping), stopping)
    threading.Timer(0.3, stopping.set).start()

    fetcher.send_outbox()

    assert (cfg.outbox_dir / "cur" / item.name).exists()
    assert fetcher.memory.attempts == {} and fetcher.outbox_failures == 0
    assert events(cfg, "github_api_error") == []
