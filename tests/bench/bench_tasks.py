"""tasks.md engine: one locked transaction and a parse, at 100 / 1,000 / 10,000 tasks.

Goal (issue 2): ≤ 50 ms per transaction at 10,000 tasks.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from shared.tasks import ACTIVE, parse, transact


def _queue(n: int) -> str:
    lines = ["# Tasks", "", "## Active", "", "## Pending"]
    for i in range(n):
        lines.append(f"[] gh-{i}: Task number {i} with a realistic title {{p{i % 4}}}")
        if i % 5 == 0:
            lines.append(f"- Retry: attempt 2/3 not before 2026-11-24 10:{i % 60:02d}:00")
    lines += ["", "## Completed Today", ""]
    return "\n".join(lines)


def _ms(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.95) - 1] * 1000


def run():
    with tempfile.TemporaryDirectory() as tmp:
        for n in (100, 1_000, 10_000):
            path, lock = Path(tmp) / f"tasks-{n}.md", Path(tmp) / f"tasks-{n}.lock"
            text = _queue(n)
            path.write_text(text)
            parse_times, txn_times = [], []
            for _ in range(20):
                t0 = time.perf_counter()
                parse(text)
                parse_times.append(time.perf_counter() - t0)
            for i in range(40):
                def change(board, i=i):
                    # the launcher's transaction: take the next task, mark it active
                    board.move(board.launch_order()[0], ACTIVE, marker=f"🟡 w-{i:06x}")
                t0 = time.perf_counter()
                transact(path, change, lock_path=lock)
                txn_times.append(time.perf_counter() - t0)
            p_med, p_95 = _ms(parse_times)
            t_med, t_95 = _ms(txn_times)
            yield ("tasks.md", f"parse, {n:,} tasks", f"median {p_med:.1f} ms · p95 {p_95:.1f} ms", "")
            goal = "≤ 50 ms" if n == 10_000 else ""
            yield ("tasks.md", f"locked transaction, {n:,} tasks",
                   f"median {t_med:.1f} ms · p95 {t_95:.1f} ms", goal)
