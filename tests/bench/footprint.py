"""What a running process holds, read from /proc: resident memory, open file descriptors and
inotify watches (one ``inotify wd:`` line per watch in the fdinfo of its inotify
descriptors), for the history and soak benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Footprint:
    rss_mb: float
    fds: int
    watches: int


def inotify_watches(pid: int) -> int:
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += info.read_text().count("inotify wd:")
        except OSError:  # closed meanwhile
            continue
    return count


def footprint(pid: int) -> Footprint:
    proc = psutil.Process(pid)
    return Footprint(proc.memory_info().rss / 2**20, proc.num_fds(), inotify_watches(pid))
