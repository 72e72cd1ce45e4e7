"""The status page: ``status.html`` beside ``metrics.json``, for a person's browser.

``render`` (pure) lays out a ``metrics.json`` snapshot, the tasks.md board and ``Extras`` (what
other files say: each running agent's last output line, blocked runs' questions, live workers,
the pause): health and its reasons, cost, running workers, blocked questions, the queue by
section, tasks.md problems and recent events. One self-contained page: inline CSS, no script,
no external resource, and it reloads itself. Every piece of text others wrote (issue titles,
agent output, questions, event details) is escaped with ``html.escape``: it stays text.

``StatusPage`` (the metrics program's) writes the page atomically, and only when what it
shows changed: the time it was written is not worth a write (an SD card wears out).
``tac8 serve`` serves it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from shared.agentlog import last_output
from shared.clock import duration
from shared.config import Config
from shared.fsio import atomic_write
from shared.pause import pause_end, read_pause
from shared.runs import live_tasks, question_file
from shared.tasks import ACTIVE, BLOCKED, SECTIONS, Board, Task
from shared.text import encodable, printable

REFRESH_SECONDS = 10  # the browser reloads the page this often
SECTION_SHOWN = 50  # tasks listed per section
EVENTS_SHOWN = 20  # recent events listed, newest first
PROBLEMS_SHOWN = 10  # tasks.md problems listed
QUESTION_CHARS = 2000  # of a question file shown when its Blocked line is missing
OUTPUT_CHARS = 500  # of an agent's last output line shown
_NOT_FACTS = ("program", "task", "key")  # event details that are bookkeeping, not news
# Around the content in a page: escaped text never holds a tag, so they find it again.
_MAIN, _MAIN_END = "<main>\n", "</main>\n"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.8em 0 .2em}table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.2em .6em .2em 0;border-bottom:1px solid #eee}
code,.mono{font-family:ui-monospace,monospace;font-size:.95em;overflow-wrap:anywhere}
ul{margin:.2em 0;padding-left:1.4em}.muted{color:#777}.details{color:#555;list-style:none;padding-left:1em}
.health{padding:.1em .5em;border-radius:.3em;color:#fff}.ok{background:#2a7d2a}
.warning{background:#b8860b}.degraded{background:#c0502a}.critical{background:#b22222}
.paused{background:#fff3cd;padding:.4em .6em;border-left:4px solid #b8860b}
.stale{color:#b22222;font-weight:bold}
"""


@dataclass(frozen=True)
class Extras:
    """What the page shows beyond metrics.json and tasks.md, read from other files."""

    last_output: dict[str, str] = field(default_factory=dict)  # Active task → its agent's last line
    questions: dict[str, str] = field(default_factory=dict)  # Blocked task → its question file
    alive: frozenset[str] = frozenset()  # tasks whose worker holds its liveness lock
    paused: dict[str, Any] | None = None  # state/PAUSE, when paused


def read_extras(cfg: Config, board: Board) -> Extras:
    """The ``Extras`` of ``board``'s tasks. A question file is read only for a Blocked task
    whose ``- Blocked:`` line is gone (a person may have edited it away)."""
    return Extras(
        last_output={t.id: last_output(cfg.agent_log(t.id)) for t in board.tasks(ACTIVE) if t.id},
        questions={t.id: _question(cfg, t.id) for t in board.tasks(BLOCKED)
                   if t.id and not t.detail("Blocked")},
        alive=frozenset(live_tasks(cfg)),
        paused=read_pause(cfg),
    )


def _question(cfg: Config, task: str) -> str:
    try:
        with open(question_file(cfg, task), encoding="utf-8", errors="replace") as f:
            return f.read(QUESTION_CHARS)
    except FileNotFoundError:
        return ""


def _t(value: Any) -> str:
    """Any value as HTML text: no control characters, nothing that is not UTF-8, escaped
    (quotes too, so it is safe in an attribute)."""
    return html.escape(encodable(printable(str(value))))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(snapshot: dict[str, Any], board: Board, extras: Extras) -> str:
    """The whole page; it names the time ``snapshot`` was taken."""
    return document(content(snapshot, board, extras), snapshot)


def document(body: str, snapshot: dict[str, Any]) -> str:
    """``body`` (from ``content``) in a page that names its time and reloads itself."""
    health = str(snapshot.get("health") or "unknown")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>tac8: {_t(health.upper())}</title>\n<style>{_STYLE}</style></head>\n<body>\n"
        f"<p class=\"muted\">Written {_t(_when(snapshot.get('last_update')))} by the metrics program, "
        f"again when anything on it changes; this page reloads every {REFRESH_SECONDS} s.</p>\n"
        f"{_MAIN}{body}{_MAIN_END}</body></html>\n"
    )


def content_of(page: str) -> str | None:
    """The ``content`` in a page ``document`` made; None if it holds none."""
    start, end = page.find(_MAIN), page.rfind(_MAIN_END)
    return page[start + len(_MAIN):end] if 0 <= start < end else None


def content(snapshot: dict[str, Any], board: Board, extras: Extras) -> str:
    """Everything the page shows but its time: nothing in it changes with the clock alone,
    so comparing two tells whether the page is worth writing."""
    return "".join([
        _health(snapshot, extras.paused), _counters(snapshot), _programs(snapshot),
        _workers(board, extras), _blocked(board, extras), _queue(board),
        _problems(snapshot), _events(snapshot),
    ])


def _when(value: Any) -> str:
    """An ISO time as a person reads it (``2026-11-24 10:15:02``)."""
    return str(value or "—")[:19].replace("T", " ")


def _health(m: dict[str, Any], paused: dict[str, Any] | None) -> str:
    health = str(m.get("health") or "unknown")
    out = [f"<h1>tac8 <span class=\"health {_t(health)}\">{_t(health.upper())}</span></h1>\n"]
    reasons = m.get("health_reasons") or []
    if reasons:
        out.append("<ul>" + "".join(f"<li>{_t(r)}</li>" for r in reasons) + "</ul>\n")
    if paused is not None:
        end = pause_end(paused)  # a usage limit's pause ends by itself
        until = f" until {_t(_when(end.isoformat()))}" if end else ""
        out.append(f"<p class=\"paused\">Launching is <b>paused</b>{until}: "
                   f"{_t(paused.get('reason') or 'no reason given')} (by {_t(paused.get('by', '?'))}"
                   f" at {_t(_when(paused.get('at')))}). Running workers go on.</p>\n")
    return "".join(out)


def _counters(m: dict[str, Any]) -> str:
    rate = m.get("success_rate")
    rows = [
        ("Cost today", f"${m.get('cost_usd_today', 0):.2f} ({m.get('tokens_today', 0):,} tokens)"),
        ("Cost in all", f"${m.get('cost_usd_total', 0):.2f} ({m.get('tokens_total', 0):,} tokens)"),
        ("Workers", f"{m.get('workers_active', 0)} active · {m.get('workers_launched', 0)} launched · "
                    f"{m.get('workers_completed', 0)} completed · {m.get('workers_failed', 0)} failed · "
                    f"{m.get('workers_blocked', 0)} blocked · {m.get('workers_stopped', 0)} stopped"),
        ("Pull requests", f"{m.get('prs_created', 0)} created · success rate "
                          f"{'—' if rate is None else f'{rate * 100:.1f}%'} · median launch→PR "
                          f"{duration(m.get('median_seconds_launch_to_pr'))}"),
        ("Errors", f"worktree {m.get('worktree_errors', 0)} · GitHub API {m.get('github_api_errors', 0)}"
                   f" · launch failures {m.get('launch_failures', 0)} · GitHub requests left "
                   f"{m.get('github_rate_limit_remaining') if m.get('github_rate_limit_remaining') is not None else '—'}"),
    ]
    return "<table>" + "".join(f"<tr><th>{_t(k)}</th><td>{_t(v)}</td></tr>" for k, v in rows) + "</table>\n"


def _programs(m: dict[str, Any]) -> str:
    """Each program's heartbeat, fresh or stale (not its age: that changes with the clock)."""
    beats = m.get("heartbeats") or {}
    items = [f"<span class=\"stale\">{_t(p)}: no recent heartbeat</span>" if beat.get("stale")
             else f"{_t(p)}: beating" for p, beat in beats.items()]
    return f"<p>Programs: {' · '.join(items) or '—'}</p>\n"


def _workers(board: Board, extras: Extras) -> str:
    tasks = board.tasks(ACTIVE)
    out = [f"<h2 id=\"workers\">Running workers ({len(tasks)})</h2>\n"]
    if not tasks:
        return out[0] + "<p class=\"muted\">none</p>\n"
    out.append("<table><tr><th>task</th><th>title</th><th>worker</th><th>started</th>"
               "<th>last output</th></tr>\n")
    for task in tasks:
        alive = task.id in extras.alive
        state = "" if alive else " <span class=\"stale\">(no live worker)</span>"
        line = _cut(extras.last_output.get(task.id or "", ""), OUTPUT_CHARS)
        shown = _t(line) if line else "<span class=\"muted\">—</span>"
        out.append(f"<tr><td class=\"mono\">{_t(task.id or '(no id yet)')}</td><td>{_t(task.title)}</td>"
                   f"<td class=\"mono\">{_t(task.worker or '?')}{state}</td>"
                   f"<td>{_t(task.detail('Started') or '—')}</td><td class=\"mono\">{shown}</td></tr>\n")
    return "".join(out) + "</table>\n"


def _blocked(board: Board, extras: Extras) -> str:
    tasks = board.tasks(BLOCKED)
    out = [f"<h2 id=\"blocked\">Blocked questions ({len(tasks)})</h2>\n"]
    if not tasks:
        return out[0] + "<p class=\"muted\">none</p>\n"
    out.append("<table><tr><th>task</th><th>title</th><th>the agent asks</th></tr>\n")
    for task in tasks:
        question = task.detail("Blocked") or extras.questions.get(task.id or "", "") or "(no question)"
        out.append(f"<tr><td class=\"mono\">{_t(task.id or '(no id yet)')}</td><td>{_t(task.title)}</td>"
                   f"<td style=\"white-space:pre-wrap\">{_t(question.strip())}</td></tr>\n")
    out.append("</table>\n<p class=\"muted\">Answer in a comment on the issue: tac8 sends the task "
               "back with your answer. A typed task: edit the line's title, then move the line "
               "back under Pending, marker and all.</p>\n")
    return "".join(out)


def _queue(board: Board) -> str:
    out = ["<h2 id=\"queue\">Queue</h2>\n<p>" + " · ".join(
        f"{_t(s.lower())} {len(board.tasks(s))}" for s in SECTIONS) + "</p>\n"]
    for section in SECTIONS:
        tasks = board.tasks(section)
        if not tasks:
            continue
        out.append(f"<h3>{_t(section)} ({len(tasks)})</h3>\n<ul>\n")
        out += [_task(task) for task in tasks[:SECTION_SHOWN]]
        if len(tasks) > SECTION_SHOWN:
            out.append(f"<li class=\"muted\">… and {len(tasks) - SECTION_SHOWN} more</li>\n")
        out.append("</ul>\n")
    return "".join(out)


def _task(task: Task) -> str:
    details = "".join(f"<li>{_t(k)}: {_t(v)}</li>" for k, v in task.details)
    return (f"<li><span class=\"mono\">[{_t(task.marker)}] {_t(task.id or '(no id yet)')}</span> "
            f"{_t(task.title)} <span class=\"muted\">p{_t(task.effective_priority)}</span>"
            + (f"<ul class=\"details\">{details}</ul>" if details else "") + "</li>\n")


def _problems(m: dict[str, Any]) -> str:
    problems = m.get("tasks_problem_lines") or []
    if not problems:
        return ""
    out = [f"<h2 id=\"problems\">tasks.md lines to look at ({_t(m.get('tasks_problems', len(problems)))})</h2>\n<ul>\n"]
    out += [f"<li>line {_t(p.get('line'))} <code>{_t(p.get('text', '').strip())}</code>: "
            f"{_t(p.get('problem'))}</li>\n" for p in problems[:PROBLEMS_SHOWN]]
    return "".join(out) + "</ul>\n"


def _events(m: dict[str, Any]) -> str:
    events = (m.get("history") or [])[-EVENTS_SHOWN:]
    out = ["<h2 id=\"events\">Recent events</h2>\n"]
    if not events:
        return out[0] + "<p class=\"muted\">none</p>\n"
    out.append("<table><tr><th>time</th><th>event</th><th>task</th><th>details</th></tr>\n")
    for event in reversed(events):
        details = event.get("details") or {}
        facts = " · ".join(f"{k}: {v}" for k, v in details.items()
                           if k not in _NOT_FACTS and v not in (None, ""))
        out.append(f"<tr><td class=\"mono\">{_t(_when(event.get('timestamp')))}</td>"
                   f"<td>{_t(event.get('type', '?'))}</td><td class=\"mono\">{_t(details.get('task', ''))}</td>"
                   f"<td>{_t(facts)}</td></tr>\n")
    return "".join(out) + "</table>\n"


class StatusPage:
    """The metrics program's writer of the page."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        # the content last written: a restarted program does not rewrite an up-to-date page
        try:
            self._written = content_of(cfg.status_page.read_text(encoding="utf-8"))
        except (FileNotFoundError, UnicodeDecodeError):
            self._written = None

    def publish(self, snapshot: dict[str, Any], board: Board) -> bool:
        """Write the page if what it shows changed; whether it did."""
        body = content(snapshot, board, read_extras(self.cfg, board))
        if body == self._written:
            return False
        # not fsynced: the page is rendered again from scratch; a power cut costs nothing
        atomic_write(self.cfg.status_page, document(body, snapshot), fsync=False)
        self._written = body
        return True
