"""Events: one small frontmatter file per thing that happened, counted by the metrics program.

``emit`` publishes one into the ``state/events`` maildir: ``type``, ``at`` (ISO 8601 with
offset), ``program``, ``key``, optional ``task``, then details. Delivery is at least once and
metrics counts each key once, so an event about one run is keyed by ``run_key`` (the same key
when a step is redone after a crash); any other event gets a unique key. Which program emits
which type, and with which key: docs/PROTOCOL.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared.clock import now_iso
from shared.fsio import publish, unique_name
from shared.records import render_record


def run_key(task: str, worker_id: Any, what: str) -> str:
    """The key of an event about one run (the same when a step is redone after a crash)."""
    return f"{task}/{worker_id}/{what}"


def emit(events_dir: Path, type: str, task: str | None = None, *, key: str | None = None,
         **details: Any) -> Path:
    """Publish one event; returns its path in ``new/``. Without ``key`` it is unique."""
    name = unique_name()
    program = os.environ.get("TAC8_PROGRAM", "tac8")
    meta: dict[str, Any] = {"type": type, "at": now_iso(), "program": program,
                            "key": key or f"{program}/{name}"}
    if task:
        meta["task"] = task
    meta.update({k: v for k, v in details.items() if v is not None})
    return publish(events_dir, render_record(meta), name=name)

