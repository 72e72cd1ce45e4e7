"""The observer hands a task back (to Pending) only after the run's events are delivered.

One observer pass runs in this process (``TaskObserver.cycle``) with the launcher simulated
at the worst instant: its fresh run record for the next attempt is written the moment the
observer's move puts the line in Pending (inside the same ``edit_tasks`` call)."""

from __future__ import annotations

import logging

import pytest

from services import observer as observer_module
from shared import runs
from shared.events import emit, run_key
from shared.records import write_record
from shared.tasks import ACTIVE, PENDING, edit_tasks, make_marker
from tests.test_observer_support import events, section_of


class InProcess:
    """The part of ``shared.program.Program`` the observer's pass uses."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.log = logging.getLogger("observer-test")

    def watch(self, *args, **kwargs):
        return object()

    def unwatch(self, handle):
        pass


def relaunch_on_move(monkeypatch, cfg, task):
    """Make the observer's tasks.md edits start the next attempt once the line is Pending."""
    real_edit = observer_module.edit_tasks

    def edit_then_relaunch(cfg_, change):
        result = real_edit(cfg_, change)
        if section_of(cfg, task) == PENDING:
            runs.start_run(cfg, task, {"task": task, "worker_id": "w-next00", "attempt": 2})
        return result
    monkeypatch.setattr(observer_module, "edit_tasks", edit_then_relaunch)


def active_failed_run(cfg, task, **meta):
    edit_tasks(cfg, lambda board: board.move(board.add("Flaky", task_id=task), ACTIVE,
                                             marker=make_marker(ACTIVE, "w-first0")))
    write_record(cfg.run_record(task), {"task": task, "worker_id": "w-first0", "attempt": 1,
                                        "outcome": "failed", "error": "exit 1", **meta})


@pytest.mark.parametrize("crashed", [False, True],
                         ids=["retry", "retry-after-a-crash-between-run_finished-and-the-record"])
def test_a_retry_is_announced_even_when_the_next_attempt_starts_at_once(
        sandbox, monkeypatch, crashed):
    cfg, task = sandbox.cfg, "t-1"
    if crashed:  # an observer emitted a dead worker's run_finished, then died before recording
        emit(cfg.events_dir, "run_finished", task, outcome="failed",
             key=run_key(task, "w-first0", "run_finished"))
        active_failed_run(cfg, task, outcome=None, error=None)
    else:
        active_failed_run(cfg, task)
    relaunch_on_move(monkeypatch, cfg, task)

    observer_module.TaskObserver(InProcess(cfg)).cycle()

    assert section_of(cfg, task) == PENDING
    assert runs.read_run(cfg, task).meta["worker_id"] == "w-next00"  # the launch happened
    [retry] = events(cfg, "task_retry")
    assert retry["attempt"] == 2 and retry["worker_id"] == "w-first0"
    finished = events(cfg, "run_finished")
    assert {e["key"] for e in finished} == ({f"{task}/w-first0/run_finished"} if crashed else set())
