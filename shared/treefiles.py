"""What tac8 reads of the files an agent leaves in its worktree: the tree is hostile input.

``STOP`` and ``BLOCKED.md`` count by their presence (``lstat``: a symlink or a FIFO named
STOP still means stop, and is never opened). Their content is read only by the worker, only
from a regular file with one link, opened without following a symlink and without blocking,
and at most ``CONTENT_CAP`` bytes; what others need is copied into ``state/runs/``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

STOP, BLOCKED = "STOP", "BLOCKED.md"
CONTENT_CAP = 16 * 1024  # bytes of an agent's question that tac8 reads


def present(path: Path) -> bool:
    """Whether anything (file, symlink, FIFO…) is at ``path``."""
    return os.path.lexists(path)


def read_capped(path: Path, cap: int = CONTENT_CAP) -> str | None:
    """The text of the regular file at ``path`` (first ``cap`` bytes), or None when there is
    none, or it is a symlink, a FIFO, a device, a directory or a hard link to another file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        chunks, left = [], cap
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")
