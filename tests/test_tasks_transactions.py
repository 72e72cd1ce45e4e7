"""tasks.md transactions: the lock, no lost updates, a person's edit survives, crashes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared import tasks
from shared.locks import LockTimeout
from shared.tasks import ACTIVE, PENDING, parse, read_board, transact
from tests.agents import wait_for

QUEUE = "# Tasks\n\n## Active\n\n## Pending\n[] t-1: seed task\n"


def _hammer(path: str, lock: str, worker: int, count: int) -> None:
    """Each transaction appends a task, or moves one of this worker's tasks to Active."""
    for n in range(count):
        def change(board, n=n):
            if n % 2 == 0:
                board.add(f"w{worker} n{n}", task_id=f"gh-{worker * 100_000 + n}")
            else:
                board.move(board.get(f"gh-{worker * 100_000 + n - 1}"), ACTIVE, marker=f"🟡 w-{worker}")
        transact(Path(path), change, lock_path=Path(lock))


def test_eight_processes_two_hundred_transactions_each(tmp_path):
    path, lock = tmp_path / "tasks.md", tmp_path / "tasks.lock"
    path.write_text(QUEUE)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(path), str(lock), w, 200)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    board = read_board(path)
    assert board.problems == []
    active = {t.id for t in board.tasks(ACTIVE)}
    expected = {f"gh-{w * 100_000 + n}" for w in range(8) for n in range(0, 200, 2)}
    assert active == expected
    assert [t.id for t in board.tasks(PENDING)] == ["t-1"]


def test_a_persons_edit_between_read_and_write_survives(tmp_path):
    path, lock = tmp_path / "tasks.md", tmp_path / "tasks.lock"
    path.write_text(QUEUE)
    calls = []

    def change(board):
        calls.append(board.render())
        if len(calls) == 1:  # the person saves from an editor while we hold the lock
            path.write_text(QUEUE + "[] t-2: typed by a person {p0}\n")
        board.move(board.get("t-1"), ACTIVE, marker="🟡 w-abc")

    transact(path, change, lock_path=lock)
    assert len(calls) == 2
    board = read_board(path)
    assert board.find("t-1")[0] == ACTIVE
    assert board.find("t-2")[0] == PENDING and board.get("t-2").priority == 0


def test_nothing_is_written_when_nothing_changed(tmp_path):
    path, lock = tmp_path / "tasks.md", tmp_path / "tasks.lock"
    path.write_text(QUEUE)
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert transact(path, lambda board: len(board.tasks()), lock_path=lock) == 1
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_idless_lines_get_ids_that_the_archive_has_not_used(tmp_path):
    path, lock, archive = tmp_path / "tasks.md", tmp_path / "tasks.lock", tmp_path / "archive"
    archive.mkdir()
    (archive / "2026-11-20.md").write_text("## Completed Today\n[✅ abcdef0, w-1] t-7: old\n")
    path.write_text("## Pending\n[] write docs\n")
    transact(path, lambda board: None, lock_path=lock, archive_dir=archive)
    assert read_board(path).tasks(PENDING)[0].id == "t-8"


def test_a_repeated_id_gets_a_fresh_one_and_the_log_says_so(tmp_path, caplog):
    path, lock, archive = tmp_path / "tasks.md", tmp_path / "tasks.lock", tmp_path / "archive"
    archive.mkdir()
    (archive / "2026-11-20.md").write_text("## Completed Today\n[✅ abcdef0, w-1] t-9: old\n")
    path.write_text("## Active\n[🟡 w-1] gh-1: first\n\n## Completed Today\n"
                    "[✅ abcdef0, w-2] gh-1: pasted\n")
    transact(path, lambda board: None, lock_path=lock, archive_dir=archive)
    board = read_board(path)
    assert [(s, t.id, t.title) for s, t in board.sections()] == [
        (ACTIVE, "gh-1", "first"), ("Completed Today", "t-10", "pasted")]
    assert "a second line had id gh-1 (pasted): it is now t-10" in caplog.text


def test_lock_timeout_names_the_holder(tmp_path):
    lock = tmp_path / "tasks.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from shared.locks import file_lock\n"
        "with file_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(30)\n"), str(lock)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TAC8_PROGRAM": "holder-prog"})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout) as err:
            transact(tmp_path / "t.md", lambda b: None, lock_path=lock, timeout=0.2)
        assert f"pid={holder.pid}" in str(err.value) and "holder-prog" in str(err.value)
    finally:
        holder.kill()
        holder.wait()


WRITER = """
import sys
from pathlib import Path
from shared.fsio import atomic_write
path = Path(sys.argv[1])
n = 0
while True:
    n += 1
    atomic_write(path, (f"version {n}\\n" * 20000).encode())
"""


def test_sigkill_during_writes_leaves_a_whole_file(tmp_path):
    path = tmp_path / "tasks.md"
    path.write_text("version 0\n" * 20000)
    for _ in range(5):
        before = path.read_text().split("\n", 1)[0]
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        # killed while it writes: after it has replaced the file at least once
        wait_for(lambda: path.read_text().split("\n", 1)[0] != before, what="a first write")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines = path.read_text().splitlines()
        assert len(lines) == 20000 and len(set(lines)) == 1
    # Temp files of killed writers are dot-named: never a data file anyone reads.
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p.name != "tasks.md")


def _transactions_after_each_other(path, lock, moves):
    for task_id, section in moves:
        transact(path, lambda board: board.move(board.get(task_id), section), lock_path=lock)


def test_any_sequence_of_transactions_still_parses(tmp_path):
    from hypothesis import given, settings, strategies as st

    path, lock = tmp_path / "tasks.md", tmp_path / "tasks.lock"

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["t-1", "t-2", "t-3"]), st.sampled_from(tasks.SECTIONS)), max_size=12))
    def run(moves):
        path.write_text("# Tasks\nintro prose\n\n## Pending\n[] t-1: a\n[] t-2: b {p1}\n- Retry: later\n[] t-3: c\nodd line\n")
        _transactions_after_each_other(path, lock, moves)
        board = parse(path.read_text())
        assert sorted(t.id for t in board.tasks()) == ["t-1", "t-2", "t-3"]
        assert "intro prose" in path.read_text() and "odd line" in path.read_text()
        assert board.get("t-2").detail("Retry") == "later"

    run()
