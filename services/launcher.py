"""The launcher: Pending tasks become worktrees and running workers, within limits.

``python -m services.launcher [--config PATH]``. The files it reads and writes, the claim of a
line, the liveness lock it hands to the worker and SIGUSR1: docs/PROTOCOL.md.

Each pass takes Pending tasks in launch order, honouring ``- Retry: … not before``, while a
slot is free (``max_workers``, counted from held liveness locks, so workers that outlived a
restart are adopted), ``state/PAUSE`` is absent and free memory is above ``min_free_memory_mb``.
A launch takes the task's liveness lock first, then ensures the tree, renders the prompt,
writes a fresh run record, claims the line and starts the worker in a new session. A failed
launch puts the task back with a retry time; the same failure ``PAUSE_AFTER`` times in a row
pauses launching, and so does health ``critical`` (``degraded`` removes stale trees); a pause
with ``until`` (a worker's, for the provider's usage limit) is lifted once that time comes. While
tasks wait for a slot it makes the next tree in advance, so a freed slot does not wait for
``git worktree add`` (a task dropped before its launch takes that tree and branch with it).
A Pending task whose issue was closed or unlabelled is never launched. Workers are reaped
through their ``Popen`` objects, never by a SIGCHLD handler (one calling ``waitpid(-1)`` would
steal the exit status of other subprocesses).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from watchdog.events import FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent

from shared import issues, runs, treefiles, worktree
from shared.config import CHECKOUT
from shared.clock import now_iso, parse_iso, stamp
from shared.events import emit, run_key
from shared.errors import describe
from shared.feedback import read_feedback
from shared.fsio import atomic_write, keep_tail
from shared.locks import AlreadyHeld, HeldLock, hold
from shared.health import available_memory_mb, read_metrics
from shared.pause import lift_if_over, pause, pause_end, read_pause, toggle
from shared.program import Program
from shared.prompt import TemplateError, load_template, prompt_values, render
from shared.retry import Retry, backoff_seconds, parse_retry, retry_value
from shared.tasks import ACTIVE, BLOCKED, FAILED, PENDING, STOPPED, Board, Task, edit_tasks, \
    make_marker, read_board
from shared.text import encodable

RESCAN = 60.0  # seconds between rescans when nothing wakes it and no retry comes due
LOW_MEMORY_RESCAN = 5.0  # memory coming back wakes nothing: look again this often
PAUSE_AFTER = 3  # the same launch failure this many times in a row pauses launching
CLEAN_EVERY = 600.0  # seconds between stale-tree cleanups while health is degraded
FETCH_EVERY = 60.0  # seconds between fetches of the base branch before new branches
WORKER_LOG_LIMIT, WORKER_LOG_KEPT = 1 << 20, 256 << 10  # a worker log over 1 MiB keeps 256 KiB
HEALTH_BAD = ("degraded", "critical")
# A file replaced (atomic writes, most editors), created, deleted, or closed after writing (an
# editor that writes in place). Not opened or read: the launcher reads these files itself.
CHANGES = [FileMovedEvent, FileCreatedEvent, FileDeletedEvent, FileClosedEvent]
LOCK_RELEASES = [FileDeletedEvent, FileClosedEvent]


def _same_board(board: Board) -> Board:
    """No change of our own: ``edit_tasks`` gives every id-less task its id on the way."""
    return board


def _claim(task_id: str, worker_id: str, started: str, board: Board) -> bool:
    """Pending → Active (a pure change of the board; False if it is not Pending now)."""
    found = board.find(task_id)
    if found is None or found[0] != PENDING:
        return False
    task = found[1]
    task.drop_detail("Retry")
    task.drop_detail("Error")
    task.set_detail("Started", started)
    board.move(task, ACTIVE, marker=make_marker(ACTIVE, worker_id))
    return True


def _show_active(cfg: Any, metas: list[dict[str, Any]], board: Board) -> list[tuple[str, str]]:
    """Pure change: the line of each live run (``metas``: run records) back in Active, as
    its claim wrote it. Returns (task, where the line was) for each line it moved."""
    shown = []
    for meta in metas:
        task_id, worker_id = meta["task"], meta["worker_id"]
        found = board.find(task_id)
        if found and found[0] == ACTIVE and found[1].worker == worker_id:
            continue
        started = parse_iso(meta.get("started"))
        details = [("Started", f"{stamp(started)} · attempt {meta.get('attempt') or 1}/"
                               f"{cfg.launcher.max_attempts} · "
                               f"{os.path.relpath(meta.get('worktree') or cfg.tree(task_id), cfg.repo.path)}"
                               f" · {meta.get('branch') or cfg.branch(task_id)}")]
        if found is None:
            task = board.add(str(meta.get("title") or task_id), task_id=task_id, section=ACTIVE)
        else:
            task = found[1]
        board.move(task, ACTIVE, marker=make_marker(ACTIVE, worker_id), details=details)
        shown.append((task_id, f"in {found[0]}" if found else "out of tasks.md"))
    return shown


def _record_pid(pid: int, record: Any) -> None:
    record.meta["pid"] = pid


def _previous_question(cfg: Any, task_id: str) -> str:
    """What the task's last run asked a person, if it ended blocked ("" otherwise): the
    worker copied it to ``runs.question_file``."""
    record = runs.read_run(cfg, task_id)
    if record is None or record.meta.get("outcome") != runs.BLOCKED:
        return ""
    try:
        return runs.question_file(cfg, task_id).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _note_errors(errors: dict[str, str], board: Board) -> list[str]:
    """Set ``- Error:`` on Pending lines (a pure change); the tasks whose line changed."""
    noted = []
    for task in board.tasks(PENDING):
        error = errors.get(task.id or "")
        if error and task.detail("Error") != error:
            task.set_detail("Error", error)
            noted.append(task.id)
    return noted


def _hold_back(task_id: str, retry: str, error: str, board: Board) -> None:
    """Put the task (back) in Pending with a retry time and the launch error."""
    found = board.find(task_id)
    if found is None:
        return
    section, task = found
    task.drop_detail("Started")
    task.set_detail("Retry", retry)
    task.set_detail("Error", f"launch failed: {error}")
    if section != PENDING:
        board.move(task, PENDING, marker="")


class Launcher:
    def __init__(self, prog: Program):
        self.prog = prog
        self.cfg = prog.cfg
        self.log = prog.log
        self.children: dict[str, subprocess.Popen] = {}
        self.launch_failures: dict[str, int] = {}  # task → consecutive failed launches
        self.last_failure: tuple[str, int] = ("", 0)  # (error shape, times in a row)
        self.unpreparable: set[str] = set()
        self.repaired_titles: set[str] = set()  # tasks whose title held bytes not UTF-8 (logged)
        self.prepared: set[str] = set()  # trees made in advance, for tasks not launched since
        self.reported: set[tuple[str, str]] = set()  # tasks.md problems logged: (text, why)
        self.toggle_requested = False
        self.health: str | None = None
        self.health_mtime: float | None = None
        self.last_clean = -CLEAN_EVERY
        self.last_fetch = -FETCH_EVERY
        self.memory_low = False
        self.next_retry: datetime | None = None  # the earliest Retry time of a waiting task
        self.pause_ends: datetime | None = None  # when the pause on now ends by itself

    # --- wiring ---
    def start(self) -> None:
        cfg, prog = self.cfg, self.prog
        signal.signal(signal.SIGUSR1, self._on_usr1)
        names = {cfg.tasks_file.name, cfg.paths.metrics.name}
        for folder in {cfg.tasks_file.parent, cfg.paths.metrics.parent}:
            prog.watch(folder, wanted=functools.partial(_names_event, names),
                       event_filter=CHANGES)
        prog.watch(cfg.state_dir, wanted=functools.partial(_names_event, {cfg.pause_file.name}),
                   event_filter=CHANGES)
        prog.watch(cfg.live_dir, wanted=_lock_released, event_filter=LOCK_RELEASES)
        alive = self.alive_tasks()
        if alive:
            self.log.info("adopted %d live worker(s): %s", len(alive), ", ".join(sorted(alive)))

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.toggle_requested = True  # the wake-up fd wakes the loop

    # --- one pass ---
    def cycle(self) -> None:
        self.reap()
        if self.toggle_requested:
            self.toggle_requested = False
            self.toggle_pause()
        self.check_health()
        board = read_board(self.cfg.tasks_file)
        if any(t.id is None for t in board.tasks()):
            # a typed line gets its t-N id, and so does a line repeating another's id
            board = edit_tasks(self.cfg, _same_board)
        self.report_problems(board)
        alive = self.alive_tasks()
        self.show_live_runs(board, alive)
        if not self.pause_over():
            return
        withdrawn = self.withdrawn(board)
        self.remove_dropped(board.ids() - withdrawn, alive)
        slots = self.cfg.launcher.max_workers - len(alive)
        now = datetime.now().astimezone()
        waiting = [(t, self.retry_of(t)) for t in board.launch_order()
                   if t.id and t.id not in alive and t.id not in withdrawn
                   and not self.stale_copy(t)]
        due = [t for t, retry in waiting if retry is None or retry.not_before <= now]
        self.next_retry = min((r.not_before for _, r in waiting if r and r.not_before > now),
                              default=None)
        while slots > 0 and due and self.may_launch():
            if self.launch(due.pop(0)):
                slots -= 1
        if due and self.may_launch():  # tasks wait for a slot: get ready for the next one
            self.prepare(due[: self.cfg.launcher.max_workers])

    def show_live_runs(self, board: Board, alive: set[str]) -> None:
        """The board is level-triggered: a run whose worker is alive is shown in Active,
        whatever a save did to its line (an editor's buffer read before the launch puts it
        back in Pending, or drops it). Its record says what the line should be. A person
        stops a live worker with STOP, not by moving its line."""
        runs_shown_elsewhere = []
        for task_id in sorted(alive):
            record = runs.read_run(self.cfg, task_id)
            meta = record.meta if record else {}
            found = board.find(task_id)
            # (a run with a transition decided is the observer's: e.g. completed on its PR
            # marker while the worker still ends)
            if not meta.get("worker_id") or meta.get("outcome") or meta.get("applied") or (
                    found and found[0] == ACTIVE and found[1].worker == meta["worker_id"]):
                continue
            runs_shown_elsewhere.append(meta)
        if runs_shown_elsewhere:
            shown = edit_tasks(self.cfg, functools.partial(_show_active, self.cfg,
                                                           runs_shown_elsewhere))
            for task_id, was in shown:
                self.log.warning("%s: its worker is alive but a save put its line %s: "
                                 "shown in Active again", task_id, was)

    def report_problems(self, board: Board) -> None:
        """Log each problem of tasks.md once while it lasts: a mistyped section or priority
        would otherwise keep a task from running (or from running first) without a sign."""
        problems = {(p.text, p.why): p.line for p in board.problems}
        for (text, why), line in problems.items():
            if (text, why) not in self.reported:
                self.log.warning("tasks.md line %d %r: %s", line, text, why)
        self.reported = set(problems)

    def stale_copy(self, task: Task) -> bool:
        """A Pending line a save put back after its run ended (``runs.stale_copy``): not
        launched; the observer shows the run's outcome again."""
        record = runs.read_run(self.cfg, task.id)
        return record is not None and runs.stale_copy(record.meta, task.worker)

    def withdrawn(self, board: Board) -> set[str]:
        """Pending tasks whose issue was closed, deleted or unlabelled (the fetcher's snapshot
        says so): never launched. Their line says why; the fetcher removes it at its next poll,
        and adds it again if the issue is reopened (or relabelled)."""
        errors = {}
        for task in board.tasks(PENDING):
            reason = issues.task_withdrawn(self.cfg, task.id) if task.id else None
            if reason:
                what, todo = issues.explain(self.cfg, task.id, reason)
                errors[task.id] = f"not launched: {what}; {todo} to run it"
        if any(board.get(task_id).detail("Error") != error for task_id, error in errors.items()):
            for task_id in edit_tasks(self.cfg, functools.partial(_note_errors, errors)):
                self.log.info("%s: %s", task_id, errors[task_id])
        return set(errors)

    def pause_over(self) -> bool:
        """Whether launching may go on: no pause, or one whose ``until`` has come (lifted
        now: a usage limit's pause ends by itself)."""
        paused = read_pause(self.cfg)
        self.pause_ends = pause_end(paused)
        if paused is None:
            return True
        if self.pause_ends is None or self.pause_ends > datetime.now().astimezone():
            return False
        lifted = lift_if_over(self.cfg, "launcher")
        if lifted is not None:
            self.log.info("resumed: the pause ended at %s (%s)", stamp(self.pause_ends),
                          lifted.get("reason"))
        self.pause_ends = None
        return read_pause(self.cfg) is None

    def seconds_until_due(self) -> float:
        """How long the loop may sleep: until the next retry comes due or the pause ends by
        itself, or the next look at free memory while it is low (everything else wakes the
        loop)."""
        wait = RESCAN
        now = datetime.now().astimezone()
        for due in (self.next_retry, self.pause_ends):
            if due is not None:
                wait = min(wait, (due - now).total_seconds())
        return min(wait, LOW_MEMORY_RESCAN) if self.memory_low else wait

    def may_launch(self) -> bool:
        """Not stopping, not paused (a failed launch may just have paused), memory to spare."""
        return not self.prog.stopping and read_pause(self.cfg) is None \
            and self.memory_ok()

    def reap(self) -> None:
        for task, proc in list(self.children.items()):
            if proc.poll() is not None:
                del self.children[task]
                if proc.returncode:
                    self.log.warning("worker for %s exited with status %s (see %s)", task,
                                     proc.returncode, runs.worker_log(self.cfg, task))

    def alive_tasks(self) -> set[str]:
        """Tasks whose worker is alive: a held liveness lock, or a child not yet reaped."""
        children = {task for task, proc in self.children.items() if proc.returncode is None}
        return children | runs.live_tasks(self.cfg)

    def retry_of(self, task: Task) -> Retry | None:
        value = task.detail("Retry")
        retry = parse_retry(value) if value else None
        if value and retry is None:
            self.log.warning("%s: cannot read '- Retry: %s'; launching it as attempt 1",
                             task.id, value)
        return retry

    def memory_ok(self) -> bool:
        free_mb = available_memory_mb()
        low = free_mb < self.cfg.launcher.min_free_memory_mb
        if low != self.memory_low:
            if low:
                self.log.warning("not launching: %.0f MB free, below min_free_memory_mb %d",
                                 free_mb, self.cfg.launcher.min_free_memory_mb)
            else:
                self.log.info("memory is back (%.0f MB free): launching again", free_mb)
            self.memory_low = low
        return not low

    # --- a launch ---
    def launch(self, task: Task) -> bool:
        """Start a worker for ``task``; False if it was not started (alive, failed, gone)."""
        cfg, task_id = self.cfg, task.id
        try:
            lock = hold(cfg.liveness_lock(task_id), wait=0.1)
        except AlreadyHeld:
            return False
        retry = self.retry_of(task)
        attempt, max_attempts = (retry.attempt, retry.max_attempts) if retry \
            else (1, cfg.launcher.max_attempts)
        began = time.monotonic()
        with lock:
            try:
                claimed = self.begin_run(task, lock, attempt, max_attempts)
            except (worktree.GitError, worktree.WorktreeError) as exc:
                self.launch_failed(task_id, attempt, max_attempts, describe(exc), worktree_error=True)
                return False
            except (TemplateError, OSError) as exc:
                self.launch_failed(task_id, attempt, max_attempts, describe(exc))
                return False
            except Exception as exc:  # a bug, or data nobody foresaw: only this task waits
                self.log.exception("launching %s: unexpected error", task_id)
                self.launch_failed(task_id, attempt, max_attempts,
                                   f"unexpected error: {type(exc).__name__}: {describe(exc)}")
                return False
            if claimed is None:
                return False
            worker_id, tree_ms = claimed
            try:
                proc = self.spawn(task_id, lock)
                lock.hand_over()
            except OSError as exc:
                self.launch_failed(task_id, attempt, max_attempts, f"cannot start: {describe(exc)}")
                return False
            emit(cfg.events_dir, "worker_launched", task_id, worker_id=worker_id,
                 attempt=attempt, pid=proc.pid, key=run_key(task_id, worker_id, "launched"))
            runs.update_run(cfg, task_id, functools.partial(_record_pid, proc.pid))
        self.children[task_id] = proc
        threading.Thread(target=self._await_exit, args=(proc,), daemon=True).start()
        self.launch_failures.pop(task_id, None)
        self.last_failure = ("", 0)
        self.unpreparable.discard(task_id)
        self.prepared.discard(task_id)  # the tree is the run's now
        self.log.info("launched %s as %s (attempt %d/%d, pid %d) in %.1f ms, worktree %.1f ms",
                      task_id, worker_id, attempt, max_attempts, proc.pid,
                      (time.monotonic() - began) * 1000, tree_ms)
        return True

    def begin_run(self, task: Task, lock: HeldLock, attempt: int,
                  max_attempts: int) -> tuple[str, float] | None:
        """Everything before the worker starts: the tree, the prompt, a fresh run record, the
        line moved to Active. The new worker id and the tree's milliseconds; None if a
        person moved or removed the line meanwhile."""
        cfg, task_id = self.cfg, task.id
        tree, tree_ms = self.tree_for(task_id, lock)
        title = self.valid_title(task)
        # read before the prompt: an item added in between is carried again, never lost
        feedback = [item.key for item in read_feedback(cfg, task_id).open_items()]
        if feedback:
            self.catch_up(task_id, tree)
        prompt = self.render_prompt(task_id, title, attempt, _previous_question(cfg, task_id))
        worker_id = runs.new_worker_id()
        atomic_write(runs.prompt_file(cfg, task_id), prompt)
        started = (f"{stamp()} · attempt {attempt}/{max_attempts} · "
                   f"{os.path.relpath(tree, cfg.repo.path)} · {cfg.branch(task_id)}")
        previous = runs.start_run(cfg, task_id, {
            "task": task_id, "worker_id": worker_id, "attempt": attempt, "pid": None,
            "started": now_iso(), "branch": cfg.branch(task_id), "worktree": str(tree),
            "title": title, **({"feedback": feedback} if feedback else {}),
        })
        self.clear_stale_stop(task_id)
        if not edit_tasks(cfg, functools.partial(_claim, task_id, worker_id, started)):
            # A person moved or removed it meanwhile: the last run's record (outcome,
            # cost, applied) is put back, as if this launch had not begun.
            runs.restore_run(cfg, task_id, worker_id, previous)
            return None
        return worker_id, tree_ms

    def catch_up(self, task_id: str, tree: Path) -> None:
        """A round after people's feedback starts from the PR's branch as it is now."""
        try:
            if worktree.catch_up(self.cfg, task_id, tree):
                self.log.info("%s: its branch moved on the remote: fast-forwarded", task_id)
        except worktree.GitError as exc:  # offline, or diverged: the push will say
            self.log.warning("%s: could not catch up with the remote branch: %s", task_id, exc)

    def clear_stale_stop(self, task_id: str) -> None:
        """Remove a STOP older than this launch's run record (written just before the claim):
        it was meant for an earlier run, and would stop this one before its agent starts. A
        STOP touched since is a person stopping this run: it stays. Both times come from the
        filesystem's clock (the kernel's is coarser than ``time.time()``)."""
        stop = self.cfg.tree(task_id) / treefiles.STOP
        try:
            launched = os.stat(self.cfg.run_record(task_id)).st_mtime_ns
            if os.lstat(stop).st_mtime_ns < launched:  # lstat: the tree is hostile
                stop.unlink()
                self.log.info("%s: removed a STOP left from before this launch", task_id)
        except FileNotFoundError:
            pass

    def valid_title(self, task: Task) -> str:
        """The title as the prompt, the run record, git and GitHub get it: bytes that are not
        UTF-8 (tasks.md may hold any) replaced, and reported once. tasks.md keeps them."""
        title = encodable(task.title)
        if title != task.title and task.id not in self.repaired_titles:
            self.repaired_titles.add(task.id)
            self.log.warning("%s: the title holds bytes that are not UTF-8; the agent, git and "
                             "GitHub get it as %r", task.id, title)
        return title

    def tree_for(self, task_id: str, lock: HeldLock) -> tuple[Path, float]:
        """The task's tree (ensured) and the milliseconds it took."""
        began = time.monotonic()
        tree = self.cfg.tree(task_id)
        if worktree.checked_out_branch(tree) != self.cfg.branch(task_id):
            self.refresh_base()
            tree = worktree.ensure_worktree(self.cfg, task_id, lock)
        return tree, (time.monotonic() - began) * 1000

    def refresh_base(self) -> None:
        """Fetch the base branch at most every ``FETCH_EVERY`` s (new branches start there)."""
        if time.monotonic() - self.last_fetch < FETCH_EVERY:
            return
        self.last_fetch = time.monotonic()
        try:
            worktree.fetch_base(self.cfg)
        except worktree.GitError as exc:  # offline: branch from what we have
            self.log.warning("could not fetch the base branch: %s", exc)

    def render_prompt(self, task_id: str, title: str, attempt: int, question: str) -> str:
        template = load_template(self.cfg.worker.template)
        if shutil.which(template.command[0]) is None:
            raise TemplateError(f"agent command not found: {template.command[0]}")
        return render(template, prompt_values(self.cfg, task_id, title, attempt, question))

    def spawn(self, task_id: str, lock: HeldLock) -> subprocess.Popen:
        """The task's worker, in a new session, handed the liveness lock."""
        log_path = runs.worker_log(self.cfg, task_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        keep_tail(log_path, WORKER_LOG_LIMIT, WORKER_LOG_KEPT)  # appended by every attempt
        fd = lock.fileno()
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "services.worker", task_id, "--config",
                 str(self.cfg.file), "--lock-fd", str(fd)],
                cwd=CHECKOUT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(fd,),
            )

    def _await_exit(self, proc: subprocess.Popen) -> None:
        proc.wait()
        self.prog.wake()

    def launch_failed(self, task_id: str, attempt: int, max_attempts: int, error: str,
                      worktree_error: bool = False) -> None:
        cfg = self.cfg
        failures = self.launch_failures[task_id] = self.launch_failures.get(task_id, 0) + 1
        not_before = datetime.now().astimezone() + timedelta(seconds=backoff_seconds(cfg, failures))
        retry = retry_value(Retry(attempt, max_attempts, not_before))
        self.log.error("launching %s failed (%d in a row): %s", task_id, failures, error)
        edit_tasks(cfg, functools.partial(_hold_back, task_id, retry, error))
        runs.start_run(cfg, task_id, {"task": task_id, "attempt": attempt,
                                      "finished": now_iso(), "launch_error": error})
        emit(cfg.events_dir, "launch_failed", task_id, error=error, attempt=attempt)
        if worktree_error:
            emit(cfg.events_dir, "worktree_error", task_id, error=error)
        shape = error.replace(task_id, "<task>")
        count = self.last_failure[1] + 1 if self.last_failure[0] == shape else 1
        self.last_failure = (shape, count)
        if count >= PAUSE_AFTER and read_pause(cfg) is None:
            self.pause_launching(f"auto: launching failed {count} times in a row: {error}")

    # --- trees made in advance ---
    def prepare(self, upcoming: list[Task]) -> None:
        """Create the tree of the next upcoming task that has none (one per pass, so a freed
        slot waits for at most one ``git worktree add``)."""
        todo = [t.id for t in upcoming if t.id not in self.unpreparable
                and worktree.checked_out_branch(self.cfg.tree(t.id)) != self.cfg.branch(t.id)]
        if not todo:
            return
        task_id = todo[0]
        try:
            lock = hold(self.cfg.liveness_lock(task_id), wait=0)
        except AlreadyHeld:
            return
        with lock:
            try:
                self.tree_for(task_id, lock)
                self.prepared.add(task_id)
            except (worktree.GitError, worktree.WorktreeError, OSError) as exc:
                self.unpreparable.add(task_id)  # its launch will report the error
                self.log.debug("could not prepare %s: %s", task_id, exc)
        if len(todo) > 1:
            self.prog.wake()

    def remove_dropped(self, wanted: set[str], alive: set[str]) -> None:
        """Remove the trees made in advance for tasks no longer ``wanted`` (the line deleted,
        or its issue closed), with their branches: nothing was done in them. The guarded
        removal keeps one with changes or commits the remote lacks (a person worked there)."""
        removed, kept = [], []
        for task_id in sorted(self.prepared - wanted - alive):
            try:
                why = worktree.remove_worktree(self.cfg, task_id, with_branch=True)
            except worktree.GitError as exc:
                why = f"removal failed: {describe(exc)}"
            if why == "its worker is alive":
                continue  # its lock is held a moment (another removal): next pass
            self.prepared.discard(task_id)
            if why:
                kept.append(f"{task_id}: {why}")
            else:
                removed.append(task_id)
        if removed or kept:
            emit(self.cfg.events_dir, "worktrees_cleaned", removed=removed, kept=kept)
            self.log.info("dropped before launch: removed trees and branches %s; kept %s",
                          removed or "none", kept or "none")

    # --- pause and health ---
    def pause_launching(self, reason: str) -> None:
        pause(self.cfg, "launcher", reason)
        self.log.warning("paused: %s", reason)

    def toggle_pause(self) -> None:
        """SIGUSR1: pause or resume, one step under the pause lock (``shared.pause.toggle``)."""
        paused = toggle(self.cfg, "launcher", "by SIGUSR1")
        self.log.info("%s by SIGUSR1", "paused" if paused else "resumed")

    def check_health(self) -> None:
        metrics_file = self.cfg.paths.metrics
        try:
            mtime: float | None = metrics_file.stat().st_mtime
        except OSError:
            mtime = None
        metrics = read_metrics(self.cfg) if mtime != self.health_mtime else None
        # An existing file that does not parse is caught mid-write (in place, by a person):
        # the health stays as it was until the write ends (its close wakes us).
        if mtime != self.health_mtime and (metrics is not None or mtime is None):
            self.health_mtime = mtime
            previous, self.health = self.health, (metrics or {}).get("health")
            if self.health == "critical" and previous != "critical" \
                    and read_pause(self.cfg) is None:
                self.pause_launching("auto: health critical")
        if self.health in HEALTH_BAD and time.monotonic() - self.last_clean >= CLEAN_EVERY:
            self.last_clean = time.monotonic()
            self.clean_stale_trees()

    def clean_stale_trees(self) -> None:
        """Remove the trees of tasks that are done (or gone), through the guarded removal.
        A Failed task's tree is kept: it is there for debugging (the failure comment says so)."""
        board = read_board(self.cfg.tasks_file)
        keep = {t.id for s in (ACTIVE, PENDING, BLOCKED, STOPPED, FAILED) for t in board.tasks(s)
                if t.id}
        keep |= self.alive_tasks()
        removed, kept = worktree.clean_stale(self.cfg, keep)
        if removed or kept:
            emit(self.cfg.events_dir, "worktrees_cleaned", removed=removed,
                 kept=[f"{task}: {why}" for task, why in kept.items()])
            self.log.info("health %s: removed stale trees %s; kept %s", self.health,
                          removed or "none", kept or "none")


def _names_event(names: set[str], event: Any) -> bool:
    paths = (event.src_path, getattr(event, "dest_path", "") or "")
    return any(os.path.basename(p) in names for p in paths)


def _lock_released(event: Any) -> bool:
    """A liveness lock removed by its worker as it ends, or closed after writing by one that
    died. (``is_held`` probes open a lock read-only, so they do not count.)"""
    return event.src_path.endswith(".lock")


def main(argv: list[str] | None = None) -> int:
    with Program.from_argv("launcher", argv) as prog:
        launcher = Launcher(prog)
        launcher.start()
        prog.run(launcher.cycle, interval=launcher.seconds_until_due)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
