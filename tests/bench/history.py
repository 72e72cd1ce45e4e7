"""The files finished tasks leave, laid out as tac8's programs leave them (docs/PROTOCOL.md,
Files and Retention), for the history benchmark. No measurements here.

* ``finished_files``: one finished task's run record, prompt, question, PR marker, agent log
  (stream-json, about ``AGENT_LOG_BYTES``) and worker log, keyed ``runs/…``, ``prs/…``,
  ``logs/…`` as in a retired folder;
* ``write_queue``: a tasks.md at rest (Completed Today, Failed and Blocked lines, nothing
  Pending) with its tasks' files in place and their issue snapshots;
* ``write_history``: ``days`` day files of ``per_day`` completions (``state/archive/<date>.md``,
  written by the observer's own ``archive_into``), the retired folders of the last
  ``keep_days`` days' tasks (``state/archive/tasks/<task>/``, dated when they were retired)
  and an issue snapshot per task.

The fixtures are written with plain writes: what is measured is reading them, and fsyncing
thousands of files would only slow the set-up down.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, time as day_time, timedelta
from pathlib import Path

from shared.clock import iso_at, stamp
from shared.config import Config
from shared.records import render_record
from shared.tasks import BLOCKED, COMPLETED, FAILED, archive_into, make_marker, parse
from tests.agents import TEMPLATE_BODY
from tests.sandbox import EMPTY_QUEUE

AGENT_LOG_BYTES = 20_000  # a short Claude Code session's stream-json
REPO = "octo/project"
PROMPT_FIELDS = re.compile(r"\{\{(\w+)\}\}")
VERBS = ("Fix", "Add", "Refactor", "Document", "Speed up", "Test", "Rename", "Remove")
THINGS = ("the config loader", "retry backoff", "the CSV export", "login redirects",
          "the parser's error messages", "a changelog", "the cache eviction",
          "pagination in the API", "the date picker", "flaky integration tests")


@dataclass(frozen=True)
class Finished:
    """A finished task: ``kind`` is COMPLETED, BLOCKED or FAILED; ``ended`` its run's end."""
    number: int
    kind: str
    ended: datetime

    @property
    def task(self) -> str:
        return f"gh-{self.number}"

    @property
    def title(self) -> str:
        return f"{VERBS[self.number % len(VERBS)]} {THINGS[self.number // len(VERBS) % len(THINGS)]}"

    @property
    def worker(self) -> str:
        return f"w-{self.number * 2654435761 % 16**6:06x}"

    @property
    def commit(self) -> str:
        return f"{self.number * 40503 % 16**8:08x}" * 5

    @property
    def pr_number(self) -> int:
        return self.number + 3

    @property
    def question(self) -> str:
        return "Which Python versions should CI cover: 3.11 only, or 3.9 to 3.13?"

    @property
    def error(self) -> str:
        return "the agent exited with status 1 and made no commit"


def issue_body(item: Finished) -> str:
    return (f"{item.title} — reported by a user.\n\nSteps: open the app, go to settings, "
            "save twice. Expected: one change; got two. The logs show the second request "
            "arriving 40 ms after the first.\n\nPlease add a test that covers it.\n")


def _prompt(item: Finished) -> str:
    fields = {"task_id": item.task, "branch": f"auto/{item.task}", "fence": "f3a91c0d",
              "previous_question": "", "title": item.title, "issue_body": issue_body(item)}
    return PROMPT_FIELDS.sub(lambda m: fields.get(m.group(1), ""), TEMPLATE_BODY)


def _agent_log(item: Finished) -> str:
    """Claude Code's stream-json for a short session: init, reads, edits, test runs, result."""
    session = f"{item.number:08x}-0000-4000-8000-000000000000"
    say = [{"type": "system", "subtype": "init", "session_id": session,
            "cwd": f"/srv/project/trees/{item.task}", "model": "claude-sonnet-4-5",
            "tools": ["Bash", "Edit", "Read", "Write", "Grep", "Glob"]}]
    turn = 0
    while sum(len(json.dumps(m)) + 1 for m in say) < AGENT_LOG_BYTES:
        turn += 1
        tool = {"name": "Read", "input": {"file_path": f"src/module_{turn}.py"}} if turn % 3 \
            else {"name": "Bash", "input": {"command": "python -m pytest -q tests/"}}
        say.append({"type": "assistant", "session_id": session, "message": {
            "role": "assistant", "content": [
                {"type": "text", "text": f"Looking at step {turn} of {item.title.lower()}."},
                {"type": "tool_use", "id": f"toolu_{turn:04d}", **tool}]}})
        output = "".join(f"{n:4d}  def handler_{n}(request):  # returns the response\n"
                         for n in range(turn, turn + 8))
        say.append({"type": "user", "session_id": session, "message": {
            "role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{turn:04d}", "content": output}]}})
    say.append({"type": "result", "subtype": "success", "is_error": False, "session_id": session,
                "result": f"Done: {item.title}. Tests pass.", "num_turns": turn,
                "total_cost_usd": 0.0042 * turn, "duration_ms": 9000 * turn,
                "usage": {"input_tokens": 1200 * turn, "output_tokens": 300 * turn,
                          "cache_read_input_tokens": 9000 * turn}})
    return "".join(json.dumps(m) + "\n" for m in say)


def _worker_log(item: Finished) -> str:
    at = (item.ended - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"agent started in trees/{item.task} (sandbox bwrap, pid 41{item.number % 1000:03d})",
             "prompt: 2.1 KB on stdin", "agent exited with status 0 after 168.2 s",
             f"committed {item.commit[:7]} on auto/{item.task}",
             f"pushed auto/{item.task} to origin", "queued the pull request for the fetcher",
             f"outcome: {'pr' if item.kind == COMPLETED else item.kind.lower()}"]
    return "".join(f"{at},{n:03d} worker INFO {item.task}: {line}\n" for n, line in enumerate(lines))


def finished_files(item: Finished) -> dict[str, str]:
    """The task's files by ``<folder>/<name>`` (folder: runs, prs or logs)."""
    task, log = item.task, _agent_log(item)
    outcome = {COMPLETED: "pr", BLOCKED: "blocked", FAILED: "failed"}[item.kind]
    transition = {COMPLETED: "completed", BLOCKED: "blocked", FAILED: "failed"}[item.kind]
    applied = [transition, "shown", "announced"] + (["cleaned"] if item.kind == COMPLETED else [])
    attempt = 3 if item.kind == FAILED else 1
    record = {
        "task": task, "worker_id": item.worker, "attempt": attempt, "pid": 40000 + item.number % 9999,
        "started": iso_at(item.ended.timestamp() - 180), "branch": f"auto/{task}",
        "worktree": f"/srv/project/trees/{task}", "title": item.title, "outcome": outcome,
        "exit_code": 1 if item.kind == FAILED else 0, "finished": iso_at(item.ended.timestamp()),
        "error": item.error if item.kind == FAILED else None,
        "commit": item.commit if item.kind == COMPLETED else None,
        "cost_usd": 0.31, "tokens": 48210, "turns": 14, "sandbox": "bwrap",
        "skipped_leftovers": None, "applied": applied}
    files = {f"runs/{task}.md": render_record(record, log[-4000:]),
             f"runs/{task}.prompt": _prompt(item),
             f"logs/{task}.jsonl": log, f"logs/{task}.worker.log": _worker_log(item)}
    if item.kind == BLOCKED:
        files[f"runs/{task}.question.md"] = item.question + "\n"
    if item.kind == COMPLETED:
        files[f"prs/{task}.md"] = render_record({
            "task": task, "worker_id": item.worker,
            "url": f"https://github.com/{REPO}/pull/{item.pr_number}", "number": item.pr_number,
            "head": f"auto/{task}", "commit": item.commit, "found_by": "opened"})
    return files


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def live_folders(cfg: Config) -> dict[str, Path]:
    """Where a listed task's files live, by the name of the folder they retire into."""
    return {"runs": cfg.runs_dir, "prs": cfg.prs_dir, "logs": cfg.agent_log("x").parent}


def write_snapshot(cfg: Config, item: Finished, state: str) -> None:
    _write(cfg.issue_snapshot(item.number), render_record({
        "number": item.number, "title": item.title,
        "url": f"https://github.com/{REPO}/issues/{item.number}", "author": "octo",
        "author_association": "OWNER", "labels": ["agent"], "state": state,
        "updated_at": iso_at(item.ended.timestamp())}, issue_body(item)))


def _line(item: Finished) -> tuple[str, list[tuple[str, str]]]:
    """The task's marker and detail lines in its section, as the observer writes them."""
    if item.kind == COMPLETED:
        return (make_marker(COMPLETED, item.worker, item.commit),
                [("Completed", stamp(item.ended)),
                 ("PR", f"https://github.com/{REPO}/pull/{item.pr_number}")])
    if item.kind == BLOCKED:
        return make_marker(BLOCKED, item.worker), [("Blocked", item.question)]
    return (make_marker(FAILED, item.worker),
            [("Failed", f"{stamp(item.ended)} · attempt 3/3"), ("Error", item.error)])


def board_text(items: list[Finished], text: str = EMPTY_QUEUE) -> str:
    board = parse(text)
    for item in items:
        marker, details = _line(item)
        task = board.add(item.title, task_id=item.task, section=item.kind, details=details)
        task.marker = marker
    return board.render()


def write_queue(cfg: Config, first: int, completed: int = 12, failed: int = 2,
                blocked: int = 2) -> list[Finished]:
    """tasks.md at rest, its tasks ``gh-<first>`` on ended today, their files and snapshots."""
    now = datetime.now()
    midnight = datetime.combine(now.date(), day_time())
    kinds = [BLOCKED] * blocked + [FAILED] * failed + [COMPLETED] * completed
    items = [Finished(first + n, kind, max(now - timedelta(minutes=20 * (len(kinds) - n)),
                                           midnight + timedelta(seconds=n)))
             for n, kind in enumerate(kinds)]
    folders = live_folders(cfg)
    for item in items:
        for name, text in finished_files(item).items():
            folder, file = name.split("/")
            _write(folders[folder] / file, text)
        write_snapshot(cfg, item, "open")
    cfg.tasks_file.write_text(board_text(items))
    return items


def write_history(cfg: Config, days: int = 100, per_day: int = 50, keep_days: int = 14) -> int:
    """The history of ``days × per_day`` tasks completed before today (``gh-1`` on); returns
    how many tasks it holds."""
    today = date.today()
    number = 0
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        items = []
        for n in range(per_day):
            number += 1
            ended = datetime.combine(day, day_time(8)) + timedelta(minutes=n * 15 % 900)
            items.append(Finished(number, COMPLETED, ended))
            write_snapshot(cfg, items[-1], "closed")
        board = parse(board_text(items, ""))
        archived = parse("")
        archive_into(day, board.tasks(COMPLETED), archived)
        _write(cfg.archive_dir / f"{day.isoformat()}.md", archived.render())
        if back <= keep_days:
            # retired an hour after the line left tasks.md at the day's end
            retired = min(datetime.combine(day + timedelta(days=1), day_time(1)).timestamp(),
                          datetime.now().timestamp() - 60)
            for item in items:
                _retire(cfg, item, retired)
    return number


def _retire(cfg: Config, item: Finished, when: float) -> None:
    folder = cfg.archive_dir / "tasks" / item.task
    for name, text in finished_files(item).items():
        _write(folder / name, text)
    os.utime(folder, (when, when))  # its age, which prune reads
