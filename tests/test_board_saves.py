"""The board is level-triggered: a person's editor that reads tasks.md, waits, and saves its
stale buffer (undoing what the programs wrote meanwhile) loses nothing and runs nothing twice.

A simulated editor saves 200+ times while the real launcher and observer run tasks with a
fake agent: every save writes back what it read a moment ago (in place or by rename), and
now and then with a line the person added. The run records are the truth for tasks that have
a run: the launcher shows a live run in Active again, the observer shows an ended run's
outcome again.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

from shared import runs
from shared.tasks import ACTIVE, COMPLETED, PENDING, edit_tasks, make_marker, read_board
from tests.agents import events_of, use_agent, wait_cycles, wait_for
from tests.test_observer_support import ServiceProcess

SAVES = 200
FIRST_TASKS = 6


class Editor(threading.Thread):
    """A person's editor: read, think for 0.1–0.6 s, save the buffer; every 10th save adds
    a line of the person's own."""

    def __init__(self, path, seed: int):
        super().__init__(daemon=True)
        self.path = path
        self.rng = random.Random(seed)
        self.saves = 0
        self.added: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.saves < SAVES:
                text = self.path.read_text()
                time.sleep(self.rng.uniform(0.1, 0.6))
                if self.saves % 10 == 9:
                    title = f"Person's task {len(self.added) + 1}"
                    text = text.replace("## Pending\n", f"## Pending\n[] {title}\n", 1)
                    self.added.append(title)
                self.save(text)
                self.saves += 1
        except BaseException as exc:  # the test reports it
            self.error = exc

    def save(self, text: str) -> None:
        if self.saves % 2:  # in place, as vi or nano do
            with open(self.path, "w") as f:
                f.write(text)
        else:  # by rename, as many editors do
            tmp = self.path.with_name(f".{self.path.name}.swp")
            tmp.write_text(text)
            os.replace(tmp, self.path)


def test_stale_saves_lose_no_edit_and_run_no_task_twice(sandbox, tmp_path):
    cfg = use_agent(sandbox, "commit", "0.3", stall_timeout=30)
    cfg = sandbox.write_config(launcher={"max_workers": 2, "min_free_memory_mb": 0})
    edit_tasks(cfg, lambda board: [board.add(f"Task {n}", task_id=f"t-{n}")
                                   for n in range(1, FIRST_TASKS + 1)])
    programs = [ServiceProcess(cfg, tmp_path / f"{name}.log", name).start()
                for name in ("launcher", "observer")]
    editor = Editor(cfg.tasks_file, seed=12)
    try:
        editor.start()
        editor.join(timeout=SAVES * 2)
        assert not editor.is_alive() and editor.error is None, editor.error
        assert editor.saves == SAVES

        def settled() -> bool:
            board = read_board(cfg.tasks_file)
            done = board.tasks(COMPLETED)
            return len(done) == FIRST_TASKS + len(editor.added) and not board.tasks(ACTIVE)
        wait_for(settled, timeout=120, interval=0.2, what="every task completed")
        wait_cycles(cfg, "observer", 2, nudge=lambda: os.utime(cfg.tasks_file))
    finally:
        for program in programs:
            assert program.stop() == 0, program.log.read_text()

    board = read_board(cfg.tasks_file)
    completed = {t.title for t in board.tasks(COMPLETED)}
    assert set(editor.added) <= completed  # no edit of the person's was lost
    assert board.tasks(PENDING) == [] and board.tasks(ACTIVE) == []  # no transition lost
    launches = Counter(e["task"] for e in events_of(cfg, "worker_launched"))
    assert set(launches.values()) == {1}, launches  # no task ran twice
    assert len(launches) == FIRST_TASKS + len(editor.added)
    for task in board.tasks(COMPLETED):
        meta = runs.read_run(cfg, task.id).meta
        assert (meta["outcome"], meta["attempt"]) == ("pr", 1)
        assert task.marker == make_marker(COMPLETED, meta["worker_id"], meta["commit"])
