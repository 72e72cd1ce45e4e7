"""The tasks.md engine: parse, query, change and render the queue (format: docs/PROTOCOL.md).

A task line is ``[MARKER] ID: TITLE {pN}`` with its ``- Key: value`` lines; a ``## Name``
heading starts a section (``SECTIONS``). Everything else (free text, unknown headings, lines the
parser does not understand) is kept where it was; ``Board.problems`` reports the lines that
look like neither text nor tasks (a malformed id among them), a heading that looks like a
section's ("did you mean Pending?") and a priority out of range. Ids are canonical
(``gh-06`` is ``gh-6``); a line repeating an earlier line's id gets a fresh ``t-N``. Round trip:
``parse(text).render() == text`` byte for byte, for any text (CRLF, no final newline, invalid
UTF-8 through ``surrogateescape``); only changed tasks are re-rendered.

Writers use ``transact``: under the tasks.md lockfile it reads, lets the caller change the
board, and writes atomically only if something changed. A person's editor does not take the
lock, so just before writing, ``transact`` re-reads the file; if it changed since the read,
the caller's change is applied again to the new content. ``change`` must therefore depend
only on the board it is given (do side effects after ``transact`` returns).
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, TypeVar

from shared.clock import parse_stamp
from shared.errors import LockError
from shared.fsio import publish_file, stage_file
from shared.locks import file_lock

ACTIVE, PENDING, BLOCKED, STOPPED, FAILED, COMPLETED = (
    "Active",
    "Pending",
    "Blocked",
    "Stopped",
    "Failed",
    "Completed Today",
)
SECTIONS = (ACTIVE, PENDING, BLOCKED, STOPPED, FAILED, COMPLETED)
ICONS = {ACTIVE: "🟡", BLOCKED: "⏰", STOPPED: "⏹", FAILED: "❌", COMPLETED: "✅"}
DEFAULT_PRIORITY = 2
TITLE_LIMIT = 200

_HEADING = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<name>.*?)[ \t]*$")
_TASK = re.compile(r"^\[(?P<marker>[^\[\]\r\n]*)\][ \t]*"
                   r"(?:(?P<id>(?P<kind>gh|t)-(?P<number>\d+)):)?(?P<rest>.*)$")
# What a person meant as an id but is not one (``gh-abc:``, ``GH-5:``, ``t-1a:``); ``t-shirt:``
# is a title.
_MALFORMED_ID = re.compile(r"^(?:gh-[^\s:]*|t-[^\s:]*\d[^\s:]*):", re.IGNORECASE)
_PRIORITY_TAGS = {f"{{p{n}}}": n for n in range(4)}
_PRIORITY_LIKE = re.compile(r"\{\s*p\s*\d+\s*\}$", re.IGNORECASE)  # {p9}, {P1}: no tag
_DETAIL = re.compile(r"^- (?P<key>[A-Za-z][A-Za-z0-9 _-]{0,39}): ?(?P<value>.*?)[ \t]*$")
_WORKER = re.compile(r"\bw-[0-9a-zA-Z]+\b")
_T_ID = re.compile(r"^t-(\d+)$")
_GH_ID = re.compile(r"^gh-([1-9]\d*)$")

log = logging.getLogger("tasks")


def issue_task(number: int) -> str:
    """The id of the task for GitHub issue ``number``."""
    return f"gh-{int(number)}"


def issue_number(task_id: str | None) -> int | None:
    """The issue a ``gh-<n>`` task is about; None for any other task id."""
    match = _GH_ID.match(task_id or "")
    return int(match.group(1)) if match else None
_SECTION_NAMES = {name.lower(): name for name in SECTIONS}

T = TypeVar("T")


class TasksConflict(LockError):
    """tasks.md kept changing under a transaction (someone saving it in a tight loop)."""


@dataclass(eq=False)
class Line:
    """One physical line: its text and its ending (``\\n``, ``\\r\\n`` or ``""`` at EOF)."""

    text: str
    end: str


@dataclass(eq=False)
class Task:
    """A task line and its detail lines. Edit the fields freely: ``render`` notices."""

    title: str
    id: str | None = None
    priority: int | None = None  # None: no {pN} tag (launch as DEFAULT_PRIORITY)
    marker: str = ""
    details: list[list[str]] = field(default_factory=list)
    lines: list[Line] | None = None  # as read; None for a task made in this process
    repeats: str | None = None  # the id this line repeated (read without an id; see parse)
    _as_read: tuple | None = None

    @property
    def effective_priority(self) -> int:
        return DEFAULT_PRIORITY if self.priority is None else self.priority

    @property
    def worker(self) -> str | None:
        match = _WORKER.search(self.marker)
        return match.group(0) if match else None

    @property
    def sha(self) -> str | None:
        """The commit in a Completed marker (``✅ cbffe52, w-…``)."""
        first = self.marker.removeprefix(ICONS[COMPLETED]).strip().split(",")[0].strip()
        return first if re.fullmatch(r"[0-9a-f]{7,40}", first) else None

    def detail(self, key: str) -> str | None:
        for k, v in self.details:
            if k == key:
                return v
        return None

    def set_detail(self, key: str, value: str) -> None:
        value = sanitize_title(value, limit=500)
        for pair in self.details:
            if pair[0] == key:
                pair[1] = value
                return
        self.details.append([key, value])

    def drop_detail(self, key: str) -> None:
        self.details = [pair for pair in self.details if pair[0] != key]

    def _state(self) -> tuple:
        return (self.title, self.id, self.priority, self.marker, tuple(map(tuple, self.details)))

    def changed(self) -> bool:
        return self.lines is None or self._as_read != self._state()

    def render_line(self) -> str:
        parts = [f"[{self.marker}]"]
        parts.append(f"{self.id}: {self.title}" if self.id else self.title)
        if self.priority is not None:
            parts.append(f"{{p{self.priority}}}")
        return " ".join(parts)

    def render_texts(self) -> list[str]:
        return [self.render_line()] + [f"- {k}: {v}" for k, v in self.details]


def sanitize_title(text: str, limit: int = TITLE_LIMIT) -> str:
    """Make untrusted text safe for one task line: one line, no control or bidi characters,
    no brackets or braces (so no marker and no priority tag), at most ``limit`` characters."""
    out = []
    for ch in text[: limit * 4]:
        category = unicodedata.category(ch)
        if category == "Cc" or category in ("Zl", "Zp"):
            out.append(" ")
        elif category[0] == "C":  # format (bidi marks, zero-width), private use, unassigned
            continue
        else:
            out.append({"[": "(", "]": ")", "{": "(", "}": ")"}.get(ch, ch))
    clean = " ".join("".join(out).split())
    if len(clean) > limit:
        clean = clean[: limit - 1].rstrip() + "…"
    return clean or "(untitled)"


def make_marker(section: str, worker: str | None = None, sha: str | None = None) -> str:
    """The marker a task carries in ``section`` (``[]`` in Pending)."""
    if section == PENDING or section not in ICONS:
        return ""
    tags = [t for t in ((sha[:7] if sha else None), worker) if t]
    return f"{ICONS[section]} {', '.join(tags)}".rstrip()


def _split_lines(text: str) -> list[Line]:
    parts = text.split("\n")
    lines = []
    for part in parts[:-1]:
        if part.endswith("\r"):
            lines.append(Line(part[:-1], "\r\n"))
        else:
            lines.append(Line(part, "\n"))
    if parts[-1]:
        lines.append(Line(parts[-1], ""))
    return lines


def _parse_task_line(text: str) -> Task | None:
    match = _TASK.match(text) if text.startswith("[") else None
    if not match:
        return None
    task_id, title = match.group("id"), match.group("rest").strip()
    if task_id is not None:
        task_id = f"{match.group('kind')}-{int(match.group('number'))}"  # gh-06 is gh-6
    elif _MALFORMED_ID.match(title):
        return None
    priority = _PRIORITY_TAGS.get(title[-4:])
    if priority is not None:
        title = title[:-4].rstrip()
    if not title:
        return None
    return Task(title=title, id=task_id, priority=priority, marker=match.group("marker").strip())


class Problem(NamedTuple):
    """A line of tasks.md worth a person's look, and what is wrong with it."""

    line: int  # 1-based
    text: str
    why: str


NOT_UNDERSTOOD = "not understood: a task is '[] title {pN}', its details '- Key: value'"
# How close (difflib ratio) a heading's name must be to a section's to be taken for a typo of
# it: "Pendng" (0.92) and "Faild" (0.91) are; "Archive" (0.77 to "Active") is a heading of its own.
SECTION_LIKENESS = 0.8


def _heading_problem(text: str) -> str | None:
    """What is wrong with a heading that is no section but looks like one (``## Pendng``,
    ``### Pending``); None for any other line."""
    match = _HEADING.match(text)
    if not match:
        return None
    name = match.group("name").lower()
    if len(match.group("hashes")) == 2 and name in _SECTION_NAMES:
        return None
    close = difflib.get_close_matches(name, _SECTION_NAMES, n=1, cutoff=SECTION_LIKENESS)
    if not close:
        return None
    meant = f"did you mean '## {_SECTION_NAMES[close[0]]}'?"
    if len(match.group("hashes")) == 2:
        return f"not a section: {meant} The tasks under it are not run"
    return f"not a section heading: {meant} The tasks under it belong to the section above"


def _id_problem(text: str) -> str | None:
    """What is wrong with a task line whose id is malformed (``[] gh-abc: x``); None for any
    other line."""
    match = _TASK.match(text) if text.startswith("[") else None
    bad = _MALFORMED_ID.match(match.group("rest").strip()) if match and not match.group("id") \
        else None
    if bad is None:
        return None
    return (f"{bad.group(0)[:-1]!r} is not a task id (gh-N for issue N, t-N for a typed "
            "line): the line is not run")


def _priority_problem(task: Task) -> str | None:
    """What is wrong with a priority tag out of range (``{p9}``), left in the title."""
    tag = _PRIORITY_LIKE.search(task.title) if task.priority is None else None
    if tag is None:
        return None
    return (f"{tag.group(0)} is not a priority ({{p0}} to {{p3}}): the task runs at "
            f"{{p{DEFAULT_PRIORITY}}} with it in its title")


class Board:
    """A parsed tasks.md. Items are ``Line`` objects and ``Task`` blocks, in file order."""

    def __init__(self, items: list[Line | Task], newline: str, problems: list[Problem]):
        self.items = items
        self.newline = newline
        self.problems = problems  # as read; line numbers do not follow later changes

    # --- queries ---
    def sections(self) -> Iterator[tuple[str | None, Task]]:
        """(section name or None, task) for every task, in file order."""
        section: str | None = None
        for item in self.items:
            if isinstance(item, Line):
                name = _section_of_heading(item.text)
                if name is not False:
                    section = name
            else:
                yield section, item

    def tasks(self, section: str | None = None) -> list[Task]:
        return [t for s, t in self.sections() if section is None or s == section]

    def section_of(self, task: Task) -> str | None:
        for s, t in self.sections():
            if t is task:
                return s
        raise KeyError(task.id)

    def get(self, task_id: str) -> Task | None:
        for item in self.items:
            if isinstance(item, Task) and item.id == task_id:
                return item
        return None

    def find(self, task_id: str) -> tuple[str | None, Task] | None:
        for s, t in self.sections():
            if t.id == task_id:
                return s, t
        return None

    def ids(self) -> set[str]:
        return {t.id for t in self.tasks() if t.id}

    def launch_order(self) -> list[Task]:
        """Pending tasks, lowest priority number first, then the order of lines."""
        pending = self.tasks(PENDING)
        return sorted(pending, key=lambda t: t.effective_priority)  # sort is stable

    # --- changes ---
    def add(self, title: str, *, task_id: str | None = None, priority: int | None = None,
            section: str = PENDING, details: Iterable[tuple[str, str]] = ()) -> Task:
        """Append a task with a sanitised title to ``section``."""
        task = Task(title=sanitize_title(title), id=task_id, priority=priority,
                    marker=make_marker(section))
        for key, value in details:
            task.set_detail(key, value)
        self._insert(section, task)
        return task

    def remove(self, task: Task) -> Task:
        self.items = [i for i in self.items if i is not task]
        return task

    def move(self, task: Task, section: str, *, marker: str | None = None,
             details: Iterable[tuple[str, str]] | None = None) -> Task:
        """Move ``task`` (with its detail lines) to the end of ``section``."""
        self.remove(task)
        task.marker = make_marker(section, task.worker) if marker is None else marker
        if details is not None:
            task.details = []
            for key, value in details:
                task.set_detail(key, value)
        self._insert(section, task)
        return task

    def assign_ids(self, taken: Iterable[str] = ()) -> list[Task]:
        """Give every id-less task the next ``t-N``, never reusing one in the file or
        ``taken`` (the archive's ids). Returns the tasks that got an id."""
        highest = max((int(m.group(1)) for i in (*self.ids(), *taken)
                       if (m := _T_ID.match(i))), default=0)
        assigned = []
        for task in self.tasks():
            if task.id is None:
                highest += 1
                task.id = f"t-{highest}"
                assigned.append(task)
        return assigned

    def render(self) -> str:
        out: list[str] = []
        pieces: list[Line] = []
        for item in self.items:
            if isinstance(item, Line):
                pieces.append(item)
            elif not item.changed():
                pieces.extend(item.lines)
            else:
                pieces.extend(Line(text, self.newline) for text in item.render_texts())
        for n, line in enumerate(pieces):
            last = n == len(pieces) - 1
            out.append(line.text)
            out.append(line.end if (line.end or last) else self.newline)
        return "".join(out)

    # --- internals ---
    def _insert(self, section: str, task: Task) -> None:
        current: str | None = None
        header_at = last_task_at = None
        for n, item in enumerate(self.items):
            if isinstance(item, Line):
                name = _section_of_heading(item.text)
                if name is not False:
                    current = name
                    if name == section and header_at is None:
                        header_at = n
            elif current == section and header_at is not None:
                last_task_at = n
        if header_at is None:
            header_at = self._create_section(section)
            last_task_at = None
        self.items.insert((last_task_at if last_task_at is not None else header_at) + 1, task)

    def _create_section(self, section: str) -> int:
        """Insert a ``## section`` heading in the canonical order; returns its index."""
        later = SECTIONS[SECTIONS.index(section) + 1:]
        for n, item in enumerate(self.items):
            if isinstance(item, Line) and _section_of_heading(item.text) in later:
                self.items[n:n] = [Line(f"## {section}", self.newline), Line("", self.newline)]
                return n
        if self.items and not (isinstance(self.items[-1], Line) and not self.items[-1].text.strip()):
            self.items.append(Line("", self.newline))
        self.items.append(Line(f"## {section}", self.newline))
        return len(self.items) - 1


def _section_of_heading(text: str) -> str | None | bool:
    """A level-2 heading's known section name, None for an unknown one, False otherwise."""
    match = _HEADING.match(text) if text.startswith("##") else None
    if not match or len(match.group("hashes")) != 2:
        return False
    return _SECTION_NAMES.get(match.group("name").lower())


def parse(text: str) -> Board:
    lines = _split_lines(text)
    newline = "\r\n" if lines and lines[0].end == "\r\n" else "\n"
    items: list[Line | Task] = []
    problems: list[Problem] = []
    seen_ids: set[str] = set()
    current: Task | None = None
    section: str | None = None
    for number, line in enumerate(lines, start=1):
        if current is not None:
            detail = _DETAIL.match(line.text) if line.text.startswith("- ") else None
            if detail:
                current.details.append([detail.group("key"), detail.group("value")])
                current.lines.append(line)
                continue
            current._as_read = current._state()
            current = None
        heading = _section_of_heading(line.text)
        if heading is not False:
            section = heading
            items.append(line)
            if heading is None and (why := _heading_problem(line.text)):
                problems.append(Problem(number, line.text, why))
            continue
        # Text before the first section or under an unknown heading is prose, kept as it is
        # (a Markdown link there is not a task); inside a known section, a line that is not
        # a task and not a comment is worth reporting.
        task = _parse_task_line(line.text) if section is not None else None
        if task is not None:
            if task.id in seen_ids:
                # The later line is read without an id: nobody acts on it, and the next
                # transaction gives it a fresh one (unchanged until then, it renders as read).
                task.repeats, task.id = task.id, None
            elif task.id is not None:
                seen_ids.add(task.id)
            task.lines = [line]
            items.append(task)
            current = task
            if why := _priority_problem(task):
                problems.append(Problem(number, line.text, why))
            continue
        items.append(line)
        stripped = line.text.strip()
        if stripped.startswith("#") and (why := _heading_problem(stripped)):
            problems.append(Problem(number, line.text, why))  # ``# Pending``: the wrong level
        elif section is not None and stripped and not stripped.startswith(("#", ">", "<!--")):
            problems.append(Problem(number, line.text, _id_problem(line.text) or NOT_UNDERSTOOD))
    if current is not None:
        current._as_read = current._state()
    return Board(items, newline, problems)


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""


def read_board(path: Path) -> Board:
    """Parse tasks.md without the lock (a snapshot for queries)."""
    return parse(decode(_read_bytes(path)))


def archived_ids(archive_dir: Path | None) -> set[str]:
    """Task ids found in ``state/archive/*.md`` (same format as tasks.md)."""
    ids: set[str] = set()
    if archive_dir is None or not Path(archive_dir).is_dir():
        return ids
    for file in sorted(Path(archive_dir).glob("*.md")):
        ids |= read_board(file).ids()
    return ids


def transact(path: Path, change: Callable[[Board], T], *, lock_path: Path,
             archive_dir: Path | None = None, timeout: float = 10.0,
             attempts: int = 50) -> T:
    """Apply ``change`` to tasks.md under its lock; see the module docstring."""
    path = Path(path)
    with file_lock(lock_path, timeout=timeout):
        for _ in range(attempts):
            raw = _read_bytes(path)
            text = decode(raw)
            board = parse(text)
            given = []
            if any(t.id is None for t in board.tasks()):
                given = board.assign_ids(archived_ids(archive_dir))
            result = change(board)
            new = board.render()
            if new == text:
                return result
            # Stage (write + fsync, slow on an SD card) first, then compare, then rename: the
            # window in which a person's save could be overwritten is only the rename.
            staged = stage_file(path, encode(new))
            if _read_bytes(path) != raw:
                staged.unlink()
                continue  # a person saved the file meanwhile: redo the change on their text
            publish_file(staged, path)
            for task in given:
                if task.repeats:
                    log.warning("%s: a second line had id %s (%s): it is now %s",
                                path.name, task.repeats, task.title, task.id)
            return result
    raise TasksConflict(f"{path}: changed under every one of {attempts} attempts")


def edit_tasks(cfg, change: Callable[[Board], T]) -> T:
    """``transact`` on the configured tasks.md, its lock and archive."""
    return transact(cfg.tasks_file, change, lock_path=cfg.tasks_lock, archive_dir=cfg.archive_dir)


# --- the day rollover --------------------------------------------------------------------

def archive_earlier_days(cfg, board: Board, today: date | None = None) -> int:
    """Move Completed Today entries of earlier days (their ``- Completed:`` date) into
    ``state/archive/<date>.md`` (tasks.md format); returns how many moved. Written to the
    archive first (skipped if already there), then removed from tasks.md, so a crash in
    between duplicates nothing."""
    today = today or date.today()
    due: dict[date, list[Task]] = {}
    for task in board.tasks(COMPLETED):
        value = task.detail("Completed") or ""
        if not task.id or value[:10] >= today.isoformat():
            continue  # today's (a string compare: this runs on every rescan)
        when = parse_stamp(value)
        if when is not None and when.date() < today:
            due.setdefault(when.date(), []).append(task)
    for day, tasks in sorted(due.items()):
        transact(cfg.archive_dir / f"{day.isoformat()}.md", partial(archive_into, day, tasks),
                 lock_path=cfg.locks_dir / "archive.lock")
    done = {(t.id, t.detail("Completed")) for tasks in due.values() for t in tasks}
    if done:
        edit_tasks(cfg, partial(drop_archived, done))
    return len(done)


def archive_into(day: date, tasks: list[Task], board: Board) -> None:
    """Pure change for an archive file: add the completions it does not hold yet."""
    if not board.items:
        board.items = [Line(f"# Tasks completed on {day.isoformat()}", "\n"), Line("", "\n")]
    present = {(t.id, t.detail("Completed")) for t in board.tasks()}
    for task in tasks:
        if (task.id, task.detail("Completed")) in present:
            continue
        copy = board.add(task.title, task_id=task.id, priority=task.priority,
                         section=COMPLETED, details=task.details)
        copy.marker = task.marker


def drop_archived(done: set, board: Board) -> None:
    """Pure change for tasks.md: remove the Completed Today entries now in the archive."""
    for task in board.tasks(COMPLETED):
        if (task.id, task.detail("Completed")) in done:
            board.remove(task)
