"""What "healthy" means, shared by the metrics program, the CLI and the launcher.

* ``assess(recent, stale)`` applies the health rules to what happened in the recent window
  (``HEALTH_WINDOW``): errors age out of the window, so health recovers by itself.
* ``heartbeat_ages(cfg)`` reads ``state/heartbeats/<program>`` mtimes (each program touches
  its file at most once a minute); an age over ``HEARTBEAT_STALE``, or no file at all, is a
  stale program, which makes health at least ``warning``.
* ``read_metrics(cfg)`` reads ``metrics.json`` (written atomically by the metrics program
  only); None while it does not exist or cannot be read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

from shared.config import Config
from shared.program import HEARTBEAT_EVERY

OK, WARNING, DEGRADED, CRITICAL = "ok", "warning", "degraded", "critical"
LEVELS = (OK, WARNING, DEGRADED, CRITICAL)  # in order of severity

PROGRAMS = ("fetcher", "launcher", "observer", "metrics")

HEALTH_WINDOW = 3600.0  # seconds: errors older than this no longer count
CRITICAL_WORKTREE_ERRORS = 20  # more than this many in the window → critical
CRITICAL_GITHUB_API_ERRORS = 10
DEGRADED_WORKTREE_ERRORS = 10
WARNING_WORKTREE_ERRORS = 5
HEARTBEAT_STALE = 3 * HEARTBEAT_EVERY  # three missed heartbeats


@dataclass(frozen=True)
class Recent:
    """Counts of what happened within the health window."""

    worktree_errors: int = 0
    github_api_errors: int = 0
    failures: int = 0  # tasks that failed for good (moved to Failed), not retried attempts
    completions: int = 0  # tasks completed


def assess(recent: Recent, stale: Sequence[str] = ()) -> tuple[str, list[str]]:
    """The health level and the reasons for it (empty when ``ok``)."""
    findings: list[tuple[str, str]] = []
    if recent.worktree_errors > CRITICAL_WORKTREE_ERRORS:
        findings.append((CRITICAL, f"{recent.worktree_errors} worktree errors in the window"))
    elif recent.worktree_errors > DEGRADED_WORKTREE_ERRORS:
        findings.append((DEGRADED, f"{recent.worktree_errors} worktree errors in the window"))
    elif recent.worktree_errors > WARNING_WORKTREE_ERRORS:
        findings.append((WARNING, f"{recent.worktree_errors} worktree errors in the window"))
    if recent.github_api_errors > CRITICAL_GITHUB_API_ERRORS:
        findings.append((CRITICAL, f"{recent.github_api_errors} GitHub API errors in the window"))
    if recent.failures > recent.completions:
        findings.append((DEGRADED, f"{recent.failures} tasks failed vs {recent.completions} "
                                   "completed in the window"))
    for program in stale:
        findings.append((WARNING, f"{program}: no heartbeat in the last {HEARTBEAT_STALE:g} s"))
    level = max((lvl for lvl, _ in findings), key=LEVELS.index, default=OK)
    return level, [reason for _, reason in findings]


def heartbeat_ages(cfg: Config, now: float | None = None) -> dict[str, float | None]:
    """Seconds since each program's last heartbeat; None when it never beat."""
    now = time.time() if now is None else now
    ages: dict[str, float | None] = {}
    for program in PROGRAMS:
        try:
            ages[program] = max(0.0, now - cfg.heartbeat(program).stat().st_mtime)
        except FileNotFoundError:
            ages[program] = None
    return ages


def is_stale(age: float | None) -> bool:
    return age is None or age > HEARTBEAT_STALE


def read_metrics(cfg: Config) -> dict[str, Any] | None:
    try:
        data = json.loads(cfg.paths.metrics.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def available_memory_mb() -> float:
    """Memory the kernel could give a new process now (``MemAvailable``), in MiB. Read from
    /proc directly: the launcher asks on every launch and should not carry psutil for it."""
    with open("/proc/meminfo", "rb") as meminfo:
        for line in meminfo:
            if line.startswith(b"MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise OSError("/proc/meminfo has no MemAvailable line")
