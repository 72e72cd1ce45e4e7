"""``tac8 status``: the dashboard — health, counters, queue, workers, last events.

It reads ``metrics.json``, ``tasks.md``, ``state/runs/``, ``logs/<task>.jsonl``,
``state/PAUSE``, the heartbeats and the programs' single-instance locks; it writes nothing.
``gather_status`` collects (``--json`` prints it as is, in ASCII), ``render_status`` lays it
out without control characters (``shared.text.printable``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from typing import Any

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
PROBLEMS_SHOWN = 5  # tasks.md problems listed (all of them in --json)
PROBLEM_TEXT = 40  # characters of a problem line quoted
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


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def render_status(st: dict[str, Any], width: int = 100) -> str:
    m = st["metrics"] or {}
    programs = st["programs"]
    ups = [p["up_seconds"] for p in programs.values() if p["up_seconds"] is not None]
    out = []
    health = m.get("health", "unknown (no metrics.json yet)")
    written = st["metrics_written_seconds_ago"]
    out.append(f"tac8   health: {health.upper() if m else health}   "
               f"up {duration(max(ups)) if ups else '— (no program running)'}   "
               f"metrics.json written {duration(written) + ' ago' if written is not None else 'never'}")
    out += [f"  ! {reason}" for reason in m.get("health_reasons", [])]
    paused = st["paused"]
    out.append(f"PAUSED: {paused.get('reason') or 'no reason given'} (by {paused.get('by', '?')}"
               f" at {paused.get('at', '?')})" if paused else "paused: no")
    out.append(f"agents run sandboxed ({st['sandbox']})" if st["sandbox"] == "bwrap"
               else f"AGENTS RUN WITHOUT A SANDBOX: {st['sandbox']}")
    out.append("")
    if m:
        out.append(f"Workers   launched {m.get('workers_launched', 0)} · active {m.get('workers_active', 0)}"
                   f" · completed {m.get('workers_completed', 0)} · failed {m.get('workers_failed', 0)}"
                   f" · blocked {m.get('workers_blocked', 0)} · stopped {m.get('workers_stopped', 0)}")
        out.append(f"PRs       created {m.get('prs_created', 0)} · success rate {_percent(m.get('success_rate'))}"
                   f" · median launch→PR {duration(m.get('median_seconds_launch_to_pr'))}")
        out.append(f"Cost      today ${m.get('cost_usd_today', 0):.2f} ({m.get('tokens_today', 0):,} tokens)"
                   f" · total ${m.get('cost_usd_total', 0):.2f} ({m.get('tokens_total', 0):,} tokens)")
        recent, window = m.get("recent", {}), duration(m.get("recent_window_seconds"))
        remaining = m.get("github_rate_limit_remaining")
        out.append(f"Errors    worktree {m.get('worktree_errors', 0)} ({recent.get('worktree_errors', 0)} in the"
                   f" last {window}) · GitHub API {m.get('github_api_errors', 0)}"
                   f" ({recent.get('github_api_errors', 0)} in the last {window})"
                   f" · launch failures {m.get('launch_failures', 0)}"
                   f" · rate limit left {remaining if remaining is not None else '—'}")
    else:
        out.append("Counters  none yet: metrics.json does not exist (is the metrics program running?)")
    for n, (name, p) in enumerate(programs.items()):
        state = f"running {duration(p['up_seconds'])}" if p["running"] else "NOT RUNNING"
        age = p["heartbeat_age_seconds"]
        beat = "never" if age is None else f"{duration(age)} ago"
        out.append(f"{'Programs' if n == 0 else '':<10}{name:<10}{state:<16}heartbeat {beat}"
                   f"{' (stale)' if p['heartbeat_stale'] else ''}")
    out.append("")
    queue = st["queue"]
    out.append("Queue     " + " · ".join(f"{s.lower()} {len(queue[s])}" for s in SECTIONS))
    for section in SECTIONS:
        if not queue[section]:
            continue
        out.append(f"  {section}")
        for task in queue[section][:SECTION_LINES]:
            out.append(f"    [{task['marker']}] {task['id'] or '(no id yet)'}: {task['title']} {{p{task['priority']}}}")
        if len(queue[section]) > SECTION_LINES:
            out.append(f"    … and {len(queue[section]) - SECTION_LINES} more")
    problems = [p for p in st["tasks_problems"] if p["problem"] != NOT_UNDERSTOOD]
    for p in problems[:PROBLEMS_SHOWN]:
        text = p["text"].strip()
        text = text if len(text) <= PROBLEM_TEXT else text[:PROBLEM_TEXT - 1] + "…"
        out.append(f"  ! tasks.md line {p['line']} \"{text}\": {p['problem']}")
    if len(problems) > PROBLEMS_SHOWN:
        out.append(f"  ! … and {len(problems) - PROBLEMS_SHOWN} more in tasks.md")
    vague = [str(p["line"]) for p in st["tasks_problems"] if p["problem"] == NOT_UNDERSTOOD]
    if vague:
        out.append(f"  ! tasks.md lines not understood: {', '.join(vague[:PROBLEMS_SHOWN])}"
                   + (" …" if len(vague) > PROBLEMS_SHOWN else ""))
    out.append("")
    out.append("Active workers" + ("" if st["workers"] else ": none"))
    for w in st["workers"]:
        state = "running" if w["alive"] else "not alive"
        head = (f"  {w['task']}  {w['worker_id'] or '?'}  attempt {w['attempt'] or '?'}  {state}"
                f"  {duration(w['runtime_seconds'])}")
        out.append(head)
        if w["last_output"]:
            out.append(f"      › {w['last_output']}"[:width])
    events = m.get("history", [])[-STATUS_EVENTS:]
    out.append("")
    out.append("Last events" + ("" if events else ": none"))
    for event in reversed(events):
        details = event.get("details") or {}
        facts = " ".join(f"{k}={v}" for k, v in details.items()
                         if k not in _NOT_FACTS and v not in (None, ""))
        when = str(event.get("timestamp", "?"))[:19].replace("T", " ")
        out.append(f"  {when}  {event.get('type', '?'):<16} {details.get('task', ''):<8} {facts}".rstrip()[:width])
    # titles, Blocked/Error details, the agent's last line and event details are others' text
    return printable("\n".join(out) + "\n")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    p.add_argument("--json", action="store_true", help="print everything as JSON, for scripts")


def command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.json:
        # ASCII: a control character in a title or in agent output stays an escape (\u009b)
        print(json.dumps(gather_status(cfg), indent=2, ensure_ascii=True, default=str))
        return 0
    width = shutil.get_terminal_size((100, 24)).columns
    if not args.watch:
        sys.stdout.write(render_status(gather_status(cfg), width))
        return 0
    try:
        while True:
            # home + clear: the dashboard is redrawn in place
            sys.stdout.write("\x1b[H\x1b[2J" + render_status(gather_status(cfg), width))
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:  # the way out of --watch
        return 0
