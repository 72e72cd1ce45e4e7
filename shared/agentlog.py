"""The agent's log (``logs/<task>.jsonl``) as text a person reads.

``readable`` turns one line of the agent's output into the lines shown for it: stream-json
messages (``shared.streamjson``) become a short account (text, tool calls and their results,
the final result), noise such as stream events is dropped, and a line that is not stream-json
(another agent's plain output) passes through. Every line comes out without control
characters (``shared.text.printable``): the agent's text never reaches a terminal raw.
``last_output`` is the latest such line of a log: ``tac8 status`` and the status page show it.
``tac8 logs`` prints them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared.clock import duration
from shared.streamjson import parse
from shared.text import printable

LOG_TAIL_BYTES = 64 * 1024  # how much of a log is read for its last output line
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
    such as stream events), without control characters or escape sequences."""
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
