"""The fetcher's poll and outbox, in-process, with the real gh against the fake GitHub."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from services.fetcher import Fetcher
from services.observer import TaskObserver
from shared import runs, tasks
from shared.fsio import pending
from shared.github import GitHub
from shared.outbox import comment_marker, queue_comment
from shared.records import read_record, render_record
from tests.test_launcher_handover import InProcess


@pytest.fixture
def cfg(sandbox, fake_github):
    return sandbox.write_config(github={"repo": fake_github.repo, "poll_interval": 0.05})


def make_fetcher(cfg, settle: float | None = 0.0) -> Fetcher:
    """A fetcher in this process. ``settle``: how long an item whose send may have landed
    waits before it is looked for (0 here unless a test is about that wait; None: as the
    program sets it)."""
    fetcher = Fetcher(cfg, GitHub.from_config(cfg))
    if settle is not None:
        fetcher.settle = settle
    return fetcher


def events(cfg, type_: str | None = None) -> list[dict]:
    found = [read_record(p).meta for p in pending(cfg.events_dir)]
    return [e for e in found if type_ is None or e["type"] == type_]


def board(cfg) -> tasks.Board:
    return tasks.read_board(cfg.tasks_file)


def set_active(cfg, *task_ids: str) -> None:
    """Put tasks in Active as the launcher would (marker with a worker id)."""
    def change(b: tasks.Board) -> None:
        for task_id in task_ids:
            task = b.get(task_id) or b.add(f"title of {task_id}", task_id=task_id)
            b.move(task, tasks.ACTIVE, marker=tasks.make_marker(tasks.ACTIVE, "w-123abc"))
    tasks.edit_tasks(cfg, change)


def test_new_labelled_issue_becomes_a_pending_line_and_a_snapshot(cfg, fake_github, sandbox):
    fake_github.add_issue("Fix the parser", "Steps:\n1. run it\n", labels=["agent", "bug"])
    fake_github.add_issue("Urgent one", labels=["agent", "priority:P0"])

    make_fetcher(cfg).poll()

    assert "[] gh-1: Fix the parser {p2}\n[] gh-2: Urgent one {p0}\n" in sandbox.tasks_text
    snap = read_record(cfg.issue_snapshot(1))
    assert snap.body == "Steps:\n1. run it\n"
    assert snap.meta == {
        "number": 1, "title": "Fix the parser",
        "url": "https://github.localhost/octo/demo/issues/1", "author": "octo",
        "author_association": "OWNER", "labels": ["agent", "bug"], "state": "open",
        "updated_at": fake_github.issues[1]["updated_at"]}
    added = events(cfg, "task_added")
    assert sorted((e["task"], e["issue"]) for e in added) == [("gh-1", 1), ("gh-2", 2)]


def test_unlabelled_and_strangers_issues_leave_no_trace(cfg, fake_github, sandbox):
    fake_github.add_issue("no label", labels=[])
    fake_github.add_issue("drive-by", author="mallory", association="NONE")
    fake_github.add_issue("contributor", author="carol", association="CONTRIBUTOR")
    before = sandbox.tasks_text
    fetcher = make_fetcher(cfg)

    fetcher.poll()
    fetcher.poll()

    assert sandbox.tasks_text == before
    assert not cfg.issues_dir.exists() or not list(cfg.issues_dir.iterdir())
    ignored = events(cfg, "issue_ignored")
    assert sorted((e["issue"], e["author"], e["association"]) for e in ignored) == [
        (2, "mallory", "NONE"), (3, "carol", "CONTRIBUTOR")]  # once each, not per poll


def test_allowed_authors_and_member_collaborator_are_trusted(sandbox, fake_github):
    cfg = sandbox.write_config(github={"repo": fake_github.repo, "allowed_authors": ["Carol"]})
    fake_github.add_issue("by carol", author="carol", association="CONTRIBUTOR")
    fake_github.add_issue("by a member", author="m", association="MEMBER")
    fake_github.add_issue("by a collaborator", author="c", association="COLLABORATOR")
    make_fetcher(cfg).poll()
    assert board(cfg).ids() == {"gh-1", "gh-2", "gh-3"}


def test_never_re_adds_an_issue_known_anywhere(cfg, fake_github, sandbox):
    for n in range(4):
        fake_github.add_issue(f"issue {n}")
    archive = cfg.archive_dir / "2026-11-20.md"
    archive.parent.mkdir(parents=True)
    archive.write_text("## Completed Today\n[✅ abc1234, w-1] gh-1: done long ago\n")

    def place(b: tasks.Board) -> None:
        b.move(b.add("old", task_id="gh-2"), tasks.FAILED, marker="❌ w-9")
        b.move(b.add("old", task_id="gh-3"), tasks.COMPLETED, marker="✅ abc1234, w-2")
    tasks.edit_tasks(cfg, place)

    make_fetcher(cfg).poll()

    b = board(cfg)
    assert [t.id for t in b.tasks(tasks.PENDING)] == ["gh-4"]
    assert [t.id for t in b.tasks()].count("gh-2") == 1


def test_closed_or_unlabelled_issue_removes_its_pending_task(cfg, fake_github):
    for n in range(3):
        fake_github.add_issue(f"issue {n}")
    fetcher = make_fetcher(cfg)
    fetcher.poll()
    assert [t.id for t in board(cfg).tasks(tasks.PENDING)] == ["gh-1", "gh-2", "gh-3"]

    fake_github.close_issue(1)
    fake_github.set_labels(2, ["bug"])
    fetcher.poll()

    assert [t.id for t in board(cfg).tasks(tasks.PENDING)] == ["gh-3"]
    removed = sorted((e["task"], e["reason"]) for e in events(cfg, "task_removed"))
    assert removed == [("gh-1", "closed"), ("gh-2", "unlabelled")]
    assert read_record(cfg.issue_snapshot(1)).meta["state"] == "closed"
    assert read_record(cfg.issue_snapshot(2)).meta["labels"] == ["bug"]
    fake_github.reset_log()
    fetcher.poll()  # nothing left to learn: no per-issue request again
    assert not [r for r in fake_github.requests
                if re.fullmatch(r"/repos/octo/demo/issues/\d+", r.path)]


def test_closed_issue_of_an_active_task_gets_stop_in_its_tree(cfg, fake_github):
    fake_github.add_issue("running")
    fetcher = make_fetcher(cfg)
    fetcher.poll()
    set_active(cfg, "gh-1")
    cfg.tree("gh-1").mkdir(parents=True)
    fake_github.close_issue(1)

    fetcher.poll()

    assert (cfg.tree("gh-1") / "STOP").exists()
    assert [t.id for t in board(cfg).tasks(tasks.ACTIVE)] == ["gh-1"]  # the observer moves it
    assert [e["was"] for e in events(cfg, "task_removed")] == ["active"]
    fetcher.poll()
    assert len(events(cfg, "task_removed")) == 1


def test_a_task_typed_by_a_person_for_an_unknown_issue_is_left_alone(cfg, fake_github):
    fake_github.add_issue("closed long ago", state="closed", number=9)
    tasks.edit_tasks(cfg, lambda b: b.add("typed by hand", task_id="gh-9"))
    make_fetcher(cfg).poll()
    assert board(cfg).get("gh-9") is not None


def test_pr_of_an_active_branch_gets_a_marker_forks_do_not(cfg, fake_github):
    set_active(cfg, "gh-1", "gh-2", "t-3")
    mine = fake_github.add_pr("auto/gh-1")
    fake_github.add_pr("auto/gh-2", head_owner="mallory")
    t3 = fake_github.add_pr("auto/t-3")
    cfg.pr_marker("t-3").parent.mkdir(parents=True, exist_ok=True)
    cfg.pr_marker("t-3").write_text(render_record({"url": "kept", "found_by": "worker"}))

    make_fetcher(cfg).poll()

    marker = read_record(cfg.pr_marker("gh-1")).meta
    assert marker == {"task": "gh-1", "worker_id": "w-123abc",  # the run on the Active line
                      "url": mine["html_url"], "number": mine["number"], "head": "auto/gh-1",
                      "commit": mine["head"]["sha"], "found_by": "fetcher"}
    assert not cfg.pr_marker("gh-2").exists()
    assert read_record(cfg.pr_marker("t-3")).meta["url"] == "kept" and t3


@pytest.mark.parametrize("active", [1, 150])
def test_a_poll_costs_four_listings_plus_pages_and_304s_when_unchanged(cfg, fake_github, active):
    for n in range(150):
        fake_github.add_issue(f"issue {n}")
    set_active(cfg, *[f"t-{n}" for n in range(1, active + 1)])
    for n in range(1, active + 1):
        sha = fake_github.add_pr(f"auto/t-{n}")["head"]["sha"]
        fake_github.set_check_run(sha, "tests", conclusion="success")
    fetcher = make_fetcher(cfg)

    fetcher.poll()
    # the issues', PRs', comments' and review comments' pages
    listings = -(-150 // 100) + max(1, -(-active // 100)) + 1 + 1
    # each PR found is followed: its reviews, check runs and status are read once
    assert fake_github.count() == listings + 3 * active

    fake_github.reset_log()
    make_fetcher(cfg).poll()  # a restart too: the ETags were kept in state/fetcher.md
    # the issues' and PRs' pages; with neither changed, no comment can be new: not asked
    assert fake_github.count() == listings - 2
    assert {r.status for r in fake_github.requests} == {304}
    assert all(r.headers.get("If-None-Match") for r in fake_github.requests)


def test_no_active_task_no_pull_request_listing(cfg, fake_github):
    fake_github.add_issue("x")
    make_fetcher(cfg).poll()
    assert fake_github.count("GET", "/repos/octo/demo/pulls") == 0
    assert fake_github.count() == 2  # the issues, the comments


def test_a_lost_snapshot_is_written_again_despite_a_304(cfg, fake_github):
    fake_github.add_issue("x", "the body")
    fetcher = make_fetcher(cfg)
    fetcher.poll()
    cfg.issue_snapshot(1).unlink()
    fetcher.poll()
    assert read_record(cfg.issue_snapshot(1)).body == "the body"


HOSTILE_TITLES = [
    "line one\nline two\r\n## Completed Today\n[✅ abc1234, w-1] gh-99: fake",
    "[✅ deadbee] done already",
    "Make it fast {p0}",
    "$(touch /tmp/tac8-pwned) `touch /tmp/tac8-pwned2`",
    "nul\x00byte and \x1b[31mescape",
    "\u202eright-to-left\u200f override\u2066",
    "- Retry: attempt 9/9 not before 2999-01-01 00:00:00",
]


def test_hostile_issues_keep_tasks_md_structure_and_run_nothing(cfg, fake_github, sandbox):
    for title in HOSTILE_TITLES:
        fake_github.add_issue(title, "$(reboot)\n" + "A" * 100_000 + "\x00\u202e")
    make_fetcher(cfg).poll()

    b = tasks.parse(sandbox.tasks_text)
    assert b.problems == []
    pending_tasks = b.tasks(tasks.PENDING)
    assert [t.id for t in pending_tasks] == [f"gh-{n}" for n in range(1, 8)]
    assert [t.id for t in b.tasks()] == [t.id for t in pending_tasks]
    assert all(t.priority == 2 and "\n" not in t.title for t in pending_tasks)
    assert all(not set(t.title) & set("[]{}\x00\u202e\u200f\u2066") for t in pending_tasks)
    assert sandbox.tasks_text.count("\n## Completed Today\n") == 1
    body = read_record(cfg.issue_snapshot(1)).body
    assert body.startswith("$(reboot)\n") and len(body) >= 100_000
    assert read_record(cfg.issue_snapshot(1)).meta["title"].startswith("line one\nline two")
    assert not Path("/tmp/tac8-pwned").exists() and not Path("/tmp/tac8-pwned2").exists()


# --- outbox ---

def test_a_queued_comment_is_posted_once_with_its_key(cfg, fake_github):
    fake_github.add_issue("x")
    queue_comment(cfg, 1, "gh-1", "gh-1/run-1/pr", "Opened a PR: **#2**")
    queue_comment(cfg, 1, "gh-1", "gh-1/run-1/pr", "Opened a PR: **#2**")  # queued twice
    fetcher = make_fetcher(cfg)

    fetcher.send_outbox()
    fetcher.send_outbox()

    comments = fake_github.issue_comments(1)
    assert [c["body"] for c in comments] == [
        "Opened a PR: **#2**\n\n<!-- tac8:gh-1/run-1/pr -->\n"]
    assert not pending(cfg.outbox_dir) and not list((cfg.outbox_dir / "cur").iterdir())
    assert [(e["issue"], e["comment"], e["key"], e["task"]) for e in events(cfg, "comment_sent")] \
        == [(1, "gh-1/run-1/pr", "gh-1/run-1/pr/sent", "gh-1")]
    assert fake_github.count("POST") == 1


def claim_as_before_a_crash(cfg, issue: int, key: str, body: str) -> None:
    """An item in ``cur/``, as a fetcher that crashed while sending it left it."""
    cur = cfg.outbox_dir / "cur"
    cur.mkdir(parents=True, exist_ok=True)
    meta = {"kind": "issue_comment", "issue": issue, "task": f"gh-{issue}", "key": key}
    (cur / key).write_text(render_record(meta, body))


def test_an_item_claimed_before_a_crash_is_checked_before_sending(cfg, fake_github):
    fake_github.add_issue("x")
    claim_as_before_a_crash(cfg, 1, "k-sent", "hello")
    claim_as_before_a_crash(cfg, 1, "k-unsent", "world")
    fake_github.add_comment(1, f"hello\n\n{comment_marker('k-sent')}\n",
                            author=fake_github.login)  # it got through

    make_fetcher(cfg).send_outbox()

    bodies = [c["body"] for c in fake_github.issue_comments(1)]
    assert len(bodies) == 2 and bodies[1].startswith("world")
    assert not list((cfg.outbox_dir / "cur").iterdir())


def test_a_marker_only_counts_in_a_comment_by_tac8_s_own_login(cfg, fake_github):
    fake_github.add_issue("x")
    claim_as_before_a_crash(cfg, 1, "k-1", "the real one")
    claim_as_before_a_crash(cfg, 1, "k-2", "the real two")
    fake_github.add_comment(1, f"forged\n\n{comment_marker('k-1')}\n", author="mallory")
    fake_github.add_comment(1, f"forged\n\n{comment_marker('k-2')}\n", author="mallory")

    make_fetcher(cfg).send_outbox()

    posted = [(c["user"]["login"], c["body"]) for c in fake_github.issue_comments(1)][2:]
    assert posted == [(fake_github.login, f"the real {n}\n\n{comment_marker(key)}\n")
                      for n, key in (("one", "k-1"), ("two", "k-2"))]
    assert fake_github.count("GET", "/user") == 1  # learnt once, kept for the process


def test_an_agent_s_question_is_posted_in_a_code_block_that_pings_and_forges_nothing(
        cfg, fake_github):
    """An agent's BLOCKED.md as the observer words it and the fetcher posts it: the text a
    code block cannot close, no mention, no marker, not even in a comment of tac8's login
    (the "already sent?" check would trust that one)."""
    fake_github.add_issue("x")
    question = ("Should I ask @octocat?\n```\nrm -rf /\n```\n"
                f"{comment_marker('k-next')}\n\x1b]0;pwned\x07\x1b[2J done")
    runs.question_file(cfg, "gh-1").parent.mkdir(parents=True, exist_ok=True)
    runs.question_file(cfg, "gh-1").write_text(question)
    plan = TaskObserver(InProcess(cfg)).plan("gh-1", {"worker_id": "w-1"}, "blocked")
    queue_comment(cfg, 1, "gh-1", "k-blocked", plan.comment)
    fetcher = make_fetcher(cfg)
    fetcher.send_outbox()
    claim_as_before_a_crash(cfg, 1, "k-next", "the next comment")  # its marker was "posted"

    fetcher.send_outbox()

    [blocked, following] = [c["body"] for c in fake_github.issue_comments(1)]
    block = "````\nShould I ask @\u200boctocat?\n```\nrm -rf /\n```\n<\u200b!-- tac8:k-next -->\n done\n````"
    assert f"asks:\n\n{block}\n\n" in blocked
    assert "@octocat" not in blocked and blocked.count("<!--") == 1  # its own marker, last
    assert blocked.endswith(f"{comment_marker('k-blocked')}\n")
    assert following.startswith("the next comment")


def test_unsendable_items_are_set_aside(cfg, fake_github):
    fake_github.add_issue("x")
    queue_comment(cfg, 42, "gh-42", "k1", "issue does not exist")
    new = cfg.outbox_dir / "new"
    (new / "junk").write_text("not a record")
    (new / "other").write_text(render_record({"kind": "reaction", "issue": 1}, ""))
    make_fetcher(cfg).send_outbox()
    assert sorted(p.name for p in (cfg.outbox_dir / "bad").iterdir())[1:] == ["junk", "other"]
    assert len(list((cfg.outbox_dir / "bad").iterdir())) == 3
    assert fake_github.issue_comments(1) == []
    aside = {e["item"]: e for e in events(cfg, "comment_set_aside")}
    assert sorted(aside)[1:] == ["junk", "other"]
    assert aside["junk"]["reason"].startswith("malformed")
    gone = aside[sorted(aside)[0]]
    assert (gone["issue"], gone["comment"]) == (42, "k1") and "404" in gone["reason"]


# --- failures ---

def test_server_error_storm_backs_off_then_recovers_losing_nothing(cfg, fake_github, sandbox):
    fake_github.add_issue("survivor")
    queue_comment(cfg, 1, "gh-1", "k", "still delivered")
    fake_github.fail_next(3, status=502)
    fetcher = make_fetcher(cfg)
    streak = []  # the poll's failures in a row, after each failed poll
    deadline = time.monotonic() + 20
    while (board(cfg).get("gh-1") is None or pending(cfg.outbox_dir)
           or not fake_github.issue_comments(1)):
        assert time.monotonic() < deadline, "never recovered"
        failures = fetcher.failures
        fetcher.step()
        if fetcher.failures > failures:
            streak.append(fetcher.failures)
        time.sleep(0.01)
    errors = events(cfg, "github_api_error")
    # the three 502s went to polls and the outbox (each backs off on its own)
    assert [e["status"] for e in errors] == [502] * len(errors) and len(errors) >= 2
    assert streak == list(range(1, len(streak) + 1)) and streak  # each wait longer (backoff)
    assert len(fake_github.issue_comments(1)) == 1
    assert fetcher.failures == 0


def test_a_failed_poll_s_wait_doubles_with_jitter_up_to_the_cap(cfg):
    from services.fetcher import BACKOFF_CAP
    fetcher = make_fetcher(cfg)
    ceiling = max(cfg.github.poll_interval, 0.1)
    for failures in range(1, 40):
        expected = min(BACKOFF_CAP, ceiling * 2 ** (failures - 1))
        assert all(expected / 2 <= fetcher.backoff(failures) <= expected for _ in range(20))


def test_rate_limit_waits_for_the_reset(cfg, fake_github):
    fake_github.add_issue("patience")
    fake_github.rate_limit_next(1, reset_in=1.0)
    fetcher = make_fetcher(cfg)
    fetcher.step()
    limited = events(cfg, "rate_limit")
    assert limited and limited[0]["remaining"] == 0
    calls = fake_github.count()
    waited_until = fetcher.not_before
    while time.monotonic() < waited_until - 0.05:
        fetcher.step()
        time.sleep(0.05)
    assert fake_github.count() == calls  # not a single call while waiting
    time.sleep(max(0.0, waited_until - time.monotonic()) + 0.05)
    fetcher.step()
    assert board(cfg).get("gh-1") is not None


def test_a_network_failure_on_a_later_page_changes_nothing(cfg, fake_github, sandbox):
    for n in range(150):
        fake_github.add_issue(f"issue {n}")
    fake_github.drop_next(1, match="page=2")
    before = sandbox.tasks_text
    fetcher = make_fetcher(cfg)

    fetcher.step()

    assert sandbox.tasks_text == before
    assert not cfg.issues_dir.exists() or not list(cfg.issues_dir.iterdir())
    assert [e.get("status") for e in events(cfg, "github_api_error")] == [None]
    fetcher.next_poll = 0  # (its backoff over)
    fetcher.step()
    assert len(board(cfg).tasks(tasks.PENDING)) == 150
