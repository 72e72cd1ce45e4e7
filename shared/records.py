"""Frontmatter records: a YAML header between ``---`` lines, then a free-text body.

Used for run records, issue snapshots, PR markers, outbox items, events and ``state/PAUSE``
(docs/PROTOCOL.md). Keys keep their insertion order; the body is kept byte for byte (the
python-frontmatter loader strips the body's trailing newline, so we split the file ourselves
and use its YAML handler only for the header). Writes are atomic; a read-modify-write of a
record shared by two programs goes through ``update_record`` under its lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from frontmatter.default_handlers import YAMLHandler

from shared.fsio import atomic_write
from shared.locks import file_lock

_HANDLER = YAMLHandler()
_SPLIT = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)


class RecordError(ValueError):
    """A record file exists but is not frontmatter + body."""


@dataclass
class Record:
    meta: dict[str, Any] = field(default_factory=dict)
    body: str = ""


def parse_record(text: str, source: str = "<text>") -> Record:
    match = _SPLIT.match(text)
    if not match:
        raise RecordError(f"{source}: no frontmatter header")
    try:
        meta = _HANDLER.load(match.group(1)) if match.group(1).strip() else {}
    except yaml.YAMLError as exc:
        raise RecordError(f"{source}: bad frontmatter: {exc}") from None
    if not isinstance(meta, dict):
        raise RecordError(f"{source}: frontmatter is not a mapping")
    return Record(meta, text[match.end():])


def render_record(meta: dict[str, Any], body: str = "") -> str:
    header = _HANDLER.export(meta, sort_keys=False, allow_unicode=True) if meta else ""
    header = header if not header or header.endswith("\n") else header + "\n"
    return f"---\n{header}---\n{body}"


def read_record(path: Path) -> Record:
    """Read a record; ``FileNotFoundError`` if absent, ``RecordError`` if malformed."""
    path = Path(path)
    return parse_record(path.read_text(encoding="utf-8"), str(path))


def write_record(path: Path, meta: dict[str, Any], body: str = "") -> None:
    atomic_write(Path(path), render_record(meta, body))


def update_record(
    path: Path,
    lock_path: Path,
    change: Callable[[Record], Any],
    timeout: float = 10.0,
) -> Any:
    """Under ``lock_path``: read the record at ``path`` (empty if absent), let ``change``
    edit it in place, write it back if it changed. Returns what ``change`` returned."""
    with file_lock(lock_path, timeout=timeout):
        try:
            record = read_record(path)
        except FileNotFoundError:
            record = Record()
        before = render_record(dict(record.meta), record.body)
        result = change(record)
        if render_record(record.meta, record.body) != before:
            write_record(path, record.meta, record.body)
        return result
