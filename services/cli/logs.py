"""``tac8 logs``: the agent's log of a task (``logs/<task>.jsonl``) as text a person reads,
``--follow`` while the task runs.

Each line is rendered by ``shared.agentlog.readable`` (stream-json messages as a short
account; other lines pass through; all without control characters).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from services.cli.common import UserError, section_of, task_id
from shared.agentlog import readable
from shared.config import load_config
from shared.runs import worker_alive
from shared.tasks import ACTIVE

FOLLOW_POLL = 0.25  # seconds between reads of a followed log


def follow(log: Path, still_running: Callable[[], bool]) -> Iterator[str]:
    """The log's lines, then new lines as they are written, while ``still_running()``."""
    offset, partial = 0, b""
    while True:
        running = still_running()  # asked before reading, so nothing written last is missed
        try:
            with open(log, "rb") as f:
                if os.fstat(f.fileno()).st_size < offset:  # a new attempt started the log over
                    offset, partial = 0, b""
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        *complete, partial = (partial + chunk).split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace")
        if not running:
            if partial:
                yield partial.decode("utf-8", errors="replace")
            return
        time.sleep(FOLLOW_POLL)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="gh-N, t-N, or an issue number")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing while the task runs")


def command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    task = task_id(args.task)
    log = cfg.agent_log(task)

    def running() -> bool:
        return worker_alive(cfg, task) or section_of(cfg, task) == ACTIVE

    following = args.follow and running()
    if not following and not log.exists():
        raise UserError(f"no agent log for {task} ({log} does not exist)")
    for line in follow(log, running if following else lambda: False):
        for text in readable(line):
            print(text, flush=args.follow)
    return 0
