"""The observer: ended runs, PR markers and STOP files become tasks.md moves, events, issue
comments and cleanup. It owns every transition out of Active, and never calls GitHub.

``python -m services.observer [--config PATH]``. The transition table, the run record's
``applied`` steps (decide, announce, move, clean) and the event keys: docs/PROTOCOL.md.

* ``STOP`` in the tree of an Active or running task: SIGTERM to the worker, sent through a
  pidfd and only while its liveness lock is held, so a reused PID is never hit. Touching STOP
  again signals again; a STOP with no live worker is recorded (``stop_requested``).
* A worker whose lock is free while its record has no outcome died: the observer records
  ``outcome: failed`` ("worker died") and emits its ``run_finished``.
* Day rollover: earlier days' Completed Today entries are written to ``state/archive/`` first,
  then removed from tasks.md, so a crash in between duplicates nothing.
* Retention: the files of a task gone from tasks.md move to ``state/archive/tasks/<task>/``
  and are deleted ``[paths] keep_days`` later (``shared.retention``).

Wake-ups: tasks.md, ``state/runs``, ``state/live``, ``state/prs`` and, non-recursively so an agent's builds cost
no inotify watches, the trees folder and each watched tree. Reads never wake it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable

from watchdog.events import FileClosedEvent, FileDeletedEvent

from shared import issues, retention, runs, treefiles
from shared.clock import now_iso, parse_iso, stamp
from shared.config import Config
from shared.errors import describe
from shared.events import emit, run_key
from shared.feedback import REWORK, read_feedback
from shared.locks import remove_if_free
from shared.outbox import queue_comment
from shared.program import Program
from shared.records import Record, RecordError, read_record
from shared.retry import Retry, next_retry, retry_value
from shared.tasks import (ACTIVE, BLOCKED, COMPLETED, FAILED, PENDING, STOPPED, Board,
                          archive_earlier_days, edit_tasks, issue_number, make_marker, read_board,
                          sanitize_title)
from shared.text import code_block, printable
from shared.worktree import remove_worktree

RESCAN_EVERY = 60.0  # seconds between rescans when no event arrives (events are hints)
PRUNE_EVERY = 3600.0  # seconds between looks for retired files past keep_days
STOP_FILE, BLOCKED_FILE = treefiles.STOP, treefiles.BLOCKED
COMMENT_LIMIT = 4000  # characters of an agent's question or an error quoted in a comment
QUESTION_LINE_LIMIT = 300  # characters of the question on a Blocked line
# Markdown lines that are layout, not a question: a heading, a rule or setext underline, a fence
_NOT_TEXT = re.compile(r"#{1,6}(?:\s|$)|[-=*_ \t]{3,}$|`{3,}|~{3,}")

# Terminal transitions of a run, and the steps after one ("applied" entries).
DONE, HELD, HALTED, RETRY, GAVE_UP = "completed", "blocked", "stopped", "retry", "failed"
TERMINAL = (DONE, HELD, HALTED, RETRY, GAVE_UP)
ANNOUNCED, CLEANED, SHOWN = "announced", "cleaned", "shown"


# --- what a transition does ---------------------------------------------------------------

@dataclass(frozen=True)
class Move:
    """Move ``task`` out of Active, if its line there names ``worker`` (or no worker). A
    re-application (``anywhere``) moves the line from wherever a save put it, as long as it
    does not name ``worker`` outside Active (then a person moved this run's line: theirs),
    and adds it back (with ``title``) if the save dropped it."""

    task: str
    worker: str | None
    section: str
    marker: str
    details: tuple[tuple[str, str], ...]
    anywhere: bool = False
    title: str = ""


@dataclass(frozen=True)
class Plan:
    """A terminal transition of one run, worked out from the files alone (so it comes out
    the same when it is re-applied or announced after a crash)."""

    transition: str
    move: Move
    event: tuple[str, dict[str, Any]]
    comment: str | None
    comment_on: int | None = None  # the issue or PR it goes to; None: the task's issue


def same_worker(line_worker: str | None, record_worker: str | None) -> bool:
    return line_worker is None or record_worker is None or line_worker == record_worker


def apply_moves(moves: list[Move], board: Board) -> list[str]:
    """Pure change for ``edit_tasks``: carry out the moves whose line is still Active."""
    moved = []
    for move in moves:
        found = board.find(move.task)
        if move.anywhere and found is None:
            line = board.add(move.title or move.task, task_id=move.task, section=move.section)
            found = (move.section, line)
        elif move.anywhere and found[0] != ACTIVE:
            if found[1].worker == move.worker:
                continue
        elif found is None or found[0] != ACTIVE or not same_worker(found[1].worker, move.worker):
            continue
        board.move(found[1], move.section, marker=move.marker, details=move.details)
        moved.append(move.task)
    return moved


def _short(sha: Any) -> str | None:
    return str(sha)[:7] if sha else None


def _ended(meta: dict[str, Any]) -> datetime:
    """When the run ended (the worker's ``finished``; now if it never said)."""
    return parse_iso(meta.get("finished")) or datetime.now().astimezone()


def _attempt(meta: dict[str, Any]) -> int:
    return int(meta.get("attempt") or 1)


def _error(meta: dict[str, Any]) -> str:
    return str(meta.get("error") or "exited without a PR")


def question_line(question: str) -> str:
    """What a Blocked line shows of an agent's question: its first line that is text (not
    blank, not Markdown layout such as a ``# Blocked`` heading), sanitised to one line; ""
    when there is none."""
    for line in question.splitlines():
        text = line.strip()
        if text and not _NOT_TEXT.match(text):
            return sanitize_title(printable(text), limit=QUESTION_LINE_LIMIT)
    return ""


def _agent_text(text: str) -> str:
    """What an agent wrote (its question, an error quoting its output) as a comment shows it:
    at most ``COMMENT_LIMIT`` characters, in a code block that mentions nobody and forges no
    marker (``shared.text.code_block``)."""
    text = text.strip()
    if len(text) > COMMENT_LIMIT:
        text = text[:COMMENT_LIMIT].rstrip() + " …"
    return code_block(text or "(empty)")


# --- watch filters (reads never wake: our own probes would loop) --------------------------

def _not_a_read(event: Any) -> bool:
    return event.event_type not in ("opened", "closed_no_write")


def _names(event: Any) -> set[str]:
    return {os.path.basename(p) for p in (event.src_path, getattr(event, "dest_path", "")) if p}


def _about(name: str) -> Callable[[Any], bool]:
    return lambda event: _not_a_read(event) and name in _names(event)


# --- run records, re-read only when they change --------------------------------------------

class RunRecords:
    """The run records by task. A rescan stats every record but parses only changed ones."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self._cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def scan(self) -> dict[str, dict[str, Any]]:
        fresh: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        try:
            entries = list(os.scandir(self.runs_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not entry.name.endswith(".md") or entry.name.startswith(".") \
                    or entry.name.endswith(runs.QUESTION_SUFFIX):
                continue
            try:
                st = entry.stat()
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                cached = self._cache.get(entry.name)
                if cached is None or cached[0] != key:
                    cached = (key, read_record(Path(entry.path)).meta)
            except (FileNotFoundError, RecordError):
                continue
            fresh[entry.name] = cached
        self._cache = fresh
        return {name[:-3]: meta for name, (_, meta) in fresh.items()}


# --- the observer ------------------------------------------------------------------------

class TaskObserver:
    def __init__(self, prog: Program):
        self.prog = prog
        self.cfg: Config = prog.cfg
        self.log = prog.log
        self.records = RunRecords(self.cfg.runs_dir)
        self.tree_watches: dict[Path, tuple[int, Any]] = {}  # dir -> (inode, handle)
        self.stops: dict[str, tuple[tuple, bool]] = {}  # task -> (STOP request, signalled)
        self.next_prune = 0.0  # monotonic time of the next look for expired retired files

    def start(self) -> None:
        cfg = self.cfg
        self.prog.watch(cfg.tasks_file.parent, wanted=_about(cfg.tasks_file.name))
        self.prog.watch(cfg.runs_dir, wanted=_not_a_read)
        # a worker's end: it removes its liveness lock, or its death closes it
        self.prog.watch(cfg.live_dir, event_filter=[FileDeletedEvent, FileClosedEvent])
        self.prog.watch(cfg.prs_dir, wanted=_not_a_read)

    # One rescan. Cheap when nothing changed: one parse of tasks.md, a stat per run record
    # and per watched tree, a flock probe per Active or unfinished run.
    def cycle(self) -> None:
        board = read_board(self.cfg.tasks_file)
        active = {t.id: t for t in board.tasks(ACTIVE) if t.id}
        records = self.records.scan()
        running = {task for task, meta in records.items()
                   if not meta.get("outcome") and runs.worker_alive(self.cfg, task)}
        watched = sorted(set(active) | running)
        self.sync_watches(watched)
        for task in set(self.stops) - set(watched):
            del self.stops[task]
        for task in watched:
            self.check_stop(task, records.get(task))

        moves = []
        for task, line in active.items():
            meta = records.get(task)
            if meta is None or not same_worker(line.worker, meta.get("worker_id")):
                if not runs.worker_alive(self.cfg, task):
                    self.log.info("%s: Active with no run record and no live worker: "
                                  "back to Pending", task)
                    moves.append(Move(task, line.worker, PENDING, "", ()))
                continue
            transition = self.terminal(meta) or self.decide(task, meta)
            if transition:
                moves.append(self.plan(task, self.current(task), transition).move)
        moves += self.shown_elsewhere(board, records)
        if moves:
            records = self.records.scan()  # with what deciding wrote
        # Announce before moving: once a line is back in Pending the launcher may start the
        # next attempt, whose fresh run record would leave this run's event nowhere to go.
        for task, meta in records.items():
            self.follow_up(task, meta)
        if moves:
            moved = edit_tasks(self.cfg, partial(apply_moves, moves))
            if moved:
                self.log.info("moved out of Active: %s", ", ".join(moved))
            for move in moves:
                if move.task in moved:
                    self.add_applied(move.task, move.worker, SHOWN)
        archived = archive_earlier_days(self.cfg, board)
        if archived:
            self.log.info("archived %d completion(s) from earlier days", archived)
        self.retire_gone(board, records)

    def retire_gone(self, board: Board, records: dict[str, dict[str, Any]]) -> None:
        """Move the files of tasks that left tasks.md into the archive (``shared.retention``),
        and delete those retired more than ``keep_days`` ago (once an hour)."""
        listed, now = board.ids(), time.time()
        retired = [task for task, meta in records.items()
                   if task not in listed and retention.due(meta, now)
                   and retention.retire(self.cfg, task)]
        if retired:
            self.log.info("retired the files of %s (gone from tasks.md) to %s",
                          ", ".join(sorted(retired)), retention.retired_dir(self.cfg, "*"))
        if time.monotonic() >= self.next_prune:
            self.next_prune = time.monotonic() + PRUNE_EVERY
            pruned = retention.prune(self.cfg, self.cfg.paths.keep_days)
            if pruned:
                self.log.info("deleted the files of %d task(s) retired more than %d days ago",
                              len(pruned), self.cfg.paths.keep_days)

    def shown_elsewhere(self, board: Board, records: dict[str, dict[str, Any]]) -> list[Move]:
        """The board is level-triggered: a run that ended has its outcome shown even when a
        save put a stale copy of its line elsewhere (an editor's buffer read before the
        launch puts it back in Pending) or dropped it (``runs.stale_copy``). A line that
        names this run's worker was moved by a person (back to Pending, to requeue it): that
        stays theirs; so does a line they deleted once the outcome was shown."""
        where = {t.id: (s, t) for s, t in board.sections() if t.id}
        moves = []
        for task, meta in records.items():
            found = where.get(task)
            if found and found[0] == ACTIVE:
                continue
            if found is None and (SHOWN in (meta.get("applied") or [])
                                  or not runs.stale_copy(meta, None)):
                continue
            if found and not runs.stale_copy(meta, found[1].worker):
                continue
            transition = self.terminal(meta) or self.decide(task, meta)
            if transition is None:
                continue
            move = self.plan(task, self.current(task), transition).move
            if found and found[0] == move.section:
                continue
            self.log.warning("%s: a save put its line %s; showing its outcome (%s) again",
                             task, f"in {found[0]}" if found else "out of tasks.md", transition)
            moves.append(replace(move, anywhere=True, title=str(meta.get("title") or task)))
        return moves

    def current(self, task: str) -> dict[str, Any]:
        record = runs.read_run(self.cfg, task)
        return record.meta if record else {}

    # --- tree watches and STOP ---
    def sync_watches(self, tasks: list[str]) -> None:
        """Watch the trees folder and the tree of each of ``tasks`` (non-recursively)."""
        wanted: dict[Path, Callable[[Any], bool]] = {self.cfg.trees_dir: _not_a_read}
        wanted.update({self.cfg.tree(task): _about(STOP_FILE) for task in tasks})
        for path, (inode, handle) in list(self.tree_watches.items()):
            try:
                same = path in wanted and os.stat(path).st_ino == inode
            except OSError:
                same = False
            if not same:  # gone, replaced (a watch on a deleted directory is dead) or unwanted
                self.prog.unwatch(handle)
                del self.tree_watches[path]
        for path, wanted_events in wanted.items():
            if path in self.tree_watches:
                continue
            try:
                inode = os.stat(path).st_ino
                handle = self.prog.watch(path, wanted=wanted_events, create=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            self.tree_watches[path] = (inode, handle)

    def check_stop(self, task: str, meta: dict[str, Any] | None) -> None:
        try:
            st = os.lstat(self.cfg.tree(task) / STOP_FILE)  # never opened: the tree is hostile
        except (FileNotFoundError, NotADirectoryError):
            self.stops.pop(task, None)
            return
        worker_id = (meta or {}).get("worker_id")
        request = (worker_id, st.st_ino, st.st_mtime_ns)  # touching STOP again is a new one
        seen = self.stops.get(task)
        alive = runs.worker_alive(self.cfg, task)
        new = seen is None or seen[0] != request
        if not new and (seen[1] or not alive):
            return
        signalled = alive and self.signal_worker(task, (meta or {}).get("pid"))
        self.stops[task] = (request, signalled)
        if new or signalled:
            self.log.info("%s: STOP: %s", task, "worker signalled" if signalled
                          else "worker alive, no pid yet" if alive else "no live worker")
            emit(self.cfg.events_dir, "stop_requested", task, worker_id=worker_id,
                 alive=alive, signalled=signalled)

    def signal_worker(self, task: str, pid: Any) -> bool:
        """SIGTERM to the task's worker; True if sent."""
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone already
            return False
        try:
            # The pidfd pins the process; if the liveness lock is still held after it was
            # opened, ``pid`` is the live worker and not a reused number.
            if not runs.worker_alive(self.cfg, task):
                return False
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)

    # --- deciding ---
    @staticmethod
    def terminal(meta: dict[str, Any]) -> str | None:
        applied = meta.get("applied") or []
        return next((t for t in applied if t in TERMINAL), None)

    def pr_marker(self, task: str, meta: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
        """The task's PR marker and its mtime, if it belongs to this run: it names the run's
        worker (a marker left by an earlier run, however recent, must not finish a new one)."""
        path = self.cfg.pr_marker(task)
        try:
            marker, mtime = read_record(path).meta, path.stat().st_mtime
        except (FileNotFoundError, RecordError):
            return None
        if not meta.get("worker_id") or marker.get("worker_id") != meta.get("worker_id"):
            return None
        return marker, mtime

    def decide(self, task: str, meta: dict[str, Any]) -> str | None:
        """The terminal transition this run has reached, now recorded in ``applied``; None
        while it is still going."""
        found = self.pr_marker(task, meta)
        refused = (found[0].get("error") or None) if found else None
        if found is not None and not refused:
            verdict = DONE
        else:
            outcome = runs.FAILED if refused else meta.get("outcome")
            if outcome is None:
                if runs.worker_alive(self.cfg, task):
                    return None
                outcome = self.record_death(task, meta.get("worker_id"))
                if outcome is None:
                    return None
            if outcome == runs.PR and self.cfg.github.repo:
                return None  # pushed: the fetcher opens its PR, whose marker completes it
            verdict = {runs.PR: DONE, runs.BLOCKED: HELD, runs.STOPPED: HALTED}.get(outcome)
            if verdict is None:  # failed (or an outcome this observer does not know)
                if treefiles.present(self.cfg.tree(task) / STOP_FILE):
                    verdict = HALTED  # a person asked for a stop: no retry
                elif meta.get("usage_limit") or _attempt(meta) < self.cfg.launcher.max_attempts:
                    verdict = RETRY  # a run the usage limit cut short burns no attempt
                else:
                    verdict = GAVE_UP

        def record(rec: Record) -> str | None:
            if rec.meta.get("worker_id") != meta.get("worker_id"):
                return None  # a new attempt replaced the record meanwhile
            decided = self.terminal(rec.meta)
            if decided is None:
                rec.meta["applied"] = [*(rec.meta.get("applied") or []), verdict]
                if refused:
                    rec.meta["error"] = refused
                decided = verdict
            return decided

        decided = runs.update_run(self.cfg, task, record)
        if decided:
            self.log.info("%s: %s (worker %s)", task, decided, meta.get("worker_id"))
        return decided

    def record_death(self, task: str, worker_id: Any) -> str | None:
        """Write ``outcome: failed`` for a worker that died without one; the outcome now on
        record (None if the record is another run's)."""
        cfg = self.cfg

        def change(rec: Record) -> str | None:
            if rec.meta.get("worker_id") != worker_id:
                return None
            if rec.meta.get("outcome"):
                return rec.meta["outcome"]
            if runs.worker_alive(cfg, task):
                return None
            started = parse_iso(rec.meta.get("started"))
            seconds = (datetime.now().astimezone() - started).total_seconds() if started else None
            # Emitted before the outcome is recorded: a crash in between emits it again
            # under the same key, which metrics counts once.
            emit(cfg.events_dir, "run_finished", task, outcome=runs.FAILED, error="worker died",
                 seconds=round(seconds, 1) if seconds else None, worker_id=worker_id,
                 key=run_key(task, worker_id, "run_finished"))
            rec.meta.update(outcome=runs.FAILED, error="worker died", finished=now_iso())
            return runs.FAILED

        outcome = runs.update_run(cfg, task, change)
        if outcome == runs.FAILED:
            self.log.warning("%s: worker %s died without an outcome", task, worker_id)
        if outcome:
            remove_if_free(cfg.liveness_lock(task))  # the dead worker's, if it left it
        return outcome

    # --- what a decided transition means ---
    def plan(self, task: str, meta: dict[str, Any], transition: str) -> Plan:
        """The move, event and comment of ``transition`` for the run in ``meta``."""
        return {DONE: self.plan_completed, HELD: self.plan_blocked, HALTED: self.plan_stopped,
                RETRY: self.plan_retry, GAVE_UP: self.plan_failed}[transition](task, meta)

    def plan_completed(self, task: str, meta: dict[str, Any]) -> Plan:
        worker = meta.get("worker_id")
        found = self.pr_marker(task, meta)
        marker, when = found if found else ({}, _ended(meta).timestamp())
        # what this run pushed, as it recorded it; the marker's (a PR listing's head) only
        # while the run has not said yet
        sha = meta.get("commit") or marker.get("commit")
        url = marker.get("url") or ""
        where = ("PR", url) if url else ("Pushed", marker.get("head") or self.cfg.branch(task))
        cost = meta.get("cost_usd")
        facts = [f"worker {worker}", f"commit {_short(sha)}"]
        if isinstance(cost, (int, float)):
            facts.append(f"cost ${cost:.2f}")
        move = Move(task, worker, COMPLETED, make_marker(COMPLETED, worker, sha),
                    (("Completed", stamp(datetime.fromtimestamp(when))), where))
        event = ("task_completed", {"pr": url or None, "commit": sha})
        answered = self.carried(task, meta)
        if answered and isinstance(marker.get("number"), int):
            # a round after people's feedback: said on the PR it updated
            return Plan(DONE, move, event, f"Updated this PR for {answered}: commit "
                        f"{_short(sha)}.\n\n" + " · ".join(facts), marker["number"])
        return Plan(DONE, move, event, f"PR ready for review: {url or where[1] + ' (pushed)'}"
                    "\n\n" + " · ".join(facts))

    def carried(self, task: str, meta: dict[str, Any]) -> str:
        """The rework this run carried (its record's ``feedback`` keys: reviews, checks, PR
        requests), as "review by alice; check 'tests'"; empty if none (an answer's round
        opens the task's first PR, said on the issue as usual)."""
        keys = set(meta.get("feedback") or [])
        items = [item for item in read_feedback(self.cfg, task).items
                 if item.key in keys and item.kind in REWORK]
        return "; ".join(printable(item.source or item.kind) for item in items)

    def plan_blocked(self, task: str, meta: dict[str, Any]) -> Plan:
        worker = meta.get("worker_id")
        question = self.question(task) or str(meta.get("error") or "")
        first = question_line(question) or f"{BLOCKED_FILE} held no question"
        return Plan(HELD, Move(task, worker, BLOCKED, make_marker(BLOCKED, worker),
                               (("Blocked", first),)),
                    ("task_blocked", {"question": first}),
                    f"The agent is blocked and asks:\n\n{_agent_text(question or first)}\n\n"
                    "Answer in a comment here: tac8 sends the task back with your answer (if "
                    "you may steer tac8: the repository's owner, a member or collaborator, or "
                    "an allowed author). The next attempt reuses the worktree and is shown "
                    "this question and your answer.")

    def plan_stopped(self, task: str, meta: dict[str, Any]) -> Plan:
        """A person's STOP, or the fetcher's for an issue closed or unlabelled (its snapshot
        says which): the comment says why, and how to resume."""
        worker, commit = meta.get("worker_id"), meta.get("commit")
        wip = f" · WIP commit {_short(commit)}" if commit else ""
        saved = (f" Work in progress is committed as {_short(commit)} on branch "
                 f"{self.cfg.branch(task)}." if commit else "")
        reason = issues.task_withdrawn(self.cfg, task)
        if reason:
            what, todo = issues.explain(self.cfg, task, reason)
            why = f" · {what}"
            comment = (f"Stopped: {what} (worker {worker}).{saved} To resume, {todo}, then "
                       "move the task back to Pending in tasks.md.")
        else:
            why = ""
            comment = (f"Stopped on request (worker {worker}).{saved} "
                       "Move the task back to Pending in tasks.md to resume.")
        return Plan(HALTED, Move(task, worker, STOPPED, make_marker(STOPPED, worker),
                                 (("Stopped", stamp(_ended(meta)) + why + wip),)),
                    ("task_stopped", {"commit": commit, "reason": reason or "request"}),
                    None if reason == issues.DELETED else comment)  # nowhere to post it

    def plan_retry(self, task: str, meta: dict[str, Any]) -> Plan:
        """The next attempt, after the backoff. A run the provider's usage limit cut short
        is no attempt: the same one again once the limit resets (the worker paused
        launching until then). A retry is not news on the issue; the final failure is."""
        limited = bool(meta.get("usage_limit"))
        if limited:
            retry = Retry(_attempt(meta), self.cfg.launcher.max_attempts,
                          parse_iso(meta.get("limit_resets")) or _ended(meta))
        else:
            retry = next_retry(self.cfg, _attempt(meta), _ended(meta))
        details = {"attempt": retry.attempt, "error": _error(meta),
                   "not_before": retry.not_before.isoformat(timespec="seconds"),
                   **({"reason": "usage_limit"} if limited else {})}
        return Plan(RETRY, Move(task, meta.get("worker_id"), PENDING, "",
                                (("Retry", retry_value(retry)),)),
                    ("task_retry", details), None)

    def plan_failed(self, task: str, meta: dict[str, Any]) -> Plan:
        worker, error = meta.get("worker_id"), _error(meta)
        attempts = f"{_attempt(meta)}/{self.cfg.launcher.max_attempts}"
        return Plan(GAVE_UP, Move(task, worker, FAILED, make_marker(FAILED, worker),
                                  (("Failed", f"{stamp(_ended(meta))} · attempt {attempts}"),
                                   ("Error", error))),
                    ("task_failed", {"error": error, "attempt": _attempt(meta)}),
                    f"Failed on attempt {attempts} (worker {worker}):\n\n{_agent_text(error)}\n\n"
                    "The worktree is kept for debugging.")

    def question(self, task: str) -> str:
        try:
            return runs.question_file(self.cfg, task).read_text(errors="replace")
        except OSError:
            return ""

    # --- after the decision ---
    def follow_up(self, task: str, meta: dict[str, Any]) -> None:
        applied = meta.get("applied") or []
        worker = meta.get("worker_id")
        transition = self.terminal(meta)
        if transition is None:
            return
        if not meta.get("outcome"):
            # Completed on its PR marker while the worker still runs: the announcement
            # waits for the run's end (it reports the cost), and so does a death check.
            if runs.worker_alive(self.cfg, task) or not self.record_death(task, worker):
                return
            meta = self.current(task)
        if ANNOUNCED not in applied:
            self.announce(task, meta, self.plan(task, meta, transition))
        if transition == DONE and CLEANED not in applied and not runs.worker_alive(self.cfg, task):
            kept = self.remove_tree(task)
            if kept == "its worker is alive":
                return  # it is exiting right now: next rescan
            if kept:
                self.log.warning("%s: worktree kept: %s", task, kept)
            self.add_applied(task, worker, CLEANED)

    def announce(self, task: str, meta: dict[str, Any], plan: Plan) -> None:
        """Emit the event and queue the comment, both under the transition's key, then record
        ``announced``. A crash before that record repeats both: the metrics program and the
        fetcher each act on a key once."""
        worker = meta.get("worker_id")
        key = run_key(task, worker, plan.transition)
        kind, details = plan.event
        emit(self.cfg.events_dir, kind, task, worker_id=worker, key=key, **details)
        target = plan.comment_on or issue_number(task)
        if plan.comment and target is not None and self.cfg.github.repo:
            queue_comment(self.cfg, target, task, key, plan.comment)
        if plan.transition == HALTED:
            # The request is carried out; left in the tree, it would stop the next attempt.
            (self.cfg.tree(task) / STOP_FILE).unlink(missing_ok=True)
        self.add_applied(task, worker, ANNOUNCED)

    def add_applied(self, task: str, worker: Any, entry: str) -> bool:
        """Add ``entry`` to the run's ``applied`` unless it is there already or the record is
        another run's; whether it was added."""
        def change(rec: Record) -> bool:
            applied = rec.meta.get("applied") or []
            if rec.meta.get("worker_id") != worker or entry in applied:
                return False
            rec.meta["applied"] = [*applied, entry]
            return True
        return runs.update_run(self.cfg, task, change)

    def remove_tree(self, task: str) -> str | None:
        """The guarded removal: why the tree was kept, or None once it is gone."""
        try:
            return remove_worktree(self.cfg, task)
        except Exception as exc:  # a git failure keeps the tree; the launcher's cleanup retries
            return f"removal failed: {describe(exc)}"

    # --- day rollover ---


def main(argv: list[str] | None = None) -> int:
    with Program.from_argv("observer", argv) as prog:
        observer = TaskObserver(prog)
        observer.start()
        prog.run(observer.cycle, interval=RESCAN_EVERY)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
