"""The launcher's hand-offs: a blocked task answered and launched again, a claim that fails,
a launch that raises, the launch event, and the pause toggle under its lock."""

from __future__ import annotations

import logging
import threading

from services import launcher as launcher_module
from services.launcher import Launcher
from shared import runs, worktree
from shared.fsio import pending
from shared.locks import file_lock, hold
from shared.pause import read_pause, toggle
from shared.records import read_record, write_record
from shared.retry import parse_retry
from shared.tasks import ACTIVE, BLOCKED, PENDING, edit_tasks, read_board
from tests.agents import events_of, wait_for
from tests.test_launcher import finished, launchers, nothing_left_behind, pids, queue, \
    setup  # noqa: F401  (fixtures)

QUESTION = "# Which database?\nPostgres or SQLite?\n"


def test_an_answered_blocked_task_runs_with_its_question_set_aside(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit")
    with hold(cfg.liveness_lock("t-1")) as lock:
        tree = worktree.ensure_worktree(cfg, "t-1", lock)
    # The last run asked; its worker set the question aside (and died before it took
    # BLOCKED.md out of the tree). A person answered and moved the task back to Pending.
    write_record(cfg.run_record("t-1"), {"task": "t-1", "worker_id": "w-before", "attempt": 1,
                                         "outcome": "blocked"})
    runs.question_file(cfg, "t-1").write_text(QUESTION)
    (tree / "BLOCKED.md").write_text(QUESTION)
    queue(sandbox, "[] t-1: Store sessions (answer: SQLite)")
    launchers.start(cfg)
    wait_for(lambda: runs.read_run(cfg, "t-1").meta["worker_id"] != "w-before"
             and finished(cfg, "t-1"), what="the new run to end")

    assert runs.read_run(cfg, "t-1").meta["outcome"] == runs.PR  # not blocked again
    assert not (tree / "BLOCKED.md").exists()
    assert runs.question_file(cfg, "t-1").read_text() == QUESTION
    prompt = runs.prompt_file(cfg, "t-1").read_text()
    assert "> # Which database?\n> Postgres or SQLite?" in prompt
    assert "Task: Store sessions (answer: SQLite)" in prompt


class InProcess:
    """The part of ``shared.program.Program`` a launch uses."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.log = logging.getLogger("launcher-test")


def test_a_claim_that_fails_leaves_the_last_run_s_record_alone(sandbox, pids):
    cfg = setup(sandbox, pids, "commit")
    queue(sandbox, "[] t-1: Moved while launching")
    old = {"task": "t-1", "worker_id": "w-before", "attempt": 1, "outcome": "blocked",
           "cost_usd": 0.42, "applied": ["blocked", "announced"]}
    write_record(cfg.run_record("t-1"), old)
    task = read_board(cfg.tasks_file).get("t-1")  # what the launcher read, then a person
    edit_tasks(cfg, lambda board: board.move(board.get("t-1"), BLOCKED, marker=""))  # moved it

    assert Launcher(InProcess(cfg)).launch(task) is False
    assert runs.read_run(cfg, "t-1").meta == old
    assert events_of(cfg, "worker_launched") == []


class InProcessLoop(InProcess):
    """What a whole launcher cycle uses besides."""

    stopping = False

    def wake(self):
        pass


def test_a_launch_that_raises_sets_its_task_aside_and_the_cycle_goes_on(
        sandbox, pids, monkeypatch, caplog):
    cfg = setup(sandbox, pids, "commit")
    queue(sandbox, "[] t-1: Its launch meets a bug {p0}", "[] t-2: Launched anyway")
    real = launcher_module.prompt_values

    def buggy(cfg, task, *args, **kwargs):
        if task == "t-1":
            raise RuntimeError("a bug nobody foresaw")
        return real(cfg, task, *args, **kwargs)

    monkeypatch.setattr(launcher_module, "prompt_values", buggy)
    launcher = Launcher(InProcessLoop(cfg))
    launcher.cycle()
    launcher.children["t-2"].wait(30)

    board = read_board(cfg.tasks_file)
    assert board.find("t-2")[0] == ACTIVE and finished(cfg, "t-2")
    section, t1 = board.find("t-1")
    assert section == PENDING
    assert t1.detail("Error") == \
        "launch failed: unexpected error: RuntimeError: a bug nobody foresaw"
    assert parse_retry(t1.detail("Retry")).attempt == 1
    assert [e["task"] for e in events_of(cfg, "launch_failed")] == ["t-1"]
    assert "Traceback" in caplog.text  # a bug: logged with where it happened


def test_a_launch_delivers_one_event_naming_its_worker_and_pid(sandbox, pids, launchers):
    cfg = setup(sandbox, pids)
    queue(sandbox, "[] t-1: Counted once")
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-1") and not runs.worker_alive(cfg, "t-1"),
             what="the worker to end")
    [path] = [p for p in pending(cfg.events_dir) if read_record(p).meta["type"]
              == "worker_launched"]
    launched, meta = read_record(path).meta, runs.read_run(cfg, "t-1").meta
    assert launched["pid"] == meta["pid"] and launched["worker_id"] == meta["worker_id"]
    assert not (cfg.events_dir / "tmp" / path.name).exists()


def test_toggle_reads_and_writes_under_the_pause_lock(sandbox):
    """A person's ``tac8 pause`` holds the lock while the launcher's toggle starts: the toggle
    reads the state only once the lock is free, so it sees the person's pause and resumes,
    instead of writing its own pause over it."""
    cfg = sandbox.cfg
    with file_lock(cfg.locks_dir / "PAUSE.lock"):  # `tac8 pause` writing right now
        thread = threading.Thread(target=toggle, args=(cfg, "launcher", "by SIGUSR1"))
        thread.start()
        write_record(cfg.pause_file, {"by": "cli", "reason": "a person's pause"})
    thread.join(10)
    assert read_pause(cfg) is None
    assert [(e["by"], e["reason"]) for e in events_of(cfg, "resumed")] == \
        [("launcher", "resumed by SIGUSR1")]
    assert toggle(cfg, "launcher", "by SIGUSR1") is True
    assert read_pause(cfg)["reason"] == "paused by SIGUSR1"
