"""Claude Code's ``--output-format stream-json``: one JSON object a line — a ``system`` init,
``assistant`` and ``user`` messages, and last a ``{"type": "result"}`` message with the
outcome, cost, usage and turns.

``parse`` reads one line. ``StreamJson`` is fed the agent's output as it arrives (the
worker) and keeps the final result message; lines longer than ``LINE_LIMIT`` are skipped
unparsed, so a runaway line costs bounded memory. Rendering messages for a person is
``shared.agentlog``'s job.
"""

from __future__ import annotations

import json
from typing import Any

LINE_LIMIT = 4 * 1024 * 1024  # bytes; longer lines are not parsed


def parse(line: bytes | str) -> dict[str, Any] | None:
    """The message on one line; None for anything else (another agent's plain output, a
    blank line, JSON that is not an object, a line cut short)."""
    if not line.lstrip().startswith(b"{" if isinstance(line, bytes) else "{"):
        return None
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    return message if isinstance(message, dict) else None


class StreamJson:
    """Finds the final ``{"type": "result"}`` message in output fed in arbitrary chunks."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self._line = bytearray()
        self._skipping = False  # inside a line too long to parse

    def feed(self, data: bytes) -> None:
        while data:
            newline = data.find(b"\n")
            piece, data = (data, b"") if newline < 0 else (data[:newline], data[newline + 1:])
            if not self._skipping:
                self._line += piece
                if len(self._line) > LINE_LIMIT:
                    self._line.clear()
                    self._skipping = True
            if newline >= 0:
                if not self._skipping:
                    self._take(parse(bytes(self._line)))
                self._line.clear()
                self._skipping = False

    def _take(self, message: dict[str, Any] | None) -> None:
        if message is not None and message.get("type") == "result":
            self.result = message
