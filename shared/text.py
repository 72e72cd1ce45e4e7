"""Text that agents and issue authors wrote, made harmless where tac8 shows it.

``printable``: for a terminal (``tac8 status``, ``tac8 logs``). C0 and C1 control characters
and DEL are removed, each escape sequence as a whole (CSI, OSC, DCS…), so the text cannot
clear the screen, move the cursor, retitle the window or ring the bell; tab and newline stay.

``code_block``: for a GitHub comment. The printable text inside a Markdown code fence longer
than any run of backticks in it (the text cannot close the fence), with ``@`` and ``<!--``
broken by a zero-width space: it mentions nobody and cannot forge an HTML comment such as
the outbox's ``<!-- tac8:KEY -->`` marker, whatever a renderer makes of the fence.

``encodable``: for anything that must be valid UTF-8 (a prompt, a record, git, GitHub).
tasks.md may hold any bytes; the ones that are not UTF-8 are read as lone surrogates
(``surrogateescape``), which no encoder takes: each becomes U+FFFD.
"""

from __future__ import annotations

import re

_CONTROLS = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: cursor moves, erasing, colours
    # strings (OSC, DCS, SOS, PM, APC) up to their terminator, or the end of the line
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]"  # any other escape sequence
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # any other control character but tab and newline
_BACKTICKS = re.compile(r"`+")
_SURROGATE = re.compile("[\ud800-\udfff]")
ZERO_WIDTH_SPACE = "\u200b"


def printable(text: str) -> str:
    """``text`` without control characters and escape sequences (tab and newline kept)."""
    return _CONTROLS.sub("", text)


def code_block(text: str) -> str:
    """``text`` as a neutralised Markdown code block (see the module docstring)."""
    text = (printable(text).replace("@", "@" + ZERO_WIDTH_SPACE)
            .replace("<!--", "<" + ZERO_WIDTH_SPACE + "!--"))
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def encodable(text: str) -> str:
    """``text`` with every lone surrogate (a byte that was not UTF-8) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)
