"""Text laid out for the terminal ``tac8`` prints to.

* ``terminal_width``: the terminal's columns, 80 when stdout is not a terminal.
* ``wrap``: a line broken between words (never inside one: a path too long for a line keeps
  a line of its own, longer than the terminal), the lines after the first indented.
* ``glued``: a phrase that ``wrap`` keeps on one line ("completed today 0").
* ``shorten``: text that must fit a given room, cut in its middle: its start says what it is,
  its end is where an error says why, so both stay.

Widths are counted in terminal columns: a wide character (an emoji marker, CJK) takes two.
"""

from __future__ import annotations

import shutil
import textwrap
import unicodedata

FALLBACK_WIDTH = 80  # when stdout is not a terminal (piped, a file, cron's mail)
MIN_WIDTH = 40  # narrower than this, wrapping would only make it worse
ELLIPSIS = "…"
_GLUE = "\u00a0"  # a no-break space: not whitespace to textwrap, a space to a person


def terminal_width() -> int:
    return max(MIN_WIDTH, shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns)


def columns(text: str) -> int:
    """How many terminal columns ``text`` takes."""
    return len(text) + sum(unicodedata.east_asian_width(c) in "WF" for c in text)


def _characters(text: str, width: int) -> int:
    """How many characters a line of ``text`` may hold so that it takes at most ``width``
    columns: each wide character in ``text`` costs one more, and a line of ``width // 2``
    characters fits whatever they are."""
    return max(width - (columns(text) - len(text)), width // 2)


def glued(phrase: str) -> str:
    return phrase.replace(" ", _GLUE)


def wrap(line: str, width: int, indent: int | None = None) -> list[str]:
    """``line`` as lines of at most ``width`` columns, broken between words; the lines after
    the first are indented ``indent`` columns (by default 2 more than ``line`` is)."""
    text = line.lstrip(" ")
    first = line[:len(line) - len(text)]
    rest = " " * (len(first) + 2 if indent is None else indent)
    lines = textwrap.wrap(text, _characters(line, width), initial_indent=first,
                          subsequent_indent=rest, break_long_words=False, break_on_hyphens=False)
    return [part.replace(_GLUE, " ") for part in lines] or [""]


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: if it is longer, the words of about its first
    third, " … ", then as many of its last words as fit (and, if room is left, more of the
    first). Words stay whole (a number cut in two reads as another number), but for a last
    word longer than the room alone: its end is kept."""
    if columns(text) <= width:
        return text
    limit = _characters(text, width)
    words = text.split(" ")
    head: list[str] = []
    tail: list[str] = []

    def fits(first: list[str], last: list[str]) -> bool:
        return len(" ".join([*first, ELLIPSIS, *last])) <= limit

    while len(words) > 1 and len(" ".join([*head, words[0]])) <= limit // 3:
        head.append(words.pop(0))
    while words and fits(head, [words[-1], *tail]):
        tail.insert(0, words.pop())
    while words and fits([*head, words[0]], tail):
        head.append(words.pop(0))
    if not tail and words:  # the last word alone is too long: its end
        room = limit - len(" ".join([*head, ELLIPSIS, ""]))
        tail = [words[-1][-room:]] if room > 0 else []
    return " ".join([*head, ELLIPSIS, *tail])
