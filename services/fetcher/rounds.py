"""Rounds: new feedback becomes the task's next round (the fetcher's pass, each poll).

A task's feedback (``shared.feedback``: answers, reviews, failing checks, PR requests) waits
while the task is Pending (its launch carries every open item) or Active (the run going on
may not have seen it), and is held while a person keeps the task Stopped. Otherwise —
Completed Today, Blocked, Failed, or gone from tasks.md (archived) — *new* items start a
round: under the feedback file's lock they are marked ``started`` (a rework round is counted
when a review, check or PR request is among them) and the round is noted as ``moving``;
then the task goes back to Pending (its line keeps a marker naming the last run's worker, as
a person's requeue does). ``moving`` is cleared once the task is Pending or Active, so a
crash in between redoes only the move. Items already started start nothing: a task whose
round ended Blocked or Failed waits for an answer or a person, never loops. Past
``[launcher] max_rework_rounds`` the task goes to Failed instead, with a comment
(``giving_up``, redone likewise). Items a run carried (its record's ``feedback``) are
``done`` once that run completed. Feedback for a task whose issue was closed, deleted or
unlabelled is dropped (marked done). The cost is O(tasks with feedback), and an unchanged
file is only read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shared import outbox, runs, tasks
from shared.clock import stamp
from shared.config import Config
from shared.events import emit
from shared.feedback import REWORK, Feedback, Item, forget, read_feedback, update_feedback
from shared.issues import read_issue, task_withdrawn

log = logging.getLogger("fetcher")

WAITING = (tasks.PENDING, tasks.ACTIVE, tasks.STOPPED)  # no round starts from here


def start_rounds(cfg: Config) -> None:
    folder = cfg.feedback_file("x").parent
    if not folder.is_dir():
        return
    board = tasks.read_board(cfg.tasks_file)
    for path in sorted(folder.glob("*.md")):
        task = path.stem
        found = board.find(task)
        settle(cfg, task, found[0] if found else None)


@dataclass
class Round:
    """What one look at a task's feedback decided (under its lock); acted on after."""
    opened: list[Item] = field(default_factory=list)  # a round to start: what it carries
    over_limit: list[Item] = field(default_factory=list)  # new rework past the limit
    rounds: int = 0


def settle(cfg: Config, task: str, section: str | None) -> None:
    record = runs.read_run(cfg, task)
    meta = record.meta if record else {}
    withdrawn = task_withdrawn(cfg, task)
    if not _has_work(read_feedback(cfg, task), meta, section, withdrawn):
        if section is None and record is None:
            forget(cfg, task)  # a gone task with nothing open: no one else would retire it
        return
    decided = update_feedback(cfg, task, lambda fb: decide(cfg, fb, meta, section, withdrawn))
    if decided.over_limit:
        give_up(cfg, task, decided.over_limit, meta)
        update_feedback(cfg, task, lambda fb: _gave_up(fb, decided.over_limit))
    elif decided.opened:
        start(cfg, task, decided, meta)


def _has_work(feedback: Feedback, meta: dict, section: str | None, withdrawn: str | None) -> bool:
    """Whether ``decide`` could change anything (a read without the lock, every poll)."""
    opened = feedback.open_items()
    completed = "completed" in (meta.get("applied") or [])
    return bool(feedback.moving or feedback.giving_up or (opened and (
        withdrawn or (completed and any(i.key in (meta.get("feedback") or []) for i in opened))
        or (section not in WAITING and any(not i.started for i in opened))
        or (section in WAITING and feedback.moving))))


def decide(cfg: Config, feedback: Feedback, meta: dict, section: str | None,
           withdrawn: str | None) -> Round:
    carried = set(meta.get("feedback") or [])
    if carried & set(feedback.moving):
        feedback.moving = []  # a run was launched for the round: its move happened
    if "completed" in (meta.get("applied") or []):
        for item in feedback.items:
            if item.key in carried:
                item.done = True
    opened = feedback.open_items()
    if withdrawn:  # the issue was closed or unlabelled: nothing more is done for it
        for item in opened:
            item.started = item.done = True
        feedback.moving, feedback.giving_up = [], []
        return Round()
    if feedback.giving_up:
        return Round(over_limit=[i for i in feedback.items if i.key in feedback.giving_up])
    if section in WAITING:
        feedback.moving = []  # the round's move happened (or a person moved the task)
        return Round()
    if feedback.moving:
        return Round(opened=opened, rounds=feedback.rework_rounds)
    new = [item for item in opened if not item.started]
    if not new:
        return Round()
    for item in new:
        item.started = True
    if any(item.kind in REWORK for item in new):
        if feedback.rework_rounds >= cfg.launcher.max_rework_rounds:
            feedback.giving_up = [item.key for item in new]
            return Round(over_limit=new)
        feedback.rework_rounds += 1
    feedback.moving = [item.key for item in opened]
    return Round(opened=opened, rounds=feedback.rework_rounds)


def _gave_up(feedback: Feedback, items: list[Item]) -> None:
    keys = {item.key for item in items}
    for item in feedback.items:
        if item.key in keys:
            item.done = True
    feedback.giving_up = []


def start(cfg: Config, task: str, decided: Round, meta: dict) -> None:
    """The task back to Pending for the round (idempotent: a crash redoes only this)."""
    limit = cfg.launcher.max_rework_rounds
    sources = "; ".join(item.source or item.kind for item in decided.opened)
    rework = any(item.kind in REWORK for item in decided.opened)
    what = f"rework round {decided.rounds}/{limit}: {sources}" if rework else sources
    title = str(meta.get("title") or _issue_title(cfg, task) or task)
    if tasks.edit_tasks(cfg, lambda board: requeue(board, task, title, meta.get("worker_id"),
                                                   what)):
        log.info("%s: back to Pending (%s)", task, what)
        emit(cfg.events_dir, "task_requeued", task, reason="rework" if rework else "answer",
             round=decided.rounds, feedback=[item.key for item in decided.opened])


def requeue(board: tasks.Board, task: str, title: str, worker: str | None, what: str) -> bool:
    """Pure change: the task back to Pending for its next round, from wherever it is (or
    added, if it was archived); False if it is Pending, Active or Stopped now."""
    found = board.find(task)
    if found and found[0] in WAITING:
        return False
    marker = f"↻ {worker}" if worker else ""
    details = [("Feedback", what)]
    if found:
        board.move(found[1], tasks.PENDING, marker=marker, details=details)
    else:
        board.add(title, task_id=task, details=details).marker = marker
    return True


def give_up(cfg: Config, task: str, new: list[Item], meta: dict) -> None:
    """Past max_rework_rounds: the task is Failed and a comment, on its PR (else its issue),
    says why (each step keyed or conditional: redone after a crash, it does nothing twice)."""
    limit = cfg.launcher.max_rework_rounds
    reason = (f"rework limit reached: {limit} round(s) ([launcher] max_rework_rounds); "
              f"not done: {'; '.join(item.source or item.kind for item in new)}")

    def fail(board: tasks.Board) -> bool:
        found = board.find(task)
        if found is None or found[0] in WAITING or found[0] == tasks.FAILED:
            return False
        board.move(found[1], tasks.FAILED,
                   marker=tasks.make_marker(tasks.FAILED, meta.get("worker_id")),
                   details=[("Failed", stamp()), ("Error", reason)])
        return True

    key = f"{task}/rework-limit/{new[0].key}"
    if tasks.edit_tasks(cfg, fail):
        log.warning("%s: %s", task, reason)
    emit(cfg.events_dir, "task_failed", task, error=reason, key=key)
    target = _pr_number(cfg, task) or tasks.issue_number(task)
    if target is not None and cfg.github.repo:
        outbox.queue_comment(cfg, target, task, key,
                             f"tac8 stops reworking this: {reason}. A person takes it from here "
                             f"(or raise the limit and move {task} back to Pending).")


def _pr_number(cfg: Config, task: str) -> int | None:
    marker = runs.read_pr_marker(cfg, task) or {}
    number = marker.get("number")
    return int(number) if isinstance(number, int) else None


def _issue_title(cfg: Config, task: str) -> str | None:
    number = tasks.issue_number(task)
    snapshot = read_issue(cfg, number) if number is not None else None
    return str(snapshot.meta.get("title") or "") if snapshot else None
