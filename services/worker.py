"""The worker: one agent run on one task, in the task's worktree.

``python -m services.worker TASK [--config PATH] [--lock-fd N]``, started by the launcher in a
new session (``ps`` shows ``tac8-worker``); it also runs by hand. It holds the task's liveness
lock for its whole life, feeds ``state/runs/<task>.prompt`` to the agent's stdin, writes the
agent's output to ``logs/<task>.jsonl`` and ends by emitting its events, then recording the
outcome in one update of the run record. Files, signals and stop steps: docs/PROTOCOL.md.

The outcome comes from the tree, not the exit code: ``BLOCKED.md`` → blocked; a person's STOP
→ WIP commit → stopped; a signal without STOP → WIP commit → failed (the retry starts from
it); a limit, or a stream-json agent with no final ``result`` or with ``is_error`` → failed;
new commits (leftovers committed first) or an earlier attempt's undelivered work → push, open
the PR unless one is open, PR marker → pr; otherwise failed ("exited without changes"), even
with exit code 0. ``commit`` is recorded only when this run moved HEAD. Before the agent starts,
the worker kills what an earlier, killed worker of the task left running in the tree. A final
result saying the provider's usage limit was reached (``shared.usage_limit``) fails the run
with ``usage_limit`` on record, and pauses launching until the limit resets.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from shared import proc, runs, sandbox, treefiles, worktree
from shared.clock import iso_at, now_iso, parse_iso
from shared.config import Config, ConfigError, add_config_argument, load_config
from shared.errors import ExternalError, Tac8Error, describe
from shared.events import emit, run_key
from shared.fsio import atomic_write
from shared.locks import AlreadyHeld, adopt, hold
from shared.pause import limit_passed, pause_for_limit
from shared.prompt import Template, load_template, prompt_values, render
from shared.outbox import queue_pr
from shared.streamjson import StreamJson
from shared.tasks import issue_number
from shared.text import code_block
from shared.usage_limit import Limit, limit_reached

LOG_CAP = 20 * 1024 * 1024  # bytes of agent output kept from the start of a run
LOG_TAIL = 256 * 1024  # bytes kept from the end once the cap is reached
RECORD_TAIL = 4000  # characters of the log's tail in the run record's body
SETUP_ERROR_CHARS = 300  # of a failed setup's output, in the run's error
WIP_SUFFIX = "-wip"  # work in progress of a task whose PR is open goes to <branch>-wip
STOP_POLL = 1.0  # seconds between looks at the STOP file
DRAIN = 1.0  # seconds to keep reading after the agent exits (a daemon may hold the pipe)
NOW_GRACE = 1.0  # stop grace for `tac8 stop --now`
LEFTOVER_WAIT = 10.0  # seconds to wait for killed leftovers of an earlier worker to die
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
WORKER_NAME = "tac8-worker"  # as `ps -o comm` shows it
_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def die_with(parent: int, sandboxed: bool) -> None:
    """In the agent's process before exec: SIGKILL when the worker ``parent`` dies (even by
    kill -9), and at once if it died already. Only covers this direct child (bwrap takes
    the rest with it). A sandbox ignores the stop signals: they are for the agent inside
    (``sandbox.RESET_SIGNALS``), and bwrap would die of them and take the agent at once."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    if sandboxed:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


def refuse_root(cfg: Config) -> None:
    """No agent runs as root by accident: with permission checks skipped, steered by text
    that strangers influence, it could do anything to the machine."""
    if os.geteuid() == 0 and not cfg.worker.allow_root:
        raise ConfigError(f"refusing to run the agent as root (uid 0): run tac8 as an "
                          f"ordinary user, or set [worker] allow_root = true in {cfg.file} "
                          "(only in a throwaway container)")


def kill_leftovers(task: str, tree: Path) -> int:
    """SIGKILL every process whose working directory is inside ``tree`` and whose
    environment names ``task`` (an earlier worker's agent or its daemons, left when that
    worker was killed), and wait until they are dead; returns how many. Processes this
    user cannot inspect, and a person's shell in the tree, are left alone."""
    root = os.path.realpath(tree)
    marker = f"{sandbox.TASK_ENV}={task}".encode()
    pidfds = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            if cwd != root and not cwd.startswith(root + os.sep):
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
            pidfd = os.pidfd_open(int(name))  # from here on a reused pid cannot be hit
        except OSError:  # gone, or not ours to inspect
            continue
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            pidfds.append(pidfd)
        except ProcessLookupError:
            os.close(pidfd)
    poller = select.poll()
    for pidfd in pidfds:
        poller.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + LEFTOVER_WAIT
    waiting = len(pidfds)
    while waiting and time.monotonic() < deadline:  # a pidfd is readable once its process died
        for pidfd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            poller.unregister(pidfd)
            waiting -= 1
    for pidfd in pidfds:
        os.close(pidfd)
    return len(pidfds)


def sweep_descendants() -> int:
    """Kill and reap every descendant; returns how many were killed. Only call it when no
    ``subprocess`` child of this process is still running (it reaps any child)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:  # no child at all, so (a subreaper) no descendant: the usual case
        return 0
    import psutil  # only a run that left processes behind needs it

    me = psutil.Process()
    killed = 0
    for _ in range(200):
        kids = me.children(recursive=True)
        for kid in kids:
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass
        while True:  # orphans of killed children are reparented to us: reap them too
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if not kids:
            break
        killed += sum(1 for k in kids if k.pid != os.getpid())
        time.sleep(0.01)
    return killed


class CappedLog:
    """The agent's output file: the first ``LOG_CAP`` bytes, then only the last
    ``LOG_TAIL`` bytes, appended after a note on what was dropped when it is closed."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "wb", buffering=0)  # readers (tac8 logs -f) see output at once
        self._written = 0
        self._tail = bytearray()
        self._dropped = 0

    def write(self, data: bytes) -> None:
        room = LOG_CAP - self._written
        if room > 0:
            self._file.write(data[:room])
            self._written += min(room, len(data))
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > LOG_TAIL:
                cut = len(self._tail) - LOG_TAIL
                self._dropped += cut
                del self._tail[:cut]

    def close(self) -> None:
        if self._tail:
            if self._dropped:
                newline = self._tail.find(b"\n")
                if newline >= 0:  # start the kept tail at a line boundary
                    self._dropped += newline + 1
                    del self._tail[:newline + 1]
                note = {"type": "tac8_log_truncated", "dropped_bytes": self._dropped}
                self._file.write(b"\n" + json.dumps(note).encode() + b"\n")
            self._file.write(bytes(self._tail))
        self._file.close()

    def tail_text(self, chars: int = RECORD_TAIL) -> str:
        with open(self.path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - chars * 2))
            text = f.read().decode("utf-8", errors="replace")
        text = text[-chars:]
        return text.split("\n", 1)[1] if len(text) == chars and "\n" in text else text


@dataclass
class AgentRun:
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    stop_reason: str | None = None  # why tac8 stopped the agent (a person, a signal, a limit)
    stopped_by_user: bool = False
    terminated_by: int | None = None  # the signal (without STOP) that stopped the agent
    error: str | None = None  # the agent could not run at all
    log_tail: str = ""


@dataclass
class Outcome:
    outcome: str
    error: str | None = None
    commit: str | None = None
    skipped: list[str] = field(default_factory=list)  # new files not committed, with why
    limit: Limit | None = None  # the agent ended at the provider's usage limit


class Worker:
    def __init__(self, cfg: Config, task: str):
        self.cfg = cfg
        self.task = task
        self.tree = cfg.tree(task)
        self.signalled: int | None = None  # the last stop signal received
        self.sandbox_note: str | None = None  # what sandbox the agent ran in (run record)
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # --- signals ---
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self.signalled = signum

    def stop_file(self) -> Path:
        return self.tree / treefiles.STOP

    def check_stop(self, run: AgentRun, before: str = "") -> bool:
        """Whether the agent must stop now (a person's STOP or a signal); notes why in ``run``."""
        if treefiles.present(self.stop_file()):
            run.stop_reason, run.stopped_by_user = f"stopped by user{before}", True
        elif self.signalled is not None:
            run.terminated_by = self.signalled
            run.stop_reason = f"terminated by signal {self.signalled}{before}"
        return run.stop_reason is not None

    def stop_grace(self, template: Template) -> float:
        text = treefiles.read_capped(self.stop_file(), 256) or ""
        return NOW_GRACE if re.search(r"\bnow\b", text, re.I) else template.limit(self.cfg, "stop_grace")

    # --- the run ---
    def run(self) -> int:
        started = time.monotonic()
        meta = self._ensure_record()
        outcome, agent = Outcome(runs.FAILED), AgentRun()
        try:
            template = load_template(self.cfg.worker.template)
            if worktree.checked_out_branch(self.tree) != self.cfg.branch(self.task):
                raise worktree.WorktreeError(
                    f"{self.tree} is not a worktree on {self.cfg.branch(self.task)}")
            kill_leftovers(self.task, self.tree)
            # An earlier run's question: it was copied to state/runs when that run ended.
            (self.tree / treefiles.BLOCKED).unlink(missing_ok=True)
            worktree.ensure_ignored(self.cfg)
            start_head = worktree.head(self.tree)
            prompt = self._prompt(template, meta)
            refuse_root(self.cfg)
            sandboxed, self.sandbox_note = sandbox.mode(self.cfg)
            try:
                agent = self.run_setup(template, sandboxed) or self.run_agent(template, prompt,
                                                                              sandboxed)
            finally:
                sweep_descendants()  # before looking at the tree: no orphan still writes in it
            outcome = self.decide(template, agent, start_head, meta)
        except (Tac8Error, OSError) as exc:
            outcome = Outcome(runs.FAILED, error=describe(exc))
        except Exception as exc:  # the run must still end with an outcome on record
            outcome = Outcome(runs.FAILED, error=f"worker error: {type(exc).__name__}: {describe(exc)}")
        self.finish(meta, agent, outcome, time.monotonic() - started)
        return 0

    def _ensure_record(self) -> dict[str, Any]:
        """The run record's fields; a worker started by hand writes a fresh record."""
        record = runs.read_run(self.cfg, self.task)
        if record is not None and record.meta.get("worker_id") and not record.meta.get("outcome"):
            return record.meta
        meta = {
            "task": self.task, "worker_id": runs.new_worker_id(), "attempt": 1,
            "pid": os.getpid(), "started": now_iso(), "branch": self.cfg.branch(self.task),
            "worktree": str(self.tree),
        }
        runs.start_run(self.cfg, self.task, meta)
        return meta

    def _prompt(self, template: Template, meta: dict[str, Any]) -> Path:
        path = runs.prompt_file(self.cfg, self.task)
        if not path.exists():
            values = prompt_values(self.cfg, self.task, meta.get("title") or self.task,
                                   int(meta.get("attempt") or 1))
            atomic_write(path, render(template, values))
        return path

    def in_sandbox(self, command: list[str], sandboxed: bool) -> list[str]:
        """``command`` as the agent's are run: in its sandbox, when there is one."""
        if not sandboxed:
            return command
        admin = worktree.admin_dir(self.tree)
        if admin is None:
            raise worktree.WorktreeError(f"{self.tree}: not a worktree of {self.cfg.repo.path}")
        return sandbox.wrap(self.cfg, self.tree, admin, worktree.common_dir(self.cfg), command)

    def run_setup(self, template: Template, sandboxed: bool) -> AgentRun | None:
        """The template's ``setup`` in the tree before the agent (``npm ci``, a virtualenv):
        None when it succeeded (or there is none); else a run that failed to start, with the
        end of the setup's output for the run record, so the attempt fails and is retried."""
        if not template.setup:
            return None
        stopped = AgentRun()
        if self.check_stop(stopped, before=" before the setup"):
            return stopped  # (a stop during the setup waits for its end: then the agent's turn)
        env = sandbox.agent_env(template.env, self.task)
        try:
            done = proc.run(self.in_sandbox(template.setup, sandboxed), cwd=self.tree, env=env,
                            timeout=template.setup_timeout)
        except ExternalError as exc:  # could not start, or timed out
            return AgentRun(error=f"setup failed: {exc}")
        if done.returncode == 0:
            return None
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        return AgentRun(error=f"setup failed (exit {done.returncode}): "
                              f"{said.strip()[-SETUP_ERROR_CHARS:]}",  # its end says why
                        log_tail=said[-RECORD_TAIL:])

    def run_agent(self, template: Template, prompt: Path, sandboxed: bool) -> AgentRun:
        run = AgentRun()
        if self.check_stop(run, before=" before the agent started"):
            return run
        if shutil.which(template.command[0]) is None:  # (inside bwrap it would be exit 127)
            run.error = f"agent could not start: {template.command[0]}: not found"
            return run
        command = self.in_sandbox(template.command, sandboxed)
        log = CappedLog(self.cfg.agent_log(self.task))
        stream = StreamJson()
        try:
            with open(prompt, "rb") as stdin:
                proc = subprocess.Popen(
                    command, cwd=self.tree, stdin=stdin, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, env=sandbox.agent_env(template.env, self.task),
                    start_new_session=True,
                    preexec_fn=partial(die_with, os.getpid(), sandboxed),
                )
        except OSError as exc:
            log.close()
            run.error = f"agent could not start: {template.command[0]}: {exc.strerror or exc}"
            return run
        try:
            self._supervise(proc, template, log, stream, run)
        finally:
            if proc.returncode is None:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            log.close()
        run.exit_code = proc.returncode
        run.result = stream.result
        run.log_tail = log.tail_text()
        return run

    def _signal_group(self, proc: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    def _supervise(self, proc: subprocess.Popen, template: Template, log: CappedLog,
                   stream: StreamJson, run: AgentRun) -> None:
        max_runtime = template.limit(self.cfg, "max_runtime")
        stall = template.limit(self.cfg, "stall_timeout")
        out = proc.stdout.fileno()
        os.set_blocking(out, False)
        pidfd = os.pidfd_open(proc.pid)
        sel = selectors.DefaultSelector()
        sel.register(out, selectors.EVENT_READ, "out")
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        sel.register(self._wake_r, selectors.EVENT_READ, "signal")
        begun = last_output = time.monotonic()
        escalation: list[tuple[float, int]] = []  # (when, signal) still to send
        drain_until: float | None = None
        try:
            while True:
                now = time.monotonic()
                if run.stop_reason is None and drain_until is None:
                    if self.check_stop(run):
                        pass  # a person's STOP or a signal: noted in run
                    elif now - begun >= max_runtime:
                        run.stop_reason = f"max_runtime of {max_runtime:g} s exceeded"
                    elif now - last_output >= stall:
                        run.stop_reason = f"stalled: no output for {stall:g} s"
                    if run.stop_reason:
                        grace = self.stop_grace(template)
                        self._signal_group(proc, signal.SIGINT)
                        escalation = [(now + grace, signal.SIGTERM),
                                      (now + 2 * grace, signal.SIGKILL)]
                while escalation and escalation[0][0] <= now and drain_until is None:
                    self._signal_group(proc, escalation.pop(0)[1])
                if drain_until is not None and (now >= drain_until or out not in sel.get_map()):
                    return
                deadlines = [now + STOP_POLL]
                if drain_until is not None:
                    deadlines.append(drain_until)
                elif run.stop_reason is None:
                    deadlines += [begun + max_runtime, last_output + stall]
                elif escalation:
                    deadlines.append(escalation[0][0])
                timeout = max(0.0, min(deadlines) - now)
                for key, _ in sel.select(timeout):
                    if key.data == "out":
                        chunk = os.read(out, 65536)
                        if not chunk:
                            sel.unregister(out)
                            continue
                        log.write(chunk)
                        stream.feed(chunk)
                        last_output = time.monotonic()
                    elif key.data == "exit":
                        proc.wait()
                        sel.unregister(pidfd)
                        drain_until = time.monotonic() + DRAIN
                    else:
                        try:
                            while os.read(self._wake_r, 512):
                                pass
                        except BlockingIOError:
                            pass
        finally:
            sel.close()
            os.close(pidfd)

    # --- the outcome ---
    def decide(self, template: Template, agent: AgentRun, start_head: str,
               meta: dict[str, Any]) -> Outcome:
        tree = self.tree
        if treefiles.present(tree / treefiles.BLOCKED):
            self.set_question_aside()
            head = worktree.head(tree)
            return Outcome(runs.BLOCKED, commit=head if head != start_head else None)
        if agent.stopped_by_user or treefiles.present(self.stop_file()):
            return self.save_work(Outcome(runs.STOPPED), "WIP: Stopped by user", start_head)
        if agent.error:  # it never ran: nothing to save
            return Outcome(runs.FAILED, error=agent.error)
        failure = self.failure(template, agent)
        if failure:  # its work is kept (pushed) for the retry or a person, but is no PR
            limit = self.usage_limit(template, agent)
            if limit is not None:
                failure = f"the agent hit the provider's usage limit: {limit.said}"
            return self.save_work(Outcome(runs.FAILED, error=failure, limit=limit),
                                  f"WIP: {failure[:72]}", start_head)
        title = meta.get("title") or self.task
        commit, skipped = worktree.commit_all(
            tree, f"{title}\n\nChanges the agent left uncommitted, committed by tac8 "
                  f"({meta.get('worker_id')}).\n", self.max_new_bytes)
        if commit == start_head and not self.undelivered(commit):
            return Outcome(runs.FAILED, error="exited without changes", skipped=skipped)
        return self.deliver(title, commit, skipped, meta.get("worker_id"))

    def failure(self, template: Template, agent: AgentRun) -> str | None:
        """Why an agent that ran did not succeed (None: it did)."""
        if agent.terminated_by is not None or agent.stop_reason:
            return agent.stop_reason
        if template.stream_json:
            if agent.result is None:
                return f"the agent ended without a final result message (exit code {agent.exit_code})"
            if agent.result.get("is_error"):
                said = agent.result.get("result") or agent.result.get("subtype") or "no detail"
                return f"the agent reported an error: {str(said)[:300]}"
        if agent.exit_code:
            return f"the agent exited with code {agent.exit_code}"
        return None

    @staticmethod
    def usage_limit(template: Template, agent: AgentRun) -> Limit | None:
        """The usage limit the agent ended at, if it ended by itself with a final result
        saying so (only a stream-json agent's result tells)."""
        if not template.stream_json or agent.stop_reason is not None:
            return None
        return limit_reached(agent.result)

    @property
    def max_new_bytes(self) -> int:
        return self.cfg.worker.max_leftover_file_kb * 1024

    def save_work(self, outcome: Outcome, message: str, start_head: str) -> Outcome:
        """Commit what the agent left as work in progress (the leftovers rule applies) and
        push it, so nothing is lost; ``outcome`` with the commit, if this run made one."""
        commit, outcome.skipped = worktree.commit_all(self.tree, message, self.max_new_bytes)
        if commit == start_head:
            return outcome
        outcome.commit = commit
        branch = self.cfg.branch(self.task)
        # A PR under review is no place for half-done work: reviewers and CI would take it
        # for the round's; it goes to a branch beside it, and the next attempt carries on.
        to = f"{branch}{WIP_SUFFIX}" if self.pr_open() else branch
        try:
            worktree.push(self.cfg, self.tree, branch, to=to)
            if to != branch:
                outcome.error = "; ".join(filter(None, [outcome.error, f"WIP pushed to {to}"]))
        except worktree.GitError as exc:  # kept in the tree; the next attempt pushes it
            outcome.error = "; ".join(filter(None, [outcome.error, f"WIP not pushed: {describe(exc)}"]))
        return outcome

    def pr_open(self) -> bool:
        """Whether the task has a PR on GitHub that is still open (a rework round's)."""
        marker = runs.read_pr_marker(self.cfg, self.task) or {}
        return bool(self.cfg.github.repo and marker.get("number") and not marker.get("pr_state"))

    def deliver(self, title: str, commit: str, skipped: list[str], worker_id: str) -> Outcome:
        """Push the branch, then queue its PR for the fetcher, which opens it (or finds it
        open) with retries and writes the PR marker: a GitHub fault never reruns the agent.
        With no GitHub repository the pushed branch is the result: the marker, now."""
        branch = self.cfg.branch(self.task)
        try:
            worktree.push(self.cfg, self.tree, branch)
        except worktree.GitError as exc:
            return Outcome(runs.FAILED, error=f"push failed: {describe(exc)}", commit=commit,
                           skipped=skipped)
        if self.cfg.github.repo:
            queue_pr(self.cfg, self.task, worker_id, branch, self.cfg.repo.base_branch, title,
                     commit, self.pr_body(skipped))
        else:
            runs.write_pr_marker(self.cfg, self.task, worker_id=worker_id, url="", number=None,
                                 head=branch, commit=commit, found_by="worker")
        return Outcome(runs.PR, commit=commit, skipped=skipped)

    def set_question_aside(self) -> None:
        """Copy the agent's ``BLOCKED.md`` (capped; only a regular file is read) to
        ``state/runs/<task>.question.md`` for the observer's comment and the next prompt,
        then take it out of the tree so the next run does not end blocked at once."""
        path = self.tree / treefiles.BLOCKED
        question = treefiles.read_capped(path)
        if question is None:
            question = f"({treefiles.BLOCKED} is not a regular file: tac8 did not read it)"
        atomic_write(runs.question_file(self.cfg, self.task), question)
        path.unlink(missing_ok=True)

    def undelivered(self, commit: str) -> bool:
        """Work from an earlier attempt that never reached a PR: commits not pushed, or
        commits beyond the base that no PR marker names (the push worked, the PR did not)."""
        if worktree.unpublished_commits(self.cfg, self.tree):
            return True
        marker = runs.read_pr_marker(self.cfg, self.task)
        return (marker or {}).get("commit") != commit and worktree.commits_ahead(self.cfg, self.tree) > 0

    def pr_body(self, skipped: list[str]) -> str:
        body = f"Written by an AI agent for tac8 task `{self.task}`."
        number = issue_number(self.task)
        if number is not None:
            body += f"\n\nCloses #{number}."
        if skipped:
            body += ("\n\nFiles the agent left that tac8 did not commit:\n\n"
                     + code_block("\n".join(skipped)))
        return body

    # --- the end ---
    def finish(self, meta: dict[str, Any], agent: AgentRun, outcome: Outcome,
               seconds: float) -> None:
        usage = (agent.result or {}).get("usage") or {}
        tokens = sum(v for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int))
        result = agent.result or {}
        fields = {
            "outcome": outcome.outcome, "exit_code": agent.exit_code, "finished": now_iso(),
            "error": outcome.error, "commit": outcome.commit,
            "cost_usd": result.get("total_cost_usd"), "tokens": tokens if usage else None,
            "turns": result.get("num_turns"), "sandbox": self.sandbox_note,
            "skipped_leftovers": outcome.skipped or None,
        }
        if outcome.limit is not None:
            fields.update(usage_limit=True, limit_resets=self.pause_for(outcome.limit))
        elif agent.result is not None:
            self.limit_passed(meta)

        # At least once, each under its run's key (metrics deduplicates): emitted before the
        # outcome is recorded, so a crash in between only repeats them (the observer emits
        # run_finished for a worker that died without an outcome).
        worker_id = meta.get("worker_id")
        emit(self.cfg.events_dir, "run_finished", self.task, outcome=outcome.outcome,
             exit_code=agent.exit_code, error=outcome.error, cost_usd=fields["cost_usd"],
             tokens=fields["tokens"], seconds=round(seconds, 1), worker_id=worker_id,
             **({"usage_limit": True} if outcome.limit else {}),
             key=run_key(self.task, worker_id, "run_finished"))

        def write(record: Any) -> None:
            record.meta.update(fields)
            record.body = agent.log_tail

        runs.update_run(self.cfg, self.task, write)

    # Both before the outcome is recorded (the observer then hands the task back to the
    # launcher), and neither may keep it from being recorded.
    def pause_for(self, limit: Limit) -> str:
        """Pause launching for the usage limit; when launching resumes (ISO), or "" if the
        pause could not be written."""
        try:
            return iso_at(pause_for_limit(self.cfg, limit.reset_at).timestamp())
        except (Tac8Error, OSError) as exc:
            print(f"worker: {self.task}: could not pause for the usage limit: {describe(exc)}",
                  file=sys.stderr)
            return ""

    def limit_passed(self, meta: dict[str, Any]) -> None:
        """The provider answered this run to the end: usage limits are no longer in a row."""
        started = parse_iso(meta.get("started"))
        try:
            if started is not None:
                limit_passed(self.cfg, started)
        except (Tac8Error, OSError) as exc:
            print(f"worker: {self.task}: could not forget the usage limits: {describe(exc)}",
                  file=sys.stderr)


def name_process(name: str) -> None:
    """Set this process's name as ``ps -o comm`` and ``/proc/PID/comm`` show it."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker")
    parser.add_argument("task")
    parser.add_argument("--lock-fd", type=int, metavar="N",
                        help="descriptor holding the task's liveness lock (from the launcher)")
    add_config_argument(parser)
    args = parser.parse_args(argv)
    os.environ["TAC8_PROGRAM"] = "worker"
    task, lock_fd = args.task, args.lock_fd
    name_process(WORKER_NAME)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    worker = Worker(cfg, task)
    worker.install_signals()
    path = cfg.liveness_lock(task)
    try:
        lock = adopt(path, lock_fd) if lock_fd is not None else hold(path, wait=0.5)
    except AlreadyHeld as exc:
        print(f"worker: {task}: another worker is alive ({exc})", file=sys.stderr)
        return 3
    with lock:
        become_subreaper()
        return worker.run()


if __name__ == "__main__":
    status = main()
    # Everything the run leaves is durable by now (records and events are fsync'd, the lock
    # is released): skip the interpreter's teardown, which costs the slot ~13 ms.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
