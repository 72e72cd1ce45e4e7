"""`make bench`: runs every ``tests/bench/bench_*.py`` module's ``run()`` and prints one table.

Each ``run()`` yields rows ``(area, measurement, value, goal)``; value and goal are text.
Run one area with ``python -m tests.bench AREA`` (the module name without ``bench_``). A module
that sets ``ON_REQUEST = True`` (the hour-long soak) runs only when named.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import tests.bench as package


def main(argv: list[str]) -> int:
    wanted = set(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_"))
    rows = []
    for name in names:
        area = name.removeprefix("bench_")
        if wanted and area not in wanted:
            continue
        module = importlib.import_module(f"tests.bench.{name}")
        if getattr(module, "ON_REQUEST", False) and area not in wanted:
            continue  # a long run (the soak): only when named
        started = time.monotonic()
        print(f"… {area}", file=sys.stderr, flush=True)
        for row in module.run():
            rows.append(tuple(str(c) for c in row))
            print("   " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
        print(f"  ({time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)
    header = ("area", "measurement", "value", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(line)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print(line)
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
