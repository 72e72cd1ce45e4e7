"""``tac8 status``: the dashboard — health, counters, queue, workers, last events.

It reads ``metrics.json``, ``tasks.md``, ``state/runs/``, ``logs/<task>.jsonl``,
``state/PAUSE``, the heartbeats and the programs' single-instance locks; it writes nothing.
``gather_status`` collects (``--json`` prints it as is, in ASCII), ``render_status`` lays it
out without control characters (``shared.text.printable``), as wide as the terminal
(``services.cli.layout``: 80 columns when piped), long lines wrapped between words.

``--watch`` refreshes every ``--interval`` seconds (at least 0.5): redrawn in place on a
terminal; piped, each refresh follows the last after a ``---`` line, without escape codes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from datetime import datetime
from typing import Any

from services.cli.layout import FALLBACK_WIDTH, columns, glued, shorten, terminal_width, wrap
from shared.agentlog import last_output
from shared.clock import duration, parse_iso
from shared import sandbox
from shared.config import Config, load_config
from shared.errors import ConfigError
from shared.health import heartbeat_ages, is_stale, read_metrics
from shared.locks import holder, is_held
from shared.pause import read_pause
from shared.runs import read_run, worker_alive
from shared.tasks import ACTIVE, NOT_UNDERSTOOD, SECTIONS, Task, read_board
from shared.text import printable

STATUS_EVENTS = 5  # last events shown
SECTION_LINES = 8  # tasks listed per section
SHOWN_DETAILS = ("CI", "Feedback")  # details of a line shown under it
PROBLEMS_SHOWN = 5  # tasks.md problems listed (all of them in --json)
PROBLEM_TEXT = 40  # columns of a problem line quoted
LABEL = 10  # columns of the labels (Workers, Queue…) the facts after them are aligned to
EVENT_LINES = 2  # lines an event may take: its details are shortened in the middle to fit
EVENT_INDENT = 6  # columns an event's second line is indented
MIN_INTERVAL = 0.5  # seconds between redraws: more often only burns CPU (and, piped, disk)
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen: a terminal's redraw in place
RULE = "---\n"  # between two refreshes where there is no screen to redraw
# event details that are bookkeeping, not news: the key only deduplicates deliveries
_NOT_FACTS = ("program", "task", "key")


def epoch(value: Any) -> float | None:
    """An ISO 8601 time (text or a YAML datetime) as epoch seconds."""
    moment = parse_iso(value)
    return None if moment is None else moment.timestamp()


def _program_states(cfg: Config, now: float) -> dict[str, dict[str, Any]]:
    """Running (its single-instance lock is held), since when, heartbeat age."""
    states = {}
    for program, age in heartbeat_ages(cfg, now).items():
        lock = cfg.program_lock(program)
        running = is_held(lock)
        since = re.search(r"since=(\S+)", holder(lock)) if running else None
        started = epoch(since.group(1)) if since else None
        states[program] = {
            "running": running,
            "up_seconds": now - started if started else None,
            "heartbeat_age_seconds": age,
            "heartbeat_stale": is_stale(age),
        }
    return states


def _task_summary(task: Task) -> dict[str, Any]:
    return {"id": task.id, "title": task.title, "priority": task.effective_priority,
            "marker": task.marker, "details": dict(task.details)}


def _worker(cfg: Config, task: Task, now: float) -> dict[str, Any]:
    run = read_run(cfg, task.id) if task.id else None
    meta = run.meta if run else {}
    started = epoch(meta.get("started")) if meta.get("started") else None
    return {
        "task": task.id, "title": task.title,
        "worker_id": meta.get("worker_id") or task.worker,
        "attempt": meta.get("attempt"), "pid": meta.get("pid"),
        "alive": bool(task.id) and worker_alive(cfg, task.id),
        "runtime_seconds": now - started if started else None,
        "last_output": last_output(cfg.agent_log(task.id)) if task.id else "",
    }


def gather_status(cfg: Config, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    board = read_board(cfg.tasks_file)
    metrics = read_metrics(cfg)
    written = epoch(metrics.get("last_update")) if metrics else None
    return {
        "metrics": metrics,
        "metrics_written_seconds_ago": now - written if written else None,
        "programs": _program_states(cfg, now),
        "paused": read_pause(cfg),
        "sandbox": _sandbox(cfg),
        "queue": {section: [_task_summary(t) for t in board.tasks(section)] for section in SECTIONS},
        "workers": [_worker(cfg, t, now) for t in board.tasks(ACTIVE)],
        "tasks_problems": [{"line": p.line, "text": p.text, "problem": p.why}
                           for p in board.problems],
    }


def _sandbox(cfg: Config) -> str:
    """What the next agent will run in: "bwrap", or "none (why)"."""
    try:
        return sandbox.mode(cfg)[1]
    except ConfigError as exc:  # sandbox = "bwrap" and it does not work: runs will fail
        return f"none: runs fail ({exc})"


def _until(value: Any) -> str:
    """When a pause ends by itself (a usage limit's), as " until 15:00" (with the date when
    not today); "" for a pause that lasts until resumed."""
    end = parse_iso(value) if value else None
    if end is None:
        return ""
    return f" until {end:%H:%M}" if end.date() == datetime.now().date() \
        else f" until {end:%Y-%m-%d %H:%M}"


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _facts(label: str, *facts: str) -> str:
    """A labelled line of facts separated by " · ", each kept whole where it wraps."""
    return f"{label:<{LABEL}}" + " · ".join(glued(fact) for fact in facts)


def render_status(st: dict[str, Any], width: int = FALLBACK_WIDTH) -> str:
    """The dashboard in lines of at most ``width`` columns (long ones wrapped between
    words), without control characters."""
    out: list[str] = []

    def add(line: str, indent: int | None = None) -> None:
        # titles, Blocked/Error details, the agent's last line and event details are
        # others' text: made printable before they are measured and wrapped
        out.extend(wrap(printable(line), width, indent))

    m = st["metrics"] or {}
    programs = st["programs"]
    ups = [p["up_seconds"] for p in programs.values() if p["up_seconds"] is not None]
    health = m.get("health", "unknown (no metrics.json yet)")
    written = st["metrics_written_seconds_ago"]
    add(f"tac8   health: {health.upper() if m else health}   "
        f"up {duration(max(ups)) if ups else '— (no program running)'}   "
        f"metrics.json written {duration(written) + ' ago' if written is not None else 'never'}",
        len("tac8   "))
    for reason in m.get("health_reasons", []):
        add(f"  ! {reason}")
    paused = st["paused"]
    add(f"PAUSED{_until(paused.get('until'))}: {paused.get('reason') or 'no reason given'} "
        f"(by {paused.get('by', '?')} at {paused.get('at', '?')})" if paused else "paused: no")
    add(f"agents run sandboxed ({st['sandbox']})" if st["sandbox"] == "bwrap"
        else f"AGENTS RUN WITHOUT A SANDBOX: {st['sandbox']}")
    add("")
    if m:
        add(_facts("Workers", f"launched {m.get('workers_launched', 0)}",
                   f"active {m.get('workers_active', 0)}", f"completed {m.get('workers_completed', 0)}",
                   f"failed {m.get('workers_failed', 0)}", f"blocked {m.get('workers_blocked', 0)}",
                   f"stopped {m.get('workers_stopped', 0)}"), LABEL)
        add(_facts("PRs", f"created {m.get('prs_created', 0)}", f"merged {m.get('prs_merged', 0)}",
                   f"closed unmerged {m.get('prs_closed_unmerged', 0)}",
                   f"success rate {_percent(m.get('success_rate'))}",
                   f"median launch→PR {duration(m.get('median_seconds_launch_to_pr'))}"), LABEL)
        add(_facts("Cost", f"today ${m.get('cost_usd_today', 0):.2f} ({m.get('tokens_today', 0):,} tokens)",
                   f"total ${m.get('cost_usd_total', 0):.2f} ({m.get('tokens_total', 0):,} tokens)"), LABEL)
        recent, window = m.get("recent", {}), duration(m.get("recent_window_seconds"))
        remaining = m.get("github_rate_limit_remaining")
        add(_facts("Errors", f"worktree {m.get('worktree_errors', 0)}"
                   f" ({recent.get('worktree_errors', 0)} in the last {window})",
                   f"GitHub API {m.get('github_api_errors', 0)}"
                   f" ({recent.get('github_api_errors', 0)} in the last {window})",
                   f"launch failures {m.get('launch_failures', 0)}",
                   f"rate limit left {remaining if remaining is not None else '—'}"), LABEL)
    else:
        add("Counters  none yet: metrics.json does not exist (is the metrics program running?)", LABEL)
    for n, (name, p) in enumerate(programs.items()):
        state = f"running {duration(p['up_seconds'])}" if p["running"] else "NOT RUNNING"
        age = p["heartbeat_age_seconds"]
        beat = "never" if age is None else f"{duration(age)} ago"
        add(f"{'Programs' if n == 0 else '':<{LABEL}}{name:<10}{glued(state):<16}"
            + glued(f"heartbeat {beat}{' (stale)' if p['heartbeat_stale'] else ''}"), LABEL + 10)
    add("")
    queue = st["queue"]
    add(_facts("Queue", *(f"{s.lower()} {len(queue[s])}" for s in SECTIONS)), LABEL)
    for section in SECTIONS:
        if not queue[section]:
            continue
        add(f"  {section}")
        for task in queue[section][:SECTION_LINES]:
            add(f"    [{task['marker']}] {task['id'] or '(no id yet)'}: {task['title']} {{p{task['priority']}}}", 8)
            for key in SHOWN_DETAILS:  # what GitHub said after the PR: its checks, a new round
                if task["details"].get(key):
                    add(f"      {key}: {printable(task['details'][key])}", 8)
        if len(queue[section]) > SECTION_LINES:
            add(f"    … and {len(queue[section]) - SECTION_LINES} more")
    problems = [p for p in st["tasks_problems"] if p["problem"] != NOT_UNDERSTOOD]
    for p in problems[:PROBLEMS_SHOWN]:
        add(f"  ! tasks.md line {p['line']} \"{shorten(printable(p['text']).strip(), PROBLEM_TEXT)}\": {p['problem']}")
    if len(problems) > PROBLEMS_SHOWN:
        add(f"  ! … and {len(problems) - PROBLEMS_SHOWN} more in tasks.md")
    vague = [str(p["line"]) for p in st["tasks_problems"] if p["problem"] == NOT_UNDERSTOOD]
    if vague:
        add(f"  ! tasks.md lines not understood: {', '.join(vague[:PROBLEMS_SHOWN])}"
            + (" …" if len(vague) > PROBLEMS_SHOWN else ""))
    add("")
    add("Active workers" + ("" if st["workers"] else ": none"))
    for w in st["workers"]:
        state = "running" if w["alive"] else "not alive"
        add(f"  {w['task']}  {w['worker_id'] or '?'}  attempt {w['attempt'] or '?'}  {state}"
            f"  {duration(w['runtime_seconds'])}")
        if w["last_output"]:  # one line, whose end (what the agent is doing now) stays
            add(f"      › {shorten(printable(w['last_output']), width - 8)}")
    events = m.get("history", [])[-STATUS_EVENTS:]
    add("")
    add("Last events" + ("" if events else ": none"))
    for event in reversed(events):
        out += _event(event, width)
    return "\n".join(out) + "\n"


def _event(event: dict[str, Any], width: int) -> list[str]:
    """An event in at most ``EVENT_LINES`` lines: its details shortened in the middle (an
    error's reason is at its end) until they fit."""
    details = event.get("details") or {}
    facts = printable(" ".join(f"{k}={v}" for k, v in details.items()
                               if k not in _NOT_FACTS and v not in (None, "")))
    when = str(event.get("timestamp", "?"))[:19].replace("T", " ")
    head = printable(f"  {when}  {event.get('type', '?'):<16} {details.get('task', ''):<8} ")
    room = EVENT_LINES * width - columns(head) - (EVENT_LINES - 1) * EVENT_INDENT
    while True:
        lines = wrap((head + shorten(facts, room)).rstrip(), width, EVENT_INDENT)
        if len(lines) <= EVENT_LINES or room <= 0:
            return lines
        # a few columns less at a time: the lines beyond overstate the excess when all
        # that happened is a long word moving down
        room -= 4


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= MIN_INTERVAL):
        raise argparse.ArgumentTypeError(f"expected seconds, at least {MIN_INTERVAL:g}, got {text!r}")
    return seconds


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", action="store_true",
                   help="refresh until Ctrl-C: in place on a terminal, else one after another")
    p.add_argument("--interval", type=_interval, default=2.0, metavar="SECONDS",
                   help=f"seconds between refreshes, at least {MIN_INTERVAL:g} (default 2)")
    p.add_argument("--json", action="store_true", help="print everything as JSON, for scripts")


def command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.json:
        # ASCII: a control character in a title or in agent output stays an escape (\u009b)
        print(json.dumps(gather_status(cfg), indent=2, ensure_ascii=True, default=str))
        return 0
    if not args.watch:
        sys.stdout.write(render_status(gather_status(cfg), terminal_width()))
        return 0
    # escape codes only for a terminal: a pipe or a file gets each refresh after a rule
    on_terminal = sys.stdout.isatty()
    before = CLEAR if on_terminal else ""
    try:
        while True:
            # the width is asked each time: a terminal may have been resized
            sys.stdout.write(before + render_status(gather_status(cfg), terminal_width()))
            sys.stdout.flush()
            before = CLEAR if on_terminal else RULE
            time.sleep(args.interval)
    except KeyboardInterrupt:  # the way out of --watch
        return 0
