"""Bounded state: a task's files leave the working folders once it has left tasks.md, retired
folders go after ``keep_days``, liveness locks exist only while a worker lives, every run
keeps its own agent log, and the logs tac8 appends to are capped."""

from __future__ import annotations

import os
import threading
import time

from shared import retention, runs
from shared.clock import iso_at
from shared.fsio import keep_tail
from shared.locks import file_lock, hold, is_held, remove_if_free
from shared.records import write_record
from tests.agents import use_agent, wait_for
from tests.test_observer import observer, observer_cycles  # noqa: F401 (a fixture)
from tests.test_observer_support import add_task, launch, settled

HOURS = 3600.0


def _files_of(cfg, task: str, *, ended_ago: float, applied=("completed", "announced")) -> list:
    """A finished task's files as the programs leave them; the paths written."""
    write_record(cfg.run_record(task), {
        "task": task, "worker_id": "w-000002", "attempt": 2, "outcome": "pr",
        "finished": iso_at(time.time() - ended_ago), "applied": list(applied)}, "log tail")
    files = [runs.prompt_file(cfg, task), runs.question_file(cfg, task), cfg.pr_marker(task),
             runs.worker_log(cfg, task), cfg.agent_log(task),
             runs.earlier_agent_log(cfg, task, "w-000001"), cfg.run_record_lock(task)]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{path.name}\n")
    return files + [cfg.run_record(task)]


def test_files_of_tasks_gone_from_tasks_md_move_to_the_archive(sandbox, observer):
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Failed\n[❌ w-000002] t-3: Still listed\n- Failed: 2026-11-24 09:00:00\n")
    gone = _files_of(cfg, "t-1", ended_ago=2 * HOURS)
    recent = _files_of(cfg, "t-2", ended_ago=60)  # a save may still bring its line back
    listed = _files_of(cfg, "t-3", ended_ago=2 * HOURS)
    observer.start()
    wait_for(lambda: retention.retired_dir(cfg, "t-1").joinpath("runs", "t-1.md").exists(),
             what="t-1 retired")
    observer_cycles(cfg)

    assert not any(p.exists() for p in gone), [p for p in gone if p.exists()]
    folder = retention.retired_dir(cfg, "t-1")
    kept = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert kept == sorted(f"{p.parent.name}/{p.name}" for p in gone
                          if p != cfg.run_record_lock("t-1")), kept
    assert all(p.exists() for p in recent + listed)
    assert not retention.retired_dir(cfg, "t-2").exists()
    assert sorted(os.listdir(cfg.runs_dir)) == sorted(
        f"{t}{suffix}" for t in ("t-2", "t-3") for suffix in (".md", ".prompt", ".question.md"))


def test_a_run_is_retired_only_once_its_outcome_was_announced():
    now = time.time()
    ended = {"finished": iso_at(now - 2 * HOURS)}
    assert retention.due({**ended, "outcome": "pr", "applied": ["completed", "announced"]}, now)
    assert not retention.due({**ended, "outcome": "pr", "applied": ["completed"]}, now)
    assert retention.due({**ended, "launch_error": "no tree"}, now)  # nothing to announce
    assert not retention.due({"finished": iso_at(now - 60), "launch_error": "x"}, now)
    assert not retention.due({"outcome": None}, now)  # still running


def test_retired_folders_are_deleted_after_keep_days(sandbox):
    cfg = sandbox.write_config(paths={"keep_days": 14})
    for task, days in (("t-1", 15), ("t-2", 13)):
        _files_of(cfg, task, ended_ago=2 * HOURS)
        assert retention.retire(cfg, task)
        when = time.time() - days * retention.DAY
        os.utime(retention.retired_dir(cfg, task), (when, when))
    assert retention.prune(cfg, cfg.paths.keep_days) == ["t-1"]
    assert not retention.retired_dir(cfg, "t-1").exists()
    assert retention.retired_dir(cfg, "t-2").joinpath("runs", "t-2.md").exists()


def test_a_live_worker_s_task_is_not_retired(sandbox):
    cfg = sandbox.cfg
    files = _files_of(cfg, "t-1", ended_ago=2 * HOURS)
    with hold(cfg.liveness_lock("t-1")):
        assert not retention.retire(cfg, "t-1")
    assert all(p.exists() for p in files)


def test_a_worker_s_liveness_lock_is_gone_when_it_ends(sandbox, observer):
    cfg = use_agent(sandbox, "commit")
    task = add_task(cfg, "Quick work")
    observer.start()
    worker = launch(cfg, task)
    assert worker.wait() == 0
    # (the observer's guarded removal of the tree takes the lock a moment after announcing)
    wait_for(lambda: settled(cfg, task, "announced", "cleaned"), what="the run settled")
    assert list(cfg.live_dir.iterdir()) == []


def test_a_lock_removed_by_its_holder_is_taken_afresh_by_a_waiter(tmp_path):
    path = tmp_path / "t-1.lock"
    first = hold(path)
    taken = []
    waiter = threading.Thread(target=lambda: taken.append(hold(path, wait=10)))
    waiter.start()
    first.remove()
    waiter.join()
    [second] = taken
    assert is_held(path)  # the waiter holds the file now at the path, not the unlinked one
    assert os.fstat(second.fileno()).st_ino == os.stat(path).st_ino
    second.remove()
    assert not path.exists() and not is_held(path)


def test_a_file_lock_removed_under_a_waiter_is_taken_afresh(tmp_path):
    path = tmp_path / "run-t-1.lock"
    inside = threading.Event()
    with file_lock(path):
        def wait_then_note():
            with file_lock(path, timeout=10):
                inside.set()
                assert os.path.exists(path)
        waiter = threading.Thread(target=wait_then_note)
        waiter.start()
        path.unlink()  # the holder retires the task: the lock file goes while held
    waiter.join()
    assert inside.is_set()


def test_remove_if_free_keeps_a_held_lock(tmp_path):
    path = tmp_path / "t-1.lock"
    with hold(path) as lock:
        lock.hand_over()  # leaving the block only closes: the file stays
        assert not remove_if_free(path)
    assert path.exists()
    assert remove_if_free(path) and not path.exists()


def test_each_run_keeps_its_own_agent_log(sandbox):
    cfg = sandbox.cfg
    for n in range(1, 14):
        runs.start_run(cfg, "t-1", {"task": "t-1", "worker_id": f"w-{n:06d}"})
        cfg.agent_log("t-1").parent.mkdir(parents=True, exist_ok=True)
        cfg.agent_log("t-1").write_text(f"run {n}\n")
        os.utime(cfg.agent_log("t-1"), (1e9 + n, 1e9 + n))  # mtimes order the earlier logs
    assert cfg.agent_log("t-1").read_text() == "run 13\n"
    assert runs.earlier_agent_log(cfg, "t-1", "w-000012").read_text() == "run 12\n"
    earlier = sorted(cfg.agent_log("t-1").parent.glob("t-1.*.jsonl"))
    assert len(earlier) == runs.EARLIER_LOGS_KEPT
    assert not runs.earlier_agent_log(cfg, "t-1", "w-000002").exists()


def test_a_launch_that_did_not_happen_puts_the_agent_log_back(sandbox):
    cfg = sandbox.cfg
    runs.start_run(cfg, "t-1", {"task": "t-1", "worker_id": "w-000001"})
    cfg.agent_log("t-1").parent.mkdir(parents=True, exist_ok=True)
    cfg.agent_log("t-1").write_text("run 1\n")
    previous = runs.start_run(cfg, "t-1", {"task": "t-1", "worker_id": "w-000002"})
    assert not cfg.agent_log("t-1").exists()
    runs.restore_run(cfg, "t-1", "w-000002", previous)
    assert cfg.agent_log("t-1").read_text() == "run 1\n"


def test_keep_tail_caps_a_log_at_a_line_start(tmp_path):
    log = tmp_path / "t-1.worker.log"
    log.write_bytes(b"".join(b"line %06d\n" % n for n in range(1000)))  # 12,000 bytes
    assert not keep_tail(log, limit=20_000, keep=100)
    assert keep_tail(log, limit=10_000, keep=100)
    text = log.read_text()
    first, *rest = text.splitlines()
    assert first.startswith("[tac8: ") and "dropped" in first
    assert rest[-1] == "line 000999" and all(r.startswith("line ") for r in rest)
    assert len(text) < 200


def test_a_task_with_feedback_waiting_is_not_retired(sandbox):
    from shared.feedback import Item, add_item
    cfg = sandbox.cfg
    files = _files_of(cfg, "t-1", ended_ago=2 * HOURS)
    add_item(cfg, "t-1", Item(key="review/1", kind="review", text="add tests"))
    assert not retention.retire(cfg, "t-1")
    assert all(p.exists() for p in files) and cfg.feedback_file("t-1").exists()
