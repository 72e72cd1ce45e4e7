"""``tac8 logs``: the agent's log of a task (``logs/<task>.jsonl``) as text a person reads,
``--follow`` while the task runs. ``last_output`` gives ``tac8 status`` the latest line.

Messages are parsed by ``shared.streamjson``; lines that are not stream-json (another
agent's plain output) pass through, like all text, without control characters.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from services.cli.common import UserError, duration, section_of, task_id
from shared.config import load_config
from shared.runs import worker_alive
from shared.streamjson import parse
from shared.tasks import ACTIVE
from shared.text import printable

LOG_TAIL_BYTES = 64 * 1024  # how much of a log `status` reads for the last output line
FOLLOW_POLL = 0.25  # seconds between reads of a followed log
_TOOL_ARGUMENT = ("command", "file_path", "path", "pattern", "url", "description", "prompt")


def _first_line(text: Any) -> str:
    if isinstance(text, list):  # a tool result given as content blocks
        text = " ".join(b.get("text", "") for b in text if isinstance(b, dict))
    lines = str(text or "").strip().splitlines()
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return (lines[0] if lines else "") + more


def _result(message: dict[str, Any]) -> list[str]:
    cost = message.get("total_cost_usd")
    facts = [str(message.get("subtype", "done")) + (" (error)" if message.get("is_error") else "")]
    if cost is not None:
        facts.append(f"${cost:.4f}")
    if message.get("num_turns") is not None:
        facts.append(f"{message['num_turns']} turns")
    if message.get("duration_ms") is not None:
        facts.append(duration(message["duration_ms"] / 1000))
    return [f"■ result: {' · '.join(facts)}", *str(message.get("result") or "").splitlines()]


def _content(message: dict[str, Any]) -> list[str]:
    """An assistant's or user's message: text, tool calls and their results."""
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


def readable(line: str) -> list[str]:
    """One line of the agent's output as the text lines a person reads (none for noise
    such as stream events), without control characters or escape sequences: the agent's
    text never reaches the terminal raw."""
    return [printable(text) for text in _lines(line)]


def _lines(line: str) -> list[str]:
    message = parse(line)
    if message is None:
        return [line.rstrip("\n")] if line.strip() else []
    kind = message.get("type")
    if kind == "system" and message.get("subtype") == "init":
        return [f"· session started: model {message.get('model', '?')}, cwd {message.get('cwd', '?')}"]
    if kind == "result":
        return _result(message)
    if kind in ("assistant", "user"):
        return _content(message)
    return []


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


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="gh-N, t-N, or an issue number")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing while the task runs")


def command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    task = task_id(args.task)
    log = cfg.agent_log(task)

    def running() -> bool:
        return worker_alive(cfg, task) or section_of(cfg, task) == ACTIVE

    following = args.follow and running()
    if not following and not log.exists():
        raise UserError(f"no agent log for {task} ({log} does not exist)")
    for line in follow(log, running if following else lambda: False):
        for text in readable(line):
            print(text, flush=args.follow)
    return 0
