"""Crash-safe file writes and maildir handoff (docs/PROTOCOL.md, rules 1 and 2).

Atomic publish: write a temporary file in the same directory, flush, fsync, ``os.replace``
onto the name, fsync the directory. A reader sees the old or the new content, never half.
Temporary files are named ``.<name>.tmp.<pid>.<rand>`` so no reader mistakes one for data
(every reader in tac8 looks for exact names or for files in a maildir's ``new/``).

Maildir: a producer writes ``<dir>/tmp/<name>`` and renames it to ``<dir>/new/<name>``;
names are ``<ns-timestamp>.<pid>.<counter>`` so they sort by time and never collide. A
consumer handles a file in ``new/`` and deletes it only after its effect is durable.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

_counter = itertools.count()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage_file(path: Path, data: str | bytes, *, mode: int = 0o644, fsync: bool = True) -> Path:
    """Write ``data`` to a durable temporary file beside ``path``; returns it. Publish it
    with ``publish_file`` (or unlink it to give up). ``fsync=False`` for a file whose loss
    in a power cut costs nothing (a heartbeat): still atomic, not durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish_file(staged: Path, path: Path, *, fsync: bool = True) -> None:
    """Rename a ``stage_file`` result onto ``path`` and make the rename durable."""
    os.replace(staged, path)
    if fsync:
        fsync_dir(Path(path).parent)


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see all of it or none of it."""
    staged = stage_file(path, data, mode=mode, fsync=fsync)
    try:
        publish_file(staged, Path(path), fsync=fsync)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def unique_name() -> str:
    """A maildir name: sorts by creation time, unique across processes."""
    return f"{time.time_ns():020d}.{os.getpid()}.{next(_counter)}"


def publish(maildir: Path, data: str | bytes, name: str | None = None) -> Path:
    """Hand ``data`` to a consumer of ``maildir`` (as ``name``, default a fresh
    ``unique_name``); returns the path in ``new/``."""
    return deliver(stage(maildir, data, name))


def stage(maildir: Path, data: str | bytes, name: str | None = None) -> Path:
    """The first half of ``publish``: ``data`` durably in ``tmp/``, not yet visible to the
    consumer (a fetcher's outbox item is staged, then delivered when complete)."""
    staged = Path(maildir) / "tmp" / (name or unique_name())
    atomic_write(staged, data)
    return staged


def deliver(staged: Path) -> Path:
    """The second half of ``publish``: move a staged file into ``new/``; its path there."""
    final = staged.parent.parent / "new" / staged.name
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def pending(maildir: Path, subdir: str = "new") -> list[Path]:
    """Files waiting in ``maildir/new`` (or another ``subdir``, e.g. a consumer's
    ``cur``), oldest first."""
    directory = Path(maildir) / subdir
    try:
        names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
    except FileNotFoundError:
        return []
    return [directory / n for n in names]


def sweep_tmp(maildir: Path, older_than: float = 3600.0) -> int:
    """Delete staged files a crashed producer left in ``tmp/``; returns how many."""
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(Path(maildir) / "tmp"))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > older_than:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def keep_tail(path: Path, limit: int, keep: int) -> bool:
    """If the file at ``path`` is larger than ``limit`` bytes, replace it (atomically) by its
    last ``keep`` bytes, from a line start; True if it was cut. For logs that a process
    appends to across runs: call it before opening them."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size <= limit:
                return False
            f.seek(size - keep)
            tail = f.read()
    except FileNotFoundError:
        return False
    newline = tail.find(b"\n")
    cut = size - len(tail) + newline + 1
    note = f"[tac8: {cut} earlier bytes of this log were dropped]\n".encode()
    atomic_write(path, note + tail[newline + 1:], fsync=False)
    return True
