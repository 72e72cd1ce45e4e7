"""The observer (services/observer.py) as a real process, against real workers running fake
agents in real git worktrees: every transition out of Active, STOP, crashes and restarts."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta

import psutil
import pytest

from services.metrics import Metrics
from shared import runs
from shared.config import CHECKOUT
from shared.events import emit
from shared.locks import hold
from shared.records import write_record
from shared.clock import now_iso, parse_stamp
from shared.retry import parse_retry
from shared.tasks import (ACTIVE, BLOCKED, COMPLETED, FAILED, PENDING, STOPPED, archived_ids,
                          edit_tasks)
from tests.agents import use_agent, wait_cycles, wait_for
from tests.test_observer_support import (ServiceProcess, add_task, applied, events, launch,
                                         open_queued_prs,
                                         line_of, outbox, section_of, settled)


@pytest.fixture
def observer(sandbox, tmp_path):
    """Start with ``observer.start()`` after configuring; stopped (SIGTERM) at the end."""
    procs: list[ServiceProcess] = []

    class Starter:
        def start(self) -> ServiceProcess:
            procs.append(ServiceProcess(sandbox.cfg, tmp_path / "observer.log").start())
            return procs[-1]

    yield Starter()
    for proc in procs:
        if proc.running():
            assert proc.stop() == 0, (tmp_path / "observer.log").read_text()


def github_config(sandbox, fake, behaviour: str, **limits):
    """The fake agent, and comments on (a GitHub repository is configured)."""
    sandbox.write_config(github={"repo": fake.repo})
    return use_agent(sandbox, behaviour, **limits)


def add_issue_task(cfg, task, title):
    edit_tasks(cfg, lambda board: board.add(title, task_id=task))


def comments_for(cfg, task):
    return [(meta, body) for meta, body in outbox(cfg) if meta["task"] == task]


def fully_applied(cfg, task):
    return settled(cfg, task, "completed", "announced", "cleaned")


def observer_cycles(cfg, cycles: int = 2) -> None:
    """Wait for ``cycles`` more observer cycles, touching tasks.md to wake it (a save that
    changes nothing) rather than waiting out its rescan timer."""
    wait_cycles(cfg, "observer", cycles, nudge=lambda: os.utime(cfg.tasks_file))


def kill_worker_and_agent(worker):
    """SIGKILL a worker (no outcome written: a power loss), then its agent, which lives in
    a session of its own and would otherwise outlive the test."""
    agents = psutil.Process(worker.proc.pid).children(recursive=True)
    worker.proc.kill()
    worker.wait()
    for agent in agents:
        try:
            agent.kill()
        except psutil.NoSuchProcess:
            pass


def test_pr_marker_completes_the_task_comments_once_and_removes_the_worktree(
        sandbox, observer, fake_github, tmp_path):
    cfg = github_config(sandbox, fake_github, "commit")
    issue = fake_github.add_issue("Add a docstring")["number"]
    task = f"gh-{issue}"
    add_issue_task(cfg, task, "Add a docstring")
    observer.start()
    worker = launch(cfg, task, log=tmp_path / "worker.log")
    assert worker.wait() == 0

    wait_for(lambda: fully_applied(cfg, task), what="completion applied and tree removed")
    line = line_of(cfg, task)
    marker = runs.read_pr_marker(cfg, task)
    assert section_of(cfg, task) == COMPLETED
    assert line.marker == f"✅ {marker['commit'][:7]}, {worker.worker_id}"
    assert line.detail("PR") == marker["url"] and marker["url"]
    assert parse_stamp(line.detail("Completed")) is not None
    [(meta, body)] = comments_for(cfg, task)
    assert meta == {"kind": "issue_comment", "issue": issue, "task": task,
                    "key": f"{task}/{worker.worker_id}/completed"}
    assert body.startswith(f"PR ready for review: {marker['url']}")
    assert worker.worker_id in body and marker["commit"][:7] in body and "$0.01" in body
    assert not cfg.tree(task).exists()  # the guarded removal: everything was pushed
    [done] = events(cfg, "task_completed")
    assert done["pr"] == marker["url"] and done["commit"] == marker["commit"]


def test_a_rework_round_s_completion_is_said_on_the_pr_it_updated(
        sandbox, observer, fake_github, tmp_path):
    from shared.feedback import Item, add_item
    cfg = github_config(sandbox, fake_github, "commit")
    issue = fake_github.add_issue("Add a docstring")["number"]
    task = f"gh-{issue}"
    add_issue_task(cfg, task, "Add a docstring")
    add_item(cfg, task, Item(key="review/5", kind="review", text="Name it better.",
                             source="review by alice"))
    pr = fake_github.add_pr(cfg.branch(task))  # the round's push updates the open PR
    observer.start()
    worker = launch(cfg, task, log=tmp_path / "worker.log")
    runs.update_run(cfg, task, lambda rec: rec.meta.update(feedback=["review/5"]))
    assert worker.wait() == 0
    open_queued_prs(cfg)  # the fetcher finds the open PR for the run's queued one
    wait_for(lambda: fully_applied(cfg, task), what="completion applied")
    [(meta, body)] = comments_for(cfg, task)
    assert meta["issue"] == pr["number"] != issue
    assert body.startswith("Updated this PR for review by alice: commit ")


def test_blocked_run_moves_to_blocked_with_the_question_and_keeps_the_tree(
        sandbox, observer, fake_github):
    cfg = github_config(sandbox, fake_github, "blocked")
    add_issue_task(cfg, "gh-460", "Migrate CI")
    observer.start()
    launch(cfg, "gh-460").wait()

    wait_for(lambda: settled(cfg, "gh-460", "announced"), what="blocked announced")
    line = line_of(cfg, "gh-460")
    assert section_of(cfg, "gh-460") == BLOCKED
    assert line.detail("Blocked") == "Which Python versions should CI cover?"
    [(meta, body)] = comments_for(cfg, "gh-460")
    assert "\n```\nWhich Python versions should CI cover?\n```\n" in body  # a code block
    assert cfg.tree("gh-460").is_dir()  # kept; its question was set aside in state/runs
    assert [e["question"] for e in events(cfg, "task_blocked")] == [line.detail("Blocked")]


@pytest.mark.parametrize("behaviour", ["hang", "stubborn"])
def test_stop_signals_the_worker_and_the_task_becomes_stopped(
        sandbox, observer, fake_github, behaviour):
    """A hanging agent stops on the worker's SIGINT; a stubborn one (ignores SIGINT and
    SIGTERM) is killed after the grace. Either way: Stopped, WIP commit, one comment."""
    cfg = github_config(sandbox, fake_github, behaviour, stop_grace=0.3)
    add_issue_task(cfg, "gh-458", "Rewrite the importer")
    observer.start()
    worker = launch(cfg, "gh-458")
    wait_for(lambda: worker.agent(ignoring=behaviour == "stubborn"), what="the agent to run")
    (cfg.tree("gh-458") / "STOP").touch()
    assert worker.wait(15) == 0

    wait_for(lambda: settled(cfg, "gh-458", "announced"), what="stopped announced")
    record = runs.read_run(cfg, "gh-458").meta
    assert record["outcome"] == runs.STOPPED
    line = line_of(cfg, "gh-458")
    assert section_of(cfg, "gh-458") == STOPPED
    # The worker records a commit only when the run moved HEAD (a WIP commit of changes).
    wip = f" · WIP commit {record['commit'][:7]}" if record.get("commit") else ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d" + re.escape(wip),
                        line.detail("Stopped"))
    [request] = events(cfg, "stop_requested")
    assert request["alive"] is True and request["signalled"] is True
    [(meta, body)] = comments_for(cfg, "gh-458")
    assert meta["key"] == f"gh-458/{worker.worker_id}/stopped" and "Stopped on request" in body
    # The stop is carried out: a STOP left behind would stop the next attempt at once.
    assert not (cfg.tree("gh-458") / "STOP").exists() and cfg.tree("gh-458").is_dir()


def test_stop_touched_again_signals_again(sandbox, observer):
    """The agent ignores the first signal, so the worker is still alive for the second."""
    cfg = use_agent(sandbox, "stubborn", stop_grace=1)
    task = add_task(cfg, "Stubborn work")
    observer.start()
    worker = launch(cfg, task)
    wait_for(lambda: worker.agent(ignoring=True), what="the agent to ignore signals")
    stop = cfg.tree(task) / "STOP"
    stop.touch()
    wait_for(lambda: len(events(cfg, "stop_requested")) == 1, what="first stop request")
    later = time.time() + 10  # touched again: a new mtime
    os.utime(stop, (later, later))
    wait_for(lambda: len(events(cfg, "stop_requested")) == 2, what="second stop request")
    assert [e["signalled"] for e in events(cfg, "stop_requested")] == [True, True]
    assert worker.wait(15) == 0
    wait_for(lambda: section_of(cfg, task) == STOPPED, what="stopped")


def test_stop_without_a_live_worker_is_recorded_and_the_dead_run_is_stopped(sandbox, observer):
    """STOP in the tree of an Active task whose worker died: recorded (alive: false), not an
    error; the person asked for a stop, so the dead run goes to Stopped, not to a retry."""
    cfg = use_agent(sandbox, "hang")
    task = add_task(cfg, "Interrupted work")
    worker = launch(cfg, task)
    wait_for(worker.agent, what="the agent to start")
    kill_worker_and_agent(worker)
    assert not runs.worker_alive(cfg, task)
    (cfg.tree(task) / "STOP").touch()
    observer.start()

    wait_for(lambda: settled(cfg, task, "announced"), what="stopped announced")
    assert section_of(cfg, task) == STOPPED
    [request] = events(cfg, "stop_requested")
    assert request["alive"] is False and request["signalled"] is False
    assert runs.read_run(cfg, task).meta["error"] == "worker died"


def test_dead_worker_gets_outcome_failed_run_finished_once_and_a_retry(sandbox, observer):
    cfg = use_agent(sandbox, "hang")
    task = add_task(cfg, "Fragile work")
    observer.start()
    worker = launch(cfg, task)
    wait_for(worker.agent, what="the agent to start")
    kill_worker_and_agent(worker)

    wait_for(lambda: settled(cfg, task, "announced"), what="retry announced")
    record = runs.read_run(cfg, task).meta
    assert record["outcome"] == runs.FAILED and record["error"] == "worker died"
    [finished] = events(cfg, "run_finished")
    assert finished["worker_id"] == worker.worker_id and finished["outcome"] == "failed"
    line = line_of(cfg, task)
    assert section_of(cfg, task) == PENDING and line.marker == ""
    retry = parse_retry(line.detail("Retry"))
    ended = datetime.fromisoformat(record["finished"])
    assert (retry.attempt, retry.max_attempts) == (2, cfg.launcher.max_attempts)
    assert abs((retry.not_before - ended).total_seconds() - cfg.launcher.retry_backoff) <= 1
    assert outbox(cfg) == []  # no GitHub repository configured, and a retry says nothing
    assert not cfg.liveness_lock(task).exists()  # the dead worker's, removed with its death


def test_failed_runs_retry_with_doubling_backoff_then_fail(sandbox, observer, fake_github):
    cfg = github_config(sandbox, fake_github, "exit1")
    sandbox.write_config(launcher={"max_attempts": 3, "retry_backoff": 10})
    cfg = sandbox.cfg
    add_issue_task(cfg, "gh-455", "Refactor parser")
    observer.start()
    waits = []
    for attempt in (1, 2):
        launch(cfg, "gh-455", attempt=attempt).wait()
        wait_for(lambda: settled(cfg, "gh-455", "announced"), what=f"attempt {attempt}")
        retry = parse_retry(line_of(cfg, "gh-455").detail("Retry"))
        assert section_of(cfg, "gh-455") == PENDING and retry.attempt == attempt + 1
        ended = datetime.fromisoformat(runs.read_run(cfg, "gh-455").meta["finished"])
        waits.append(round((retry.not_before - ended).total_seconds()))
    assert waits == [10, 20]
    last = launch(cfg, "gh-455", attempt=3)
    last.wait()
    wait_for(lambda: settled(cfg, "gh-455", "announced"), what="final failure")
    line = line_of(cfg, "gh-455")
    assert section_of(cfg, "gh-455") == FAILED
    assert line.detail("Failed").endswith("· attempt 3/3") and "result" in line.detail("Error")
    [(meta, body)] = comments_for(cfg, "gh-455")  # retries are silent; the failure is not
    assert meta["key"] == f"gh-455/{last.worker_id}/failed" and "attempt 3/3" in body
    assert [e["attempt"] for e in events(cfg, "task_retry")] == [2, 3]
    assert [e["attempt"] for e in events(cfg, "task_failed")] == [3]


def test_pr_marker_that_arrived_while_the_observer_was_down_is_applied_at_start(
        sandbox, observer, fake_github):
    cfg = github_config(sandbox, fake_github, "commit")
    add_issue_task(cfg, "gh-7", "Offline completion")
    launch(cfg, "gh-7").wait()
    assert runs.read_pr_marker(cfg, "gh-7") and section_of(cfg, "gh-7") == ACTIVE
    observer.start()
    wait_for(lambda: fully_applied(cfg, "gh-7"), what="completion at start")
    assert section_of(cfg, "gh-7") == COMPLETED and len(comments_for(cfg, "gh-7")) == 1


def test_only_the_pr_marker_naming_the_run_s_worker_completes_it(sandbox, observer):
    """A marker an earlier run left in the same second as this run's start (the record's
    ``started`` has whole seconds) is another run's: the run goes on until its own."""
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Active\n[🟡 w-0new00] t-21: Run again\n\n## Pending\n")
    with hold(cfg.liveness_lock("t-21")):  # this run's worker is alive
        write_record(cfg.run_record("t-21"), {"task": "t-21", "worker_id": "w-0new00",
                                              "attempt": 1, "started": now_iso()})
        runs.write_pr_marker(cfg, "t-21", worker_id="w-0old00", url="", number=None,
                             head="auto/t-21", commit="c0ffee0", found_by="worker")
        observer.start()
        observer_cycles(cfg)
        assert section_of(cfg, "t-21") == ACTIVE and not applied(cfg, "t-21")

        runs.write_pr_marker(cfg, "t-21", worker_id="w-0new00", url="", number=None,
                             head="auto/t-21", commit="5eed5ee", found_by="worker")
        wait_for(lambda: section_of(cfg, "t-21") == COMPLETED, what="this run's marker applied")
        assert line_of(cfg, "t-21").marker == "✅ 5eed5ee, w-0new00"


def test_an_editor_reverting_a_completion_gets_it_reapplied_without_a_second_comment(
        sandbox, observer, fake_github):
    cfg = github_config(sandbox, fake_github, "commit")
    add_issue_task(cfg, "gh-9", "Docs")
    observer.start()
    launch(cfg, "gh-9").wait()
    before = (sandbox.root / "tasks.md").read_text()  # the editor loaded this (Active)
    wait_for(lambda: fully_applied(cfg, "gh-9"), what="completion")
    completed = (sandbox.root / "tasks.md").read_text()
    assert section_of(cfg, "gh-9") == COMPLETED

    (sandbox.root / "tasks.md").write_text(before)  # ...and saves it over the completion
    wait_for(lambda: section_of(cfg, "gh-9") == COMPLETED, what="re-applied completion")
    assert (sandbox.root / "tasks.md").read_text() == completed
    observer_cycles(cfg)  # a duplicate would be queued by now
    assert len(comments_for(cfg, "gh-9")) == 1
    assert len(events(cfg, "task_completed")) == 1


def test_observer_killed_between_deciding_and_the_comment_queues_exactly_one(
        sandbox, observer, fake_github, tmp_path):
    """The outbox is made unwritable, so the observer decides the completion and then fails
    to queue the comment: the files are as a SIGKILL right there leaves them. The line is
    still Active: the move comes after the announcement."""
    cfg = github_config(sandbox, fake_github, "commit")
    add_issue_task(cfg, "gh-11", "Crashy")
    launch(cfg, "gh-11").wait()
    blocker = cfg.outbox_dir / "tmp"
    if blocker.is_dir():  # (the PR's item went through it, and is sent)
        blocker.rmdir()
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")
    first = observer.start()
    wait_for(lambda: applied(cfg, "gh-11") == ["completed"], what="the completion decided")
    wait_for(lambda: "cycle failed" in (tmp_path / "observer.log").read_text(),
             what="queueing the comment to fail")
    first.kill()
    assert section_of(cfg, "gh-11") == ACTIVE and outbox(cfg) == []

    blocker.unlink()
    observer.start()
    wait_for(lambda: fully_applied(cfg, "gh-11"), what="completion after restart")
    [(meta, _)] = comments_for(cfg, "gh-11")
    assert meta["key"].endswith("/completed")
    assert {e["key"] for e in events(cfg, "task_completed")} == {meta["key"]}  # counted once


def test_observer_killed_at_random_instants_still_ends_with_one_comment_key(
        sandbox, observer, fake_github):
    """SIGKILL at random moments around a completion, then a clean run: one comment (the
    fetcher sends a key once), one completion event, the task Completed."""
    cfg = github_config(sandbox, fake_github, "commit")
    add_issue_task(cfg, "gh-13", "Chaos")
    launch(cfg, "gh-13").wait()
    rng = random.Random(13)
    for _ in range(8):
        proc = observer.start()
        time.sleep(rng.uniform(0.0, 0.15))
        proc.kill()
    observer.start()
    wait_for(lambda: fully_applied(cfg, "gh-13"), what="completion")
    assert section_of(cfg, "gh-13") == COMPLETED
    assert {meta["key"] for meta, _ in comments_for(cfg, "gh-13")} == {
        f"gh-13/{runs.read_run(cfg, 'gh-13').meta['worker_id']}/completed"}
    assert len({e["key"] for e in events(cfg, "task_completed")}) == 1  # one key, counted once


def test_an_announcement_cut_short_by_a_crash_is_repeated_under_the_same_key(
        sandbox, observer):
    """Emitted, not yet recorded as announced: the next observer emits it again under the
    same key, and the metrics program counts it once."""
    cfg = sandbox.cfg
    emit(cfg.events_dir, "task_blocked", "t-3", question="Why?", key="t-3/w-abc123/blocked")
    write_record(cfg.run_record("t-3"), {
        "task": "t-3", "worker_id": "w-abc123", "attempt": 1, "outcome": "blocked",
        "applied": ["blocked"]})
    observer.start()
    wait_for(lambda: applied(cfg, "t-3") == ["blocked", "announced"], what="the announcement")
    assert [e["key"] for e in events(cfg)] == ["t-3/w-abc123/blocked"] * 2
    metrics = Metrics(cfg)
    metrics.fold_pending()
    assert metrics.tally.counts == {"task_blocked": 1}


def test_active_line_without_record_or_worker_goes_back_to_pending(sandbox, observer):
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Active\n[🟡 w-0dead0] t-4: Lost launch {p1}\n"
        "- Started: 2026-11-24 10:15:02 · attempt 1/3 · trees/t-4 · auto/t-4\n\n## Pending\n")
    observer.start()
    wait_for(lambda: section_of(cfg, "t-4") == PENDING, what="back to Pending")
    line = line_of(cfg, "t-4")
    assert line.marker == "" and line.details == [] and line.priority == 1


def test_active_line_with_a_live_worker_but_no_matching_record_is_left_alone(sandbox, observer):
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Active\n[🟡 w-000001] t-5: Being launched\n\n## Pending\n")
    with hold(cfg.liveness_lock("t-5")):
        observer.start()
        observer_cycles(cfg)
        assert section_of(cfg, "t-5") == ACTIVE


def test_a_record_for_a_task_a_person_deleted_is_left_alone(sandbox, observer):
    """Its outcome was shown (``shown``), then a person deleted the line: theirs."""
    cfg = sandbox.cfg
    applied = ["failed", "announced", "shown"]
    write_record(cfg.run_record("t-8"), {"task": "t-8", "worker_id": "w-abcdef", "attempt": 3,
                                         "outcome": "failed", "error": "boom",
                                         "finished": now_iso(), "applied": applied})
    before = (sandbox.root / "tasks.md").read_text()
    observer.start()
    observer_cycles(cfg)
    assert runs.read_run(cfg, "t-8").meta.get("applied") == applied
    assert (sandbox.root / "tasks.md").read_text() == before and events(cfg) == []


def test_completions_from_earlier_days_move_to_the_archive(sandbox, observer):
    cfg = sandbox.cfg
    now = datetime.now()
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d 17:38:45")
    today = now.strftime("%Y-%m-%d %H:%M:%S")
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Active\n\n## Pending\n[] t-9: Next\n\n## Completed Today\n"
        f"[✅ cbffe52, w-ee4608] gh-471: Add docstring\n- Completed: {yesterday}\n"
        "- PR: https://github.com/o/r/pull/473\n"
        f"[✅ 1234567, w-111111] t-2: Today's work\n- Completed: {today}\n- Pushed: auto/t-2\n")
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    archive = cfg.archive_dir / f"{day}.md"
    observer.start()
    wait_for(lambda: "gh-471" not in (sandbox.root / "tasks.md").read_text(), what="rollover")
    text = archive.read_text()
    assert f"[✅ cbffe52, w-ee4608] gh-471: Add docstring\n- Completed: {yesterday}\n" \
           "- PR: https://github.com/o/r/pull/473\n" in text
    assert "## Completed Today" in text and "t-2" not in text
    assert "t-2: Today's work" in (sandbox.root / "tasks.md").read_text()
    assert "gh-471" in archived_ids(cfg.archive_dir)


def test_rollover_after_a_crash_between_archive_and_tasks_md_duplicates_nothing(
        sandbox, observer):
    cfg = sandbox.cfg
    old = (datetime.now() - timedelta(days=3))
    entry = (f"[✅ cbffe52, w-ee4608] gh-5: Old work\n- Completed: "
             f"{old.strftime('%Y-%m-%d %H:%M:%S')}\n- PR: https://x/pull/5\n")
    archive = cfg.archive_dir / f"{old.strftime('%Y-%m-%d')}.md"
    archive.parent.mkdir(parents=True)
    archive.write_text(f"# Tasks completed on {old.strftime('%Y-%m-%d')}\n\n"
                       f"## Completed Today\n{entry}")
    (sandbox.root / "tasks.md").write_text(f"# Tasks\n\n## Completed Today\n{entry}")
    observer.start()
    wait_for(lambda: "gh-5" not in (sandbox.root / "tasks.md").read_text(), what="rollover")
    assert archive.read_text().count("gh-5: Old work") == 1


def test_a_single_instance_and_a_warm_sigterm(sandbox, observer, tmp_path):
    """(That a stop signal ends the wait at once, not at the next rescan, is
    tests/test_program.py's.)"""
    first = observer.start()
    proc = subprocess.run([sys.executable, "-m", "services.observer"], cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=20)  # $TAC8_CONFIG
    assert proc.returncode == 1 and "another instance" in proc.stderr
    assert first.stop() == 0
    log = (tmp_path / "observer.log").read_text()
    assert log.count("observer INFO stopped\n") == 1 and "Traceback" not in log


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo"])
def test_a_stop_that_is_a_fifo_stops_the_worker_and_no_program_hangs(sandbox, observer,
                                                                      tmp_path, kind):
    """STOP as a FIFO (an open() would block for ever) or a symlink to one: its presence
    means stop, it is never opened, and the observer keeps cycling."""
    cfg = use_agent(sandbox, "hang", stop_grace=0.3)
    task = add_task(cfg, "Hostile tree")
    observer.start()
    worker = launch(cfg, task)
    wait_for(lambda: worker.agent(), what="the agent to run")
    stop = cfg.tree(task) / "STOP"
    if kind == "fifo":
        os.mkfifo(stop)
    else:
        os.mkfifo(tmp_path / "pipe")
        stop.symlink_to(tmp_path / "pipe")
    assert worker.wait(15) == 0
    wait_for(lambda: section_of(cfg, task) == STOPPED, what="stopped")
    wait_cycles(cfg, "observer", 2, nudge=lambda: os.utime(cfg.tasks_file))
