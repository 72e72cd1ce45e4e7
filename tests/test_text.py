"""shared.text: agent and issue text made harmless for a terminal and for a GitHub comment."""

from __future__ import annotations

import re

import pytest

from shared.text import code_block, printable


@pytest.mark.parametrize("raw, shown", [
    ("clear\x1b[2Jed", "cleared"),  # erase the screen
    ("red\x1b[1;31m!\x1b[0m", "red!"),  # colours
    ("c1\x9b2Jcsi", "c1csi"),  # the 8-bit CSI
    ("lone \x9b", "lone "),
    ("bell\x07", "bell"),
    ("\x1b]0;new window title\x07title", "title"),  # OSC ended by BEL
    ("\x1b]8;;https://evil\x1b\\link", "link"),  # OSC ended by ST
    ("\x1b]0;never ended\nnext line", "\nnext line"),  # stops at the end of the line
    ("cr\rlf", "crlf"),  # a carriage return would overwrite what came before
    ("\x00nul\x7fdel\x85nel\x1bc", "nuldelnel"),
    ("ends in escape\x1b", "ends in escape"),
    ("tab\tand\nnewline stay", "tab\tand\nnewline stay"),
    ("é, ✓ and 日本 stay", "é, ✓ and 日本 stay"),
])
def test_printable_drops_control_characters_and_whole_escape_sequences(raw, shown):
    assert printable(raw) == shown


def test_a_code_block_cannot_be_closed_ping_anyone_or_forge_a_marker():
    text = "see ```` and ``\n```\n@octocat <!-- tac8:k --> \x1b[2J"
    block = code_block(text)
    fence, *inside, closing = block.split("\n")
    assert fence == closing == "`" * 5  # longer than the longest run inside
    assert all(len(run) < len(fence) for line in inside for run in re.findall("`+", line))
    assert inside == ["see ```` and ``", "```", "@\u200boctocat <\u200b!-- tac8:k --> "]
    assert code_block("plain") == "```\nplain\n```"
