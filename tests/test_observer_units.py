"""Pieces of the observer that need no process: the retry schedule (shared/retry.py), the
pure tasks.md changes, the archive writer, the watch filters and what a transition says."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from types import SimpleNamespace

from watchdog.events import (FileAttribEvent, FileClosedNoWriteEvent, FileCreatedEvent,
                             FileMovedEvent, FileOpenedEvent)

from services.observer import Move, TaskObserver, _about, _not_a_read, apply_moves
from shared import runs
from shared.records import write_record
from shared.tasks import archive_into, drop_archived
from shared.clock import stamp
from shared.retry import backoff_seconds, next_retry, parse_retry, retry_value
from shared.tasks import ACTIVE, COMPLETED, PENDING, STOPPED, parse


def test_backoff_doubles_per_attempt_up_to_the_cap(sandbox):
    cfg = sandbox.write_config(launcher={"retry_backoff": 60, "retry_backoff_max": 300})
    assert [backoff_seconds(cfg, k) for k in range(1, 6)] == [60, 120, 240, 300, 300]
    assert backoff_seconds(cfg, 10**9) == 300


def test_retry_line_round_trips(sandbox):
    cfg = sandbox.write_config(launcher={"max_attempts": 4, "retry_backoff": 30})
    ended = datetime(2026, 11, 24, 10, 0, 0).astimezone()
    retry = next_retry(cfg, 2, ended)
    value = retry_value(retry)
    assert value == f"attempt 3/4 not before {stamp(ended + timedelta(seconds=60))}"
    assert parse_retry(value) == retry
    assert parse_retry("attempt 3/4 not before soon") is None
    assert parse_retry("try again later") is None


BOARD = """# Tasks

## Active
[🟡 w-aaaaaa] t-1: First
- Started: 2026-11-24 10:15:02 · attempt 1/3 · trees/t-1 · auto/t-1
[🟡 w-bbbbbb] t-2: Second

## Pending
[] t-3: Third

## Stopped
"""


def test_moves_apply_only_to_active_lines_naming_the_run_s_worker():
    board = parse(BOARD)
    moves = [Move("t-1", "w-aaaaaa", STOPPED, "⏹ w-aaaaaa", (("Stopped", "now"),)),
             Move("t-2", "w-cccccc", STOPPED, "⏹ w-cccccc", ()),  # another run's line
             Move("t-3", None, PENDING, "", ())]  # not Active: a person moved it
    assert apply_moves(moves, board) == ["t-1"]
    text = board.render()
    assert "## Stopped\n[⏹ w-aaaaaa] t-1: First\n- Stopped: now\n" in text
    assert board.find("t-2")[0] == ACTIVE and board.find("t-3")[0] == PENDING
    assert apply_moves(moves, parse(text)) == []  # applying again changes nothing


def test_archive_gets_each_completion_once_and_tasks_md_drops_only_archived_ones():
    queue = parse("# Tasks\n\n## Completed Today\n"
                  "[✅ cbffe52, w-ee4608] gh-471: Docstring {p1}\n- Completed: 2026-11-23 17:38:45\n"
                  "- PR: https://github.com/o/r/pull/473\n"
                  "[✅ 1234567, w-111111] t-2: Today\n- Completed: 2026-11-24 09:00:00\n")
    old = [t for t in queue.tasks(COMPLETED) if t.id == "gh-471"]
    archive = parse("")
    archive_into(date(2026, 11, 23), old, archive)
    archive_into(date(2026, 11, 23), old, archive)  # a retry after a crash
    text = archive.render()
    assert text == ("# Tasks completed on 2026-11-23\n\n## Completed Today\n"
                    "[✅ cbffe52, w-ee4608] gh-471: Docstring {p1}\n"
                    "- Completed: 2026-11-23 17:38:45\n- PR: https://github.com/o/r/pull/473\n")
    drop_archived({("gh-471", "2026-11-23 17:38:45")}, queue)
    assert [t.id for t in queue.tasks(COMPLETED)] == ["t-2"]


def test_own_reads_never_wake_and_tree_watches_want_only_stop():
    assert not _not_a_read(FileOpenedEvent("/s/runs/t-1.lock"))
    assert not _not_a_read(FileClosedNoWriteEvent("/s/runs/t-1.md"))
    assert _not_a_read(FileAttribEvent("/s/runs/t-1.lock"))
    stop = _about("STOP")
    assert stop(FileAttribEvent("/r/trees/t-1/STOP"))  # `touch` on an existing STOP
    assert stop(FileMovedEvent("/r/trees/t-1/.STOP.tmp.1.ab", "/r/trees/t-1/STOP"))  # atomic
    assert not stop(FileCreatedEvent("/r/trees/t-1/main.py"))
    assert not stop(FileOpenedEvent("/r/trees/t-1/STOP"))


def planner(cfg) -> TaskObserver:
    """An observer that only works out transitions (no loop, no watches)."""
    return TaskObserver(SimpleNamespace(cfg=cfg, log=logging.getLogger("observer")))


def test_the_blocked_line_carries_the_question_not_a_heading(sandbox):
    cfg = sandbox.cfg
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    question = ("# Blocked\n\n## Question\n---\n```\nWhich Python versions [3.11 or\t3.12]"
                " should CI cover?\x1b[2J\n```\nMore context.\n")
    runs.question_file(cfg, "gh-460").write_text(question)
    plan = planner(cfg).plan_blocked("gh-460", {"worker_id": "w-1"})
    first = "Which Python versions (3.11 or 3.12) should CI cover?"
    assert plan.move.details == (("Blocked", first),)
    assert plan.event == ("task_blocked", {"question": first})
    assert "# Blocked" in plan.comment and "More context." in plan.comment  # all of it
    runs.question_file(cfg, "gh-460").write_text("# Blocked\n\n")
    assert planner(cfg).plan_blocked("gh-460", {}).move.details == \
        (("Blocked", "BLOCKED.md held no question"),)


def test_the_stop_comment_says_why_it_stopped_and_how_to_resume(sandbox):
    cfg = sandbox.cfg
    meta = {"worker_id": "w-1", "commit": "9d1e2f0aa", "finished": "2026-11-24T09:40:11+00:00"}

    def stopped(task, state=None, labels=("agent",)):
        if state:
            number = int(task[3:])
            write_record(cfg.issue_snapshot(number), {"number": number, "state": state,
                                                      "labels": list(labels)})
        return planner(cfg).plan_stopped(task, meta)

    saved = "Work in progress is committed as 9d1e2f0 on branch auto/{}."
    plan = stopped("gh-5", "closed")
    assert plan.comment == (f"Stopped: issue #5 was closed (worker w-1). {saved.format('gh-5')}"
                            " To resume, reopen the issue, then move the task back to Pending"
                            " in tasks.md.")
    assert plan.move.details[0][1].endswith(" · issue #5 was closed · WIP commit 9d1e2f0")
    assert plan.event == ("task_stopped", {"commit": "9d1e2f0aa", "reason": "closed"})
    plan = stopped("gh-6", "open", labels=["bug"])
    assert plan.comment.startswith("Stopped: issue #6 lost its 'agent' label (worker w-1).")
    assert "To resume, label the issue 'agent' again, then move the task back" in plan.comment
    for plan in (stopped("gh-7", "open"), stopped("gh-8"), stopped("t-9")):  # a person's STOP
        assert plan.comment.startswith("Stopped on request (worker w-1).")
        assert plan.comment.endswith("Move the task back to Pending in tasks.md to resume.")
        assert plan.event[1]["reason"] == "request"
    assert stopped("gh-10", "deleted").comment is None  # no issue left to comment on
