"""The metrics program: folds events into ``metrics.json`` (files and keys: docs/PROTOCOL.md).

``python -m services.metrics [--config PATH]``. It reads and deletes ``state/events/new/*``,
reads tasks.md (the pending count), the liveness locks and the heartbeats, and writes
``state/metrics.state.json`` (its durable tally), ``metrics.json`` and, when
``[metrics] prometheus_file`` is set, a Prometheus textfile; with ``[notify] url`` set, it
stages and sends notifications (``shared/notify.py``).

Each event is counted once across ``kill -9`` at any instant: a batch is folded (skipping keys
the tally has seen: ``SEEN_KEEP``), the tally written atomically, then the batch's files
deleted; ``metrics.json`` is derived from the tally alone. An SD card wears out, so all this
happens at most once every ``min_write_interval`` seconds however many events arrive, and
``metrics.json`` is not rewritten when only the clock changed (nor ``status.html``, the status
page beside it: ``shared/statuspage.py``). New events wake the loop; a
slow timer (``REFRESH_EVERY``) refreshes what no event announces: heartbeats, live workers,
the pending count, errors ageing out of the health window.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from watchdog.events import EVENT_TYPE_CREATED, EVENT_TYPE_MOVED

from shared.clock import iso_at, parse_iso
from shared.config import Config
from shared.fsio import atomic_write, fsync_dir, pending, publish_file, stage_file, sweep_tmp
from shared.health import HEALTH_WINDOW, LEVELS, Recent, assess, heartbeat_ages, is_stale, read_metrics
from shared.notify import Notifier
from shared.program import Program
from shared.records import RecordError, read_record
from shared.runs import live_tasks
from shared.statuspage import StatusPage
from shared.tasks import PENDING, Board, read_board

log = logging.getLogger("metrics")

STAGED_EVENTS_KEPT = 3600.0  # seconds: older files in events/tmp are a crashed producer's
REFRESH_EVERY = 30.0  # seconds between timer wake-ups when no event arrives
FOLD_BATCH = 1000  # events folded per state write (bounds a crash's redo)
SEEN_KEEP = 2 * FOLD_BATCH  # keys of the last events counted (a repeat follows a crash)
SWEEP_EVERY = 3600.0  # seconds between sweeps of producers' crashed leftovers in events/tmp
RECENT_KEEP = 100  # timestamps kept per kind of recent fact; more than any health threshold
LAUNCH_TO_PR_SAMPLES = 100  # launch→PR durations kept for the median
PROBLEMS_LISTED = 20  # tasks.md problems listed in metrics.json (all are counted)
TRACKED_LAUNCHES = 1000  # launches awaiting their PR; the oldest are dropped beyond this
DETAIL_CHARS = 300  # longer strings in history details are cut
STATE_VERSION = 1

# Events that the health rules count in their window (``Tally.recent``). Tasks, not attempts:
# a run that failed and is retried is no failure; task_failed comes when the last attempt fails.
RECENT_KINDS = ("worktree_error", "github_api_error", "task_failed", "task_completed")
# Fields that change with the clock alone: a change in them is not worth a write.
CLOCK_FIELDS = ("uptime_seconds", "last_update")


def state_path(cfg: Config) -> Path:
    return cfg.state_dir / "metrics.state.json"


def _plain(value: Any) -> Any:
    """A JSON-safe copy of an event detail (YAML may hand us dates), long text cut."""
    if isinstance(value, str):
        return value if len(value) <= DETAIL_CHARS else value[: DETAIL_CHARS - 1] + "…"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _plain(str(value))


def _number(value: Any) -> float:
    """A cost or token count as reported (a number, numeric text, or a dict of parts)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        return sum(_number(v) for v in value.values())
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0


def _event_time(value: Any, folded_at: float) -> float:
    """The event's ``at`` as epoch seconds; never later than when it was folded (a producer
    with a clock ahead must not keep an error in the health window forever)."""
    moment = parse_iso(value)
    return folded_at if moment is None else min(moment.timestamp(), folded_at)


def _run_of(meta: dict[str, Any]) -> str:
    """The run an event is about (a task is launched again after a failure or a stop)."""
    return f"{meta.get('task')}/{meta.get('worker_id')}"


def _local_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().date().isoformat()


class Tally:
    """Everything folded so far: the durable state of the metrics program."""

    def __init__(self, data: dict[str, Any] | None = None, history_size: int = 100):
        data = data or {}
        self.history_size = history_size
        self.counts: dict[str, int] = data.get("counts", {})  # events by type
        self.outcomes: dict[str, int] = data.get("outcomes", {})  # run_finished by outcome
        self.usage_limits: int = data.get("usage_limits", 0)  # runs the provider's limit ended
        self.unreadable: int = data.get("unreadable", 0)
        self.cost_usd_total: float = data.get("cost_usd_total", 0.0)
        self.tokens_total: int = data.get("tokens_total", 0)
        self.day: dict[str, Any] = data.get("day", {"date": "", "cost_usd": 0.0, "tokens": 0})
        self.rate_limit: dict[str, Any] | None = data.get("rate_limit")
        self.launched_at: dict[str, float] = data.get("launched_at", {})
        self.launch_to_pr: list[float] = data.get("launch_to_pr", [])
        self.recent: dict[str, list[float]] = {k: data.get("recent", {}).get(k, [])
                                               for k in RECENT_KINDS}
        self.history: list[dict[str, Any]] = data.get("history", [])
        # Keys of the events folded last, oldest first: producers deliver at least once
        # and repeat an event only when they redo a step after a crash, so a short memory
        # is enough to count each event once.
        self.seen: list[str] = data.get("seen", [])
        self._seen = set(self.seen)

    def to_json(self) -> str:
        return json.dumps({
            "version": STATE_VERSION, "counts": self.counts, "outcomes": self.outcomes,
            "usage_limits": self.usage_limits,
            "unreadable": self.unreadable, "cost_usd_total": self.cost_usd_total,
            "tokens_total": self.tokens_total, "day": self.day, "rate_limit": self.rate_limit,
            "launched_at": self.launched_at, "launch_to_pr": self.launch_to_pr,
            "recent": self.recent, "history": self.history, "seen": self.seen,
        }, separators=(",", ":"))

    def _remember(self, kind: str, at: float) -> None:
        self.recent[kind] = sorted([*self.recent[kind], at])[-RECENT_KEEP:]

    def fold_once(self, key: str, meta: dict[str, Any], folded_at: float) -> bool:
        """Count the event ``meta`` unless its ``key`` was counted already; whether it was."""
        if key in self._seen:
            return False
        self.fold(meta, folded_at)
        self.seen.append(key)
        self._seen.add(key)
        if len(self.seen) > SEEN_KEEP:
            for old in self.seen[: len(self.seen) - SEEN_KEEP]:
                self._seen.discard(old)
            del self.seen[: len(self.seen) - SEEN_KEEP]
        return True

    def fold(self, meta: dict[str, Any], folded_at: float) -> None:
        """Count one event (its frontmatter)."""
        kind = str(meta.get("type") or "unknown")
        at = _event_time(meta.get("at"), folded_at)
        task = meta.get("task")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind in RECENT_KINDS:
            self._remember(kind, at)
        if kind == "rate_limit":
            if self.rate_limit is None or at >= self.rate_limit["at"]:
                self.rate_limit = {"remaining": _plain(meta.get("remaining")),
                                   "reset": _plain(meta.get("reset")), "at": at}
        elif kind == "worker_launched" and task:
            self.launched_at[_run_of(meta)] = at
            for old in sorted(self.launched_at, key=self.launched_at.get)[:-TRACKED_LAUNCHES]:
                del self.launched_at[old]
        elif kind == "pr_created" and _run_of(meta) in self.launched_at:
            seconds = max(0.0, at - self.launched_at.pop(_run_of(meta)))
            self.launch_to_pr = [*self.launch_to_pr, seconds][-LAUNCH_TO_PR_SAMPLES:]
        elif kind == "run_finished":
            self._fold_run(meta, at)
        self.history.append({
            "timestamp": meta["at"] if isinstance(meta.get("at"), str) else iso_at(at),
            "type": kind,
            "details": {k: _plain(v) for k, v in meta.items() if k not in ("type", "at")},
        })
        if len(self.history) > self.history_size:
            del self.history[: len(self.history) - self.history_size]

    def _fold_run(self, meta: dict[str, Any], at: float) -> None:
        outcome = str(meta.get("outcome") or "unknown")
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.usage_limits += meta.get("usage_limit") is True
        if outcome != "pr":
            # No PR will follow. A run that made one keeps its launch time until its
            # pr_created is folded, whichever of the two events comes first.
            self.launched_at.pop(_run_of(meta), None)
        cost, tokens = _number(meta.get("cost_usd")), int(_number(meta.get("tokens")))
        self.cost_usd_total += cost
        self.tokens_total += tokens
        date = _local_date(at)
        if date > self.day["date"]:
            self.day = {"date": date, "cost_usd": 0.0, "tokens": 0}
        if date == self.day["date"]:
            self.day["cost_usd"] += cost
            self.day["tokens"] += tokens

    def recent_counts(self, since: float) -> Recent:
        def within(kind: str) -> int:
            return sum(1 for at in self.recent[kind] if at >= since)
        return Recent(worktree_errors=within("worktree_error"),
                      github_api_errors=within("github_api_error"),
                      failures=within("task_failed"), completions=within("task_completed"))


def _without_clock(snapshot: dict[str, Any] | None) -> Any:
    """What a write must change for it to be worth making."""
    if snapshot is None:
        return None
    rest = {k: v for k, v in snapshot.items() if k not in CLOCK_FIELDS}
    rest["heartbeats"] = {p: beat.get("stale") for p, beat in (rest.get("heartbeats") or {}).items()}
    return rest


class Metrics:
    """The tally on disk, the events it folds, and the files it writes."""

    def __init__(self, cfg: Config, window: float = HEALTH_WINDOW):
        self.cfg = cfg
        self.window = window
        self.started = time.monotonic()
        self._remove_leftovers()
        self.tally = self._load()
        self.notifier = Notifier(cfg)
        self._written = _without_clock(read_metrics(cfg))
        self.page = StatusPage(cfg)

    def _outputs(self) -> list[Path]:
        extra = [Path(self.cfg.metrics.prometheus_file)] if self.cfg.metrics.prometheus_file else []
        return [state_path(self.cfg), self.cfg.paths.metrics, self.cfg.status_page, *extra]

    def _remove_leftovers(self) -> None:
        """Delete the temporary files of atomic writes cut short by a kill: this program
        is the only writer of its outputs (single instance), so any such file is dead."""
        for path in self._outputs():
            for tmp in path.parent.glob(f".{path.name}.tmp.*"):
                tmp.unlink(missing_ok=True)

    def _load(self) -> Tally:
        path = state_path(self.cfg)
        size = self.cfg.metrics.history
        try:
            return Tally(json.loads(path.read_text(encoding="utf-8")), size)
        except FileNotFoundError:
            return Tally(history_size=size)
        except ValueError as exc:
            # Written atomically, so only a person can have broken it; keep it for them and
            # start over rather than stop counting.
            aside = path.with_name(f"{path.name}.bad-{time.time_ns()}")
            path.rename(aside)
            log.error("%s unreadable (%s); moved to %s, counting from zero", path, exc, aside)
            return Tally(history_size=size)

    def fold_pending(self) -> int:
        """Fold and delete every event waiting in ``new/``; returns how many were counted
        (an event whose key was counted already is deleted, not counted)."""
        folded = 0
        for batch in _chunks(pending(self.cfg.events_dir), FOLD_BATCH):
            counted = sum(self._fold_file(path) for path in batch)
            if counted:
                atomic_write(state_path(self.cfg), self.tally.to_json())
                folded += counted
            for path in batch:  # only once their effect is durable
                path.unlink(missing_ok=True)
            # The deletes are made durable before a later state write can forget these keys
            # (SEEN_KEEP): after a power cut, an event both forgotten and back would count twice.
            fsync_dir(self.cfg.events_dir / "new")
        return folded

    def _fold_file(self, path: Path) -> bool:
        try:
            meta = read_record(path).meta
        except FileNotFoundError:
            return False
        except (RecordError, UnicodeDecodeError) as exc:
            self.tally.unreadable += 1
            log.warning("unreadable event %s dropped: %s", path.name, exc)
            return True
        # An event from before keys (or hand-made) is keyed by its unique file name.
        key = str(meta.get("key") or path.name)
        counted = self.tally.fold_once(key, meta, time.time())
        if counted:  # staged before the tally that counted it is written: a crash repeats it
            self.notifier.stage(key, meta)
        return counted

    def snapshot(self, now: float | None = None, board: Board | None = None) -> dict[str, Any]:
        """The content of ``metrics.json`` at ``now`` (epoch seconds), ``board`` the tasks.md
        read (read now if not given)."""
        now = time.time() if now is None else now
        t = self.tally
        ages = heartbeat_ages(self.cfg, now)
        recent = t.recent_counts(now - self.window)
        health, reasons = assess(recent, [p for p, age in ages.items() if is_stale(age)])
        completed, failed = t.outcomes.get("pr", 0), t.outcomes.get("failed", 0)
        merged, unmerged = t.counts.get("pr_merged", 0), t.counts.get("pr_closed", 0)
        today = t.day if t.day["date"] == _local_date(now) else {"cost_usd": 0.0, "tokens": 0}
        board = read_board(self.cfg.tasks_file) if board is None else board
        return {
            "workers_launched": t.counts.get("worker_launched", 0),
            "workers_completed": completed,
            "workers_failed": failed,
            "workers_blocked": t.outcomes.get("blocked", 0),
            "prs_created": t.counts.get("pr_created", 0),
            "prs_merged": merged,
            "prs_closed_unmerged": unmerged,
            "worktree_errors": t.counts.get("worktree_error", 0),
            "github_api_errors": t.counts.get("github_api_error", 0),
            "uptime_seconds": int(time.monotonic() - self.started),
            "last_update": iso_at(now),
            "health": health,
            "health_reasons": reasons,
            "workers_stopped": t.outcomes.get("stopped", 0),
            "usage_limits": t.usage_limits,
            "workers_active": self._live_workers(),
            "launch_failures": t.counts.get("launch_failed", 0),
            "tasks_pending": len(board.tasks(PENDING)),
            "tasks_problems": len(board.problems),  # lines a person should look at
            "tasks_problem_lines": [{"line": p.line, "text": _plain(p.text), "problem": p.why}
                                    for p in board.problems[:PROBLEMS_LISTED]],
            "success_rate": _success_rate(merged, unmerged, t.counts.get("task_failed", 0),
                                          completed, failed),
            "github_rate_limit_remaining": (t.rate_limit or {}).get("remaining"),
            "github_rate_limit_reset": (t.rate_limit or {}).get("reset"),
            "cost_usd_today": round(today["cost_usd"], 4),
            "cost_usd_total": round(t.cost_usd_total, 4),
            "tokens_today": today["tokens"],
            "tokens_total": t.tokens_total,
            "median_seconds_launch_to_pr": (round(statistics.median(t.launch_to_pr), 1)
                                            if t.launch_to_pr else None),
            "recent_window_seconds": self.window,
            "recent": {"worktree_errors": recent.worktree_errors,
                       "github_api_errors": recent.github_api_errors,
                       "tasks_failed": recent.failures, "tasks_completed": recent.completions},
            "heartbeats": {p: {"age_seconds": None if age is None else int(age), "stale": is_stale(age)}
                           for p, age in ages.items()},
            "events": dict(sorted(t.counts.items())),
            "events_unreadable": t.unreadable,
            "history": t.history,
        }

    def _live_workers(self) -> int:
        return len(live_tasks(self.cfg))

    def publish(self, now: float | None = None) -> bool:
        """Write ``metrics.json`` (and the textfile) if anything but the clock changed, and
        the status page if anything it shows did; whether anything was written."""
        board = read_board(self.cfg.tasks_file)
        snapshot = self.snapshot(now, board)
        paged = self.page.publish(snapshot, board)
        essence = _without_clock(json.loads(json.dumps(snapshot)))
        if essence == self._written:
            return paged
        atomic_write(self.cfg.paths.metrics, json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n")
        if self.cfg.metrics.prometheus_file:
            # node_exporter reads it as a user of its own: readable by all despite umask 077
            textfile = Path(self.cfg.metrics.prometheus_file)
            staged = stage_file(textfile, prometheus_text(snapshot))
            os.chmod(staged, 0o644)
            publish_file(staged, textfile)
        self._written = essence
        return True


def _success_rate(merged: int, unmerged: int, tasks_failed: int, completed: int,
                  failed: int) -> float | None:
    """Merged PRs over finished work (merged, closed unmerged, tasks failed) once any PR
    was merged or closed; before that, runs that made a PR over runs that made one or failed."""
    if merged + unmerged:
        return round(merged / (merged + unmerged + tasks_failed), 3)
    return round(completed / (completed + failed), 3) if completed + failed else None


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# name, metrics.json field, Prometheus type, help
_PROMETHEUS = (
    ("workers_launched_total", "workers_launched", "counter", "Workers started."),
    ("workers_completed_total", "workers_completed", "counter", "Workers that ended with a PR."),
    ("workers_failed_total", "workers_failed", "counter", "Workers that ended without a PR."),
    ("workers_blocked_total", "workers_blocked", "counter", "Workers that asked a question."),
    ("workers_stopped_total", "workers_stopped", "counter", "Workers stopped by a person."),
    ("prs_created_total", "prs_created", "counter", "Pull requests opened."),
    ("prs_merged_total", "prs_merged", "counter", "Pull requests merged."),
    ("prs_closed_unmerged_total", "prs_closed_unmerged", "counter",
     "Pull requests closed without a merge."),
    ("worktree_errors_total", "worktree_errors", "counter", "Worktree errors."),
    ("github_api_errors_total", "github_api_errors", "counter", "GitHub API errors."),
    ("launch_failures_total", "launch_failures", "counter", "Workers that could not start."),
    ("usage_limits_total", "usage_limits", "counter", "Runs ended by the provider's usage limit."),
    ("workers_active", "workers_active", "gauge", "Workers running now."),
    ("tasks_pending", "tasks_pending", "gauge", "Tasks waiting in tasks.md."),
    ("tasks_problems", "tasks_problems", "gauge", "Lines of tasks.md a person should look at."),
    ("success_ratio", "success_rate", "gauge",
     "Merged / (merged + closed unmerged + tasks failed); completed / (completed + failed)"
     " before any PR was merged or closed."),
    ("github_rate_limit_remaining", "github_rate_limit_remaining", "gauge",
     "GitHub API requests left in the current window."),
    ("cost_usd_total", "cost_usd_total", "counter", "Agent cost in USD."),
    ("cost_usd_today", "cost_usd_today", "gauge", "Agent cost in USD today."),
    ("tokens_total", "tokens_total", "counter", "Agent tokens."),
    ("tokens_today", "tokens_today", "gauge", "Agent tokens today."),
    ("launch_to_pr_seconds_median", "median_seconds_launch_to_pr", "gauge",
     "Median seconds from launch to pull request."),
    ("uptime_seconds", "uptime_seconds", "gauge", "Seconds since the metrics program started."),
)


def prometheus_text(snapshot: dict[str, Any]) -> str:
    """The snapshot in the text format of node_exporter's textfile collector."""
    lines = []
    for name, field, kind, text in _PROMETHEUS:
        value = snapshot.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines += [f"# HELP tac8_{name} {text}", f"# TYPE tac8_{name} {kind}", f"tac8_{name} {value}"]
    lines += ["# HELP tac8_health 1 for the current health level.", "# TYPE tac8_health gauge"]
    lines += [f'tac8_health{{level="{lvl}"}} {int(snapshot["health"] == lvl)}' for lvl in LEVELS]
    lines += ["# HELP tac8_heartbeat_age_seconds Seconds since a program's last heartbeat.",
              "# TYPE tac8_heartbeat_age_seconds gauge"]
    lines += [f'tac8_heartbeat_age_seconds{{program="{p}"}} {beat["age_seconds"]}'
              for p, beat in snapshot["heartbeats"].items() if beat["age_seconds"] is not None]
    return "\n".join(lines) + "\n"


class Service:
    """The loop: fold and publish at most once per ``min_write_interval``."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.metrics = Metrics(prog.cfg)
        self.interval = prog.cfg.metrics.min_write_interval
        self._next_pass = 0.0  # monotonic time before which nothing is written
        self._next_sweep = 0.0

    def cycle(self) -> None:
        wait = self._next_pass - time.monotonic()
        if wait > 0 and not self.prog.sleep(wait):
            return
        if time.monotonic() >= self._next_sweep:
            sweep_tmp(self.prog.cfg.events_dir, older_than=STAGED_EVENTS_KEPT)
            self._next_sweep = time.monotonic() + SWEEP_EVERY
        folded = self.metrics.fold_pending()
        wrote = self.metrics.publish()
        if folded or wrote:
            self._next_pass = time.monotonic() + self.interval
            log.debug("folded %d events, metrics.json or status.html %s", folded,
                      "written" if wrote else "unchanged")
        self.metrics.notifier.send_due()


def main(argv: list[str] | None = None) -> int:
    with Program.from_argv("metrics", argv) as prog:
        service = Service(prog)
        # a new event wakes the loop; our own deletes do not
        prog.watch(prog.cfg.events_dir / "new",
                   wanted=lambda e: e.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED))
        # the slow timer, or sooner when a notification's retry is due
        prog.run(service.cycle, interval=lambda: min(REFRESH_EVERY, service.metrics.notifier.due_in()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
