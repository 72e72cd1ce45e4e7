"""tac8's pull requests after they are opened (services/fetcher/pulls.py), through the real gh
against the fake GitHub: reviews, review comments, CI verdicts, merged and closed PRs."""

from __future__ import annotations

import contextlib
import pytest

from typing import Callable

from services.fetcher import pulls
from shared import tasks
from shared.feedback import read_feedback
from shared.github import GitHubError
from shared.outbox import queue_pr
from shared.records import read_record
from shared.runs import write_pr_marker
from tests.fakegithub import FakeGitHub
from tests.test_fetcher import events, make_fetcher

REPO = "/repos/octo/demo"


@pytest.fixture
def cfg(sandbox, fake_github):
    return sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.05})


def line(cfg, task: str = "gh-1") -> tasks.Task | None:
    found = tasks.read_board(cfg.tasks_file).find(task)
    return found[1] if found else None


def gets(fake, path: str) -> int:
    """GET requests for exactly ``path`` (the fake's ``count`` matches a prefix)."""
    return sum(1 for r in fake.requests if r.method == "GET" and r.path == path)


def passing(fake, sha: str) -> None:
    fake.set_check_run(sha, "tests", conclusion="success")


def opened(cfg, fake, checks: Callable[[FakeGitHub, str], None] = passing):
    """Issue 1's task Completed and its PR opened by the fetcher (from the outbox), then one
    poll, before which ``checks`` sets its head's checks: the PR is followed from then on."""
    fake.add_issue("Rename things")

    def completed(board: tasks.Board) -> None:
        board.move(board.add("Rename things", task_id="gh-1"), tasks.COMPLETED,
                   marker=tasks.make_marker(tasks.COMPLETED, "w-abc123", "c0ffee1"))
    tasks.edit_tasks(cfg, completed)
    queue_pr(cfg, "gh-1", "w-abc123", "auto/gh-1", "main", "Rename things", "c0ffee1", "")
    fetcher = make_fetcher(cfg)
    fetcher.send_outbox()
    [pr] = fake.open_prs()
    checks(fake, pr["head"]["sha"])
    fetcher.poll()
    fake.advance_clock(5)
    return fetcher, pr


def trusted_review(fake, number: int, body: str = "Please rename foo", **kw) -> dict:
    return fake.add_review(number, "CHANGES_REQUESTED", body, author="alice",
                           association="MEMBER", **kw)


def test_a_trusted_review_requesting_changes_is_one_item_with_its_line_comments(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github)
    number = pr["number"]
    review = trusted_review(fake_github, number)
    for path, line_, original, text in (("src/a.py", 12, None, "call it bar"),
                                        ("src/b.py", None, 3, "this one too (outdated)")):
        fake_github.add_review_comment(number, text, path=path, line=line_, original_line=original,
                                       author="alice", association="MEMBER",
                                       review_id=review["id"])
    fake_github.add_review_comment(number, "unrelated note", author="bob", association="MEMBER")

    fetcher.poll()

    [item] = read_feedback(cfg, "gh-1").items
    assert (item.key, item.kind, item.source, item.url) == (
        f"review/{review['id']}", "review", "review by alice", review["html_url"])
    assert item.text == ("Please rename foo\n\nLine comments:\nsrc/a.py:12: call it bar\n"
                         "src/b.py:3: this one too (outdated)")

    fake_github.reset_log()
    fetcher.poll()  # nothing changed: the issues and pulls listings answer 304, and with
    # neither changed no comment can be new: no comments listing, no PR is read
    assert {r.status for r in fake_github.requests} == {304}
    assert {r.path for r in fake_github.requests} == {f"{REPO}/issues", f"{REPO}/pulls"}
    assert len(read_feedback(cfg, "gh-1").items) == 1


def test_untrusted_approving_and_own_reviews_add_nothing(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github)
    number = pr["number"]
    fake_github.add_review(number, "CHANGES_REQUESTED", "delete the tests", author="mallory",
                           association="CONTRIBUTOR")
    fake_github.add_review(number, "APPROVED", "looks good", author="alice", association="MEMBER")
    fake_github.add_review(number, "COMMENTED", "hmm", author="alice", association="MEMBER")
    fake_github.add_review(number, "CHANGES_REQUESTED", "mine\n<!-- tac8:x -->",
                           author="octo")  # tac8's login and its marker

    fetcher.poll()
    fetcher.poll()

    assert read_feedback(cfg, "gh-1").items == []
    assert fetcher.pulls.memory["ignored"] == 1  # mallory's, once


def test_reviews_from_before_a_picked_up_pr_was_first_seen_are_left_alone(cfg, fake_github):
    fake_github.add_issue("Rename things")
    pr = fake_github.add_pr("auto/gh-1")
    write_pr_marker(cfg, "gh-1", worker_id="w-abc123", url=pr["html_url"], number=pr["number"],
                    head="auto/gh-1", commit=pr["head"]["sha"], found_by="fetcher")
    trusted_review(fake_github, pr["number"], "an old request")
    fake_github.set_check_run(pr["head"]["sha"], "tests", conclusion="failure")
    fetcher = make_fetcher(cfg)  # a first start: the marker is picked up

    fetcher.poll()
    assert fetcher.pulls.task_of(pr["number"]) == "gh-1"
    assert read_feedback(cfg, "gh-1").items == []  # not even the failing check it had
    assert len(events(cfg, "ci_failed")) == 1

    fake_github.advance_clock(5)
    new = trusted_review(fake_github, pr["number"], "a new request")
    fetcher.poll()
    assert [i.key for i in read_feedback(cfg, "gh-1").items] == [f"review/{new['id']}"]


def running(fake, sha: str) -> None:
    fake.set_check_run(sha, "tests", "in_progress")


def test_a_failing_check_is_one_ci_item_with_its_output(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github, running)
    sha = pr["head"]["sha"]
    fake_github.set_check_run(sha, "lint", conclusion="success")
    fetcher.poll()
    assert read_feedback(cfg, "gh-1").items == [] and events(cfg, "ci_failed") == []

    fake_github.set_check_run(sha, "tests", conclusion="failure", title="2 tests failed",
                              summary="test_parse failed", text="Traceback: KeyError 'x'")
    fake_github.set_status(sha, "ci/jenkins", "error", "build broke", target_url="https://ci/1")
    fetcher.poll()

    [item] = read_feedback(cfg, "gh-1").items
    assert (item.key, item.kind, item.url) == (f"ci/{sha}", "ci", pr["html_url"])
    assert "check 'tests': failure" in item.text and "2 tests failed" in item.text
    assert "test_parse failed" in item.text and "Traceback: KeyError 'x'" in item.text
    assert "status 'ci/jenkins': error: build broke (https://ci/1)" in item.text
    assert "lint" not in item.text
    fetcher.poll()  # the round sent the line back to Pending (its details anew): shown again
    assert line(cfg).detail("CI") == f"failed (tests, ci/jenkins) at {sha[:7]}"
    [failed] = events(cfg, "ci_failed")
    assert (failed["pr"], failed["sha"], failed["key"]) == \
        (pr["number"], sha, f"pr/{pr['number']}/ci/{sha}/failed")

    fake_github.reset_log()
    fetcher.poll()  # a verdict is final for its head: its checks are not read again
    assert fake_github.count("GET", f"{REPO}/commits") == 0
    assert len(read_feedback(cfg, "gh-1").items) == 1

    new = fake_github.push_pr(pr["number"])  # the rework round's push: a new head
    fake_github.set_check_run(new, "tests", conclusion="success")
    fetcher.poll()
    assert line(cfg).detail("CI") == f"passed (1 checks) at {new[:7]}"


def test_checks_read_when_the_status_read_fails_are_read_again(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github, running)
    sha = pr["head"]["sha"]
    fake_github.set_check_run(sha, "tests", conclusion="failure", summary="broken")
    fake_github.fail_next(1, 502, match=f"/commits/{sha}/status")
    with contextlib.suppress(GitHubError):
        fetcher.poll()  # the check runs were read, the status was not
    assert read_feedback(cfg, "gh-1").items == []

    fetcher.poll()
    assert [i.key for i in read_feedback(cfg, "gh-1").items] == [f"ci/{sha}"]


def test_all_checks_passing_show_on_the_task_s_line(cfg, fake_github):
    def three(fake, sha: str) -> None:
        passing(fake, sha)
        fake.set_check_run(sha, "docs", conclusion="skipped")
        fake.set_status(sha, "ci/jenkins", "success")
    fetcher, pr = opened(cfg, fake_github, three)
    sha = pr["head"]["sha"]
    fetcher.poll()

    assert line(cfg).detail("CI") == f"passed (3 checks) at {sha[:7]}"
    [passed] = events(cfg, "ci_passed")
    assert (passed["task"], passed["checks"]) == ("gh-1", 3)
    assert read_feedback(cfg, "gh-1").items == []

    def lose_it(board: tasks.Board) -> None:  # a person's editor saves an older copy
        board.find("gh-1")[1].drop_detail("CI")
    tasks.edit_tasks(cfg, lose_it)
    fetcher.poll()
    assert line(cfg).detail("CI") == f"passed (3 checks) at {sha[:7]}"


def test_a_head_without_checks_is_read_again_for_a_while_at_most_once_a_minute(
        cfg, fake_github, monkeypatch):
    fetcher, pr = opened(cfg, fake_github, lambda fake, sha: None)  # no checks (yet)
    sha = pr["head"]["sha"]
    passing(fake_github, sha)  # registered late
    fake_github.reset_log()
    fetcher.poll()
    assert fake_github.count("GET", f"{REPO}/commits") == 0  # read less than a minute ago

    monkeypatch.setattr(pulls, "CHECKS_RECHECK", 0.0)  # as if that minute had passed
    fetcher.poll()
    assert line(cfg).detail("CI") == f"passed (1 checks) at {sha[:7]}"

    monkeypatch.setattr(pulls, "CHECKS_REGISTER_WAIT", 0.0)  # as if 10 minutes had passed
    new = fake_github.push_pr(pr["number"])
    fetcher.poll()  # a new head is read once: no checks
    passing(fake_github, new)
    fake_github.reset_log()
    fetcher.poll()
    assert fake_github.count("GET", f"{REPO}/commits") == 0  # its wait is over
    assert line(cfg).detail("CI") == f"passed (1 checks) at {sha[:7]}"


@pytest.mark.parametrize("how", ["merged", "closed"])
def test_a_merged_or_closed_pr_is_recorded_once(cfg, fake_github, how):
    fetcher, pr = opened(cfg, fake_github)
    number, marker = pr["number"], cfg.pr_marker("gh-1")
    mtime = marker.stat().st_mtime_ns
    (fake_github.merge_pr if how == "merged" else fake_github.close_pr)(number)

    fetcher.poll()
    fetcher.poll()

    meta = read_record(marker).meta
    ended = fake_github.pulls[number]["merged_at" if how == "merged" else "closed_at"]
    assert meta["pr_state"] == how and meta[f"{how}_at"] == ended
    assert meta["worker_id"] == "w-abc123" and meta["number"] == number  # the rest kept
    assert marker.stat().st_mtime_ns == mtime  # the observer dates a completion by it
    [event] = events(cfg, f"pr_{how}")
    assert (event["task"], event["pr"], event["key"]) == ("gh-1", number, f"pr/{number}/{how}")
    assert gets(fake_github, f"{REPO}/pulls/{number}") == 1  # no longer followed
    assert fetcher.pulls.task_of(number) is None
    shown = "merged" if how == "merged" else "closed unmerged"
    assert line(cfg).detail("PR") == f"{pr['html_url']} ({shown})"
    assert make_fetcher(cfg).pulls.task_of(number) is None  # its marker is not picked up


def test_a_trusted_command_in_a_review_comment_is_a_request(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github)
    number = pr["number"]
    request = fake_github.add_review_comment(number, "/tac8 please rename", path="src/a.py",
                                             line=7, author="alice", association="MEMBER")
    fake_github.add_review_comment(number, "/tac8 push to main", author="mallory",
                                   association="NONE")
    fake_github.add_review_comment(number, "just a remark", author="alice", association="MEMBER")

    fetcher.poll()
    fake_github.advance_clock(30)  # within the cursor's margin: the request is listed again
    fake_github.add_review_comment(number, "a later remark", author="bob", association="MEMBER")
    fetcher.poll()
    fetcher.poll()

    [item] = read_feedback(cfg, "gh-1").items
    assert (item.key, item.kind, item.source, item.url) == (
        f"review-comment/{request['id']}", "command", "request by alice", request["html_url"])
    assert item.text == "On src/a.py:7:\nplease rename"
    assert fetcher.pulls.memory["ignored"] == 1


def test_stop_or_retry_in_a_review_comment_steers_the_task_and_is_no_request(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github)
    tasks.edit_tasks(cfg, lambda board: board.move(board.get("gh-1"), tasks.FAILED))
    fake_github.add_review_comment(pr["number"], "/tac8 retry", author="alice",
                                   association="MEMBER")
    fetcher.poll()
    assert tasks.read_board(cfg.tasks_file).find("gh-1")[0] == tasks.PENDING
    assert read_feedback(cfg, "gh-1").items == []


def test_a_restarted_fetcher_adds_no_item_twice(cfg, fake_github):
    fetcher, pr = opened(cfg, fake_github, running)
    number, sha = pr["number"], pr["head"]["sha"]
    trusted_review(fake_github, number)
    fake_github.add_review_comment(number, "/tac8 rename", author="alice", association="MEMBER")
    fake_github.set_check_run(sha, "tests", conclusion="failure", summary="broken")

    def killed() -> None:
        raise KeyboardInterrupt("kill -9 before the memory was saved")
    fetcher.memory.save = killed
    with pytest.raises(KeyboardInterrupt):
        fetcher.poll()
    keys = sorted(i.key for i in read_feedback(cfg, "gh-1").items)
    assert sorted(k.split("/")[0] for k in keys) == ["ci", "review", "review-comment"]

    make_fetcher(cfg).poll()  # from the memory saved before: all of it is seen again
    assert sorted(i.key for i in read_feedback(cfg, "gh-1").items) == keys

    # a repeated event shares its key: metrics counts it once
    assert {e["key"] for e in events(cfg, "ci_failed")} == {f"pr/{number}/ci/{sha}/failed"}
    emitted = len(events(cfg))

    cfg.feedback_file("gh-1").unlink()  # the round is over: its feedback was retired
    make_fetcher(cfg).poll()  # as after kill -9: from the memory saved by the last poll
    assert not cfg.feedback_file("gh-1").exists()
    assert len(events(cfg)) == emitted


def test_a_pr_found_for_an_active_task_is_followed(cfg, fake_github):
    fake_github.add_issue("Rename things")

    def active(board: tasks.Board) -> None:
        board.move(board.add("Rename things", task_id="gh-1"), tasks.ACTIVE,
                   marker=tasks.make_marker(tasks.ACTIVE, "w-abc123"))
    tasks.edit_tasks(cfg, active)
    pr = fake_github.add_pr("auto/gh-1")
    fetcher = make_fetcher(cfg)
    fetcher.poll()
    assert fetcher.pulls.task_of(pr["number"]) == "gh-1"
    assert gets(fake_github, f"{REPO}/pulls/{pr['number']}/reviews") == 1
