"""services.launcher as a real process, with real git (sandbox), real workers and fake agents.

There is no observer here, so a finished task stays in Active: slots free up when a worker's
liveness lock is released, which is what the launcher counts.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from datetime import datetime, timedelta

import psutil
import pytest

from shared import runs, worktree
from shared.config import CHECKOUT
from shared.locks import hold
from shared.clock import stamp
from shared.pause import pause, read_pause, resume
from shared.records import write_record
from shared.tasks import ACTIVE, PENDING, edit_tasks, read_board
from tests.agents import descendants, events_of, is_worker, survivors, use_agent, \
    use_command, wait_cycles, wait_for, zombies
from tests.sandbox import git

PR_SET_CHILD_SUBREAPER = 36
STARTED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d · attempt (\d+)/3 · trees/(\S+) · auto/(\S+)$")


def queue(sandbox, *lines, completed=(), blocked=(), failed=()):
    def section(name, items):
        return f"## {name}\n" + "".join(f"{line}\n" for line in items) + "\n"
    text = "# Tasks\n\n" + section("Active", []) + section("Pending", lines) \
        + section("Blocked", blocked) + section("Failed", failed) \
        + section("Completed Today", completed)
    (sandbox.root / "tasks.md").write_text(text)


class Launchers:
    """Starts launcher processes; at the end stops them and waits for every worker."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.cfg = None

    def start(self, cfg, env=None):
        self.cfg = cfg
        log = self.tmp_path / f"launcher-{len(self.procs)}.log"
        proc = subprocess.Popen([sys.executable, "-m", "services.launcher", "--config",
                                 str(cfg.file)], cwd=CHECKOUT, stdout=subprocess.DEVNULL,
                                stderr=open(log, "w"), env=env)
        proc.log = log
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # liveness only: it ends its current cycle first

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.cfg is not None:
            wait_for(lambda: not any(runs.worker_alive(self.cfg, p.stem)
                                     for p in self.cfg.live_dir.glob("*.lock")),
                     timeout=30, what="every worker to end")


@pytest.fixture
def launchers(tmp_path):
    box = Launchers(tmp_path)
    yield box
    box.close()


@pytest.fixture
def pids(tmp_path):
    folder = tmp_path / "agent-pids"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def nothing_left_behind(pids, launchers):
    yield
    launchers.close()
    assert survivors(pids) == [], "processes the agents left behind are still there"
    assert descendants() == [], "the test process still has children (zombies or live)"


def setup(sandbox, pids, behaviour="commit", *args, max_workers=2, **worker):
    use_agent(sandbox, behaviour, *args, env={"FAKE_AGENT_PIDS": str(pids)},
              **{"stall_timeout": 10, "stop_grace": 0.3, **worker})
    return sandbox.write_config(launcher={"max_workers": max_workers, "min_free_memory_mb": 0})


def nudge(cfg):
    """Wake the launcher (it sleeps up to a minute when nothing happens): metrics.json,
    which it watches, rewritten as it was."""
    path = cfg.paths.metrics
    path.write_text(path.read_text() if path.exists() else "{}")


def finished(cfg, *tasks):
    return all((r := runs.read_run(cfg, t)) and r.meta.get("outcome") for t in tasks)


def workers_of(proc):
    """The launcher's workers."""
    return [child for child in psutil.Process(proc.pid).children() if is_worker(child)]


def test_pending_tasks_become_active_workers_in_launch_order(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit", "0.2", max_workers=1)
    queue(sandbox, "[] t-1: First task", "[] t-2: Second task {p3}", "[] t-3: Urgent task {p0}",
          "[] A typed line with no id")
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-1", "t-2", "t-3", "t-4"), what="four runs")

    launched = events_of(cfg, "worker_launched")
    assert [e["task"] for e in launched] == ["t-3", "t-1", "t-4", "t-2"]
    board = read_board(cfg.tasks_file)
    assert [t.id for t in board.tasks(ACTIVE)] == ["t-3", "t-1", "t-4", "t-2"]
    for task, event in zip(board.tasks(ACTIVE), launched):
        meta = runs.read_run(cfg, task.id).meta
        assert task.marker == f"🟡 {meta['worker_id']}" and re.fullmatch(r"w-[0-9a-f]{6}",
                                                                         meta["worker_id"])
        match = STARTED.match(task.detail("Started"))
        assert match and match.groups() == ("1", task.id, task.id)
        assert (meta["task"], meta["attempt"], meta["branch"], meta["worktree"]) == \
            (task.id, 1, f"auto/{task.id}", str(cfg.tree(task.id)))
        assert isinstance(meta["pid"], int) and meta["started"] and meta["outcome"] == "pr"
        assert (event["worker_id"], event["attempt"], event["pid"]) == \
            (meta["worker_id"], 1, meta["pid"])
        assert git(sandbox.origin, "rev-parse", f"auto/{task.id}") == meta["commit"]
    assert runs.read_run(cfg, "t-4").meta["title"] == "A typed line with no id"
    assert cfg.heartbeat("launcher").exists()


def test_two_lines_with_one_id_run_as_two_tasks_on_two_branches(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit", "0.2")
    queue(sandbox, "[] t-7: First", "[] t-7: Pasted with the same id", "[] gh-06: Issue six")
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-7", "t-8", "gh-6"), what="three runs")
    assert sorted(e["task"] for e in events_of(cfg, "worker_launched")) == ["gh-6", "t-7", "t-8"]
    assert runs.read_run(cfg, "t-8").meta["title"] == "Pasted with the same id"
    commits = {git(sandbox.origin, "rev-parse", f"auto/{t}") for t in ("t-7", "t-8", "gh-6")}
    assert len(commits) == 3


def test_a_task_whose_issue_was_closed_or_unlabelled_is_not_launched(sandbox, pids, launchers):
    """Say a Stopped task (its issue closed) is moved back to Pending: it must not run."""
    cfg = setup(sandbox, pids, "commit")
    labels = {"gh-5": ("closed", ["agent"]), "gh-6": ("open", ["bug"]),
              "gh-7": ("open", ["Agent"])}  # GitHub matches labels ignoring case
    for task, (state, names) in labels.items():
        number = int(task[3:])
        write_record(cfg.issue_snapshot(number), {"number": number, "state": state,
                                                  "labels": names}, "text")
    queue(sandbox, "[] gh-5: Closed {p0}", "- Stopped: 2026-11-24 09:40:11",
          "[] gh-6: Unlabelled {p0}", "[] gh-7: Open and labelled")
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, "gh-7"), what="gh-7")
    board = wait_for(lambda: (b := read_board(cfg.tasks_file)).get("gh-6").detail("Error") and b,
                     what="the Error lines")
    assert board.get("gh-5").detail("Error") == \
        "not launched: issue #5 was closed; reopen the issue to run it"
    assert board.get("gh-6").detail("Error") == \
        "not launched: issue #6 lost its 'agent' label; label the issue 'agent' again to run it"
    wait_cycles(cfg, "launcher", 2, nudge=partial(nudge, cfg))
    assert [e["task"] for e in events_of(cfg, "worker_launched")] == ["gh-7"]
    assert {board.find(t)[0] for t in ("gh-5", "gh-6")} == {PENDING}
    assert not cfg.tree("gh-5").exists() and not cfg.tree("gh-6").exists()  # nor prepared


def test_a_tree_made_in_advance_goes_with_its_branch_when_its_task_is_dropped(
        sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "hang", max_workers=1)
    queue(sandbox, "[] t-1: Takes the only slot", "[] t-2: Waits, and is then deleted")
    launchers.start(cfg)
    wait_for(lambda: worktree.checked_out_branch(cfg.tree("t-2")) == "auto/t-2",
             what="t-2's tree made in advance")
    edit_tasks(cfg, lambda board: board.remove(board.get("t-2")))
    [cleaned] = wait_for(lambda: events_of(cfg, "worktrees_cleaned"), what="the removal")
    assert (cleaned["removed"], cleaned["kept"]) == (["t-2"], [])
    assert not cfg.tree("t-2").exists()
    assert git(sandbox.repo, "branch", "--list", "auto/t-2") == ""
    assert runs.read_run(cfg, "t-2") is None
    (cfg.tree("t-1") / "STOP").write_text("now")  # the hanging agent, stopped


def test_a_title_with_bytes_that_are_not_utf8_is_repaired_and_every_task_runs(
        sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit", "0.2")
    # tasks.md may hold any bytes: a person's editor saved one title in Latin-1.
    cfg.tasks_file.write_bytes(b"# Tasks\n\n## Active\n\n## Pending\n"
                               b"[] t-1: Fix the caf\xe9 menu {p0}\n[] t-2: A plain task\n")
    launcher = launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-1", "t-2"), what="both runs")

    assert runs.read_run(cfg, "t-1").meta["title"] == "Fix the caf\ufffd menu"
    assert "Fix the caf\ufffd menu" in runs.prompt_file(cfg, "t-1").read_text(encoding="utf-8")
    assert runs.read_run(cfg, "t-2").meta["outcome"] == "pr"
    assert b"] t-1: Fix the caf\xe9 menu {p0}\n" in cfg.tasks_file.read_bytes()  # kept as saved
    assert launcher.log.read_text().count("bytes that are not UTF-8") == 1


def test_a_stop_left_from_before_the_launch_is_cleared_and_one_touched_after_stops_the_run(
        sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "hang")
    with hold(cfg.liveness_lock("t-1")) as lock:
        tree = worktree.ensure_worktree(cfg, "t-1", lock)
    stop = tree / "STOP"
    stop.touch()  # an earlier run's, never cleared
    os.utime(stop, ns=(stop.stat().st_mtime_ns - 10**9,) * 2)
    queue(sandbox, "[] t-1: Stopped once, moved back to Pending")
    launchers.start(cfg)
    log = cfg.agent_log("t-1")
    wait_for(lambda: log.exists() and "read a prompt" in log.read_text(), what="the agent")
    assert not stop.exists()

    stop.touch()  # a person stops this run
    wait_for(lambda: finished(cfg, "t-1"), what="the run to stop")
    meta = runs.read_run(cfg, "t-1").meta
    assert meta["outcome"] == "stopped" and stop.exists()  # the observer removes it


def test_a_mistyped_section_and_priority_are_logged_once(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit")
    (sandbox.root / "tasks.md").write_text("## Pendng\n[] t-1: Never run\n\n## Pending\n"
                                          "[] t-2: Runs at p2 {p9}\n")
    launcher = launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-2"), what="t-2")
    wait_cycles(cfg, "launcher", 2, nudge=partial(nudge, cfg))
    log = launcher.log.read_text()
    assert log.count("tasks.md line 1 '## Pendng': not a section: did you mean '## Pending'?") == 1
    assert log.count("tasks.md line 5 '[] t-2: Runs at p2 {p9}': {p9} is not a priority") == 1
    assert [e["task"] for e in events_of(cfg, "worker_launched")] == ["t-2"]


def test_max_workers_is_never_exceeded(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit", "0.2", max_workers=2)
    tasks = [f"t-{n}" for n in range(1, 9)]
    queue(sandbox, *(f"[] {t}: Task {t}" for t in tasks))
    launcher = launchers.start(cfg)
    most_workers = most_alive = 0
    while not finished(cfg, *tasks):
        most_workers = max(most_workers, len(workers_of(launcher)))
        active = [t.id for t in read_board(cfg.tasks_file).tasks(ACTIVE)]
        most_alive = max(most_alive, sum(runs.worker_alive(cfg, t) for t in active))
        assert most_workers <= 2 and most_alive <= 2
        time.sleep(0.01)
    assert most_workers == 2  # the sampling saw the limit reached, so it could see a breach
    assert len(events_of(cfg, "worker_launched")) == 8


def test_retry_attempt_and_time_are_honoured(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit")
    past = stamp(datetime.now() - timedelta(minutes=1))
    future = stamp(datetime.now() + timedelta(hours=1))
    queue(sandbox, "[] t-1: Retried now", f"- Retry: attempt 2/3 not before {past}",
          "[] t-2: Retried later", f"- Retry: attempt 3/3 not before {future}",
          "[] t-3: Fresh")
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-1", "t-3"), what="t-1 and t-3")
    board = read_board(cfg.tasks_file)
    t1 = board.get("t-1")
    assert runs.read_run(cfg, "t-1").meta["attempt"] == 2
    assert STARTED.match(t1.detail("Started")).group(1) == "2" and t1.detail("Retry") is None
    assert board.find("t-2")[0] == PENDING
    assert board.get("t-2").detail("Retry") == f"attempt 3/3 not before {future}"
    assert runs.read_run(cfg, "t-2") is None


def test_pause_holds_and_sigusr1_toggles_it(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit")
    queue(sandbox, "[] t-1: Wait for resume")
    pause(cfg, "cli", "testing")
    launcher = launchers.start(cfg)
    wait_for(lambda: cfg.heartbeat("launcher").exists(), what="the launcher to start")
    wait_cycles(cfg, "launcher", 3, nudge=partial(nudge, cfg))
    assert runs.read_run(cfg, "t-1") is None and not events_of(cfg, "worker_launched")

    launcher.send_signal(signal.SIGUSR1)
    wait_for(lambda: finished(cfg, "t-1"), what="t-1 to run after resuming")
    assert read_pause(cfg) is None
    assert [(e["by"], e["reason"]) for e in events_of(cfg, "resumed")] == \
        [("launcher", "resumed by SIGUSR1")]

    launcher.send_signal(signal.SIGUSR1)
    wait_for(lambda: read_pause(cfg), what="PAUSE")
    assert read_pause(cfg)["by"] == "launcher" and read_pause(cfg)["reason"] == "paused by SIGUSR1"
    assert [(e["by"], e["reason"]) for e in events_of(cfg, "paused")] == \
        [("cli", "testing"), ("launcher", "paused by SIGUSR1")]


def test_a_failing_launch_backs_off_and_the_same_failure_pauses(sandbox, pids, launchers):
    use_command(sandbox, ["/nonexistent/agent", "-p"])
    cfg = sandbox.write_config(launcher={"min_free_memory_mb": 0})
    queue(sandbox, "[] t-1: One", "[] t-2: Two", "[] t-3: Three", "[] t-4: Four")
    launchers.start(cfg)
    wait_for(lambda: read_pause(cfg), what="the launcher to pause itself")
    reason = read_pause(cfg)["reason"]
    assert reason.startswith("auto: launching failed 3 times in a row: agent command not found")
    wait_cycles(cfg, "launcher", 2, nudge=partial(nudge, cfg))  # paused: no further attempt
    failures = events_of(cfg, "launch_failed")
    assert [e["task"] for e in failures] == ["t-1", "t-2", "t-3"]
    board = read_board(cfg.tasks_file)
    for task in ("t-1", "t-2", "t-3"):
        line = board.get(task)
        assert board.find(task)[0] == PENDING
        assert re.fullmatch(r"attempt 1/3 not before .*", line.detail("Retry"))
        assert line.detail("Error") == "launch failed: agent command not found: /nonexistent/agent"
        assert "agent command not found" in runs.read_run(cfg, task).meta["launch_error"]
    assert board.tasks(ACTIVE) == [] and not events_of(cfg, "worker_launched")


def test_a_dirty_tree_on_another_branch_fails_once_and_keeps_its_work(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit")
    with hold(cfg.liveness_lock("t-1")) as lock:
        tree = worktree.ensure_worktree(cfg, "t-1", lock)
    git(tree, "switch", "-q", "-c", "someone-else")
    (tree / "notes.txt").write_text("a person's work\n")
    queue(sandbox, "[] t-1: Blocked by a dirty tree", "[] t-2: Fine")
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, "t-2"), what="t-2")
    wait_for(lambda: events_of(cfg, "launch_failed"), what="the failed launch of t-1")
    wait_cycles(cfg, "launcher", 2, nudge=partial(nudge, cfg))
    assert [e["task"] for e in events_of(cfg, "launch_failed")] == ["t-1"]
    assert [e["task"] for e in events_of(cfg, "worktree_error")] == ["t-1"]
    assert (tree / "notes.txt").read_text() == "a person's work\n"
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "someone-else"
    assert read_board(cfg.tasks_file).find("t-1")[0] == PENDING


def test_preexisting_trees_are_reused_without_losing_work(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit", max_workers=4)
    trees = {}
    for task in ("t-1", "t-2", "t-3", "t-4"):
        with hold(cfg.liveness_lock(task)) as lock:
            trees[task] = worktree.ensure_worktree(cfg, task, lock)
    (trees["t-2"] / "README.md").write_text("uncommitted edit\n")
    (trees["t-3"] / "earlier.txt").write_text("an earlier attempt\n")
    git(trees["t-3"], "add", "earlier.txt")
    git(trees["t-3"], "commit", "-qm", "earlier attempt")
    (trees["t-4"] / "lost-dir.txt").write_text("committed before the tree was deleted\n")
    git(trees["t-4"], "add", "lost-dir.txt")
    git(trees["t-4"], "commit", "-qm", "before deletion")
    subprocess.run(["rm", "-rf", str(trees["t-4"])], check=True)  # registered, but gone
    queue(sandbox, *(f"[] {t}: Task {t}" for t in trees))
    launchers.start(cfg)
    wait_for(lambda: finished(cfg, *trees), what="four runs")
    assert [runs.read_run(cfg, t).meta["outcome"] for t in trees] == ["pr"] * 4
    assert not events_of(cfg, "launch_failed")
    assert len(events_of(cfg, "worker_launched")) == 4
    files = {t: git(sandbox.origin, "ls-tree", "--name-only", f"auto/{t}").split() for t in trees}
    assert git(sandbox.origin, "show", "auto/t-2:README.md") == "uncommitted edit"
    assert "earlier.txt" in files["t-3"] and "lost-dir.txt" in files["t-4"]


@pytest.fixture
def subreaper(launchers):
    """Make this test process the subreaper of its descendants, as init or supervisord is
    for a real launcher: workers orphaned by a killed launcher become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        launchers.close()
        wait_for(lambda: len(zombies(descendants())) == len(descendants()), timeout=30,
                 what="orphaned workers to end")
        for child in zombies(descendants()):
            os.waitpid(child.pid, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def test_sigkill_of_the_launcher_leaves_workers_that_are_adopted(sandbox, pids, launchers,
                                                                  subreaper):
    cfg = setup(sandbox, pids, "commit", "1.5", max_workers=3)
    tasks = ["t-1", "t-2", "t-3", "t-4"]
    queue(sandbox, *(f"[] {t}: Task {t}" for t in tasks))
    first = launchers.start(cfg)

    def three_running():  # started, not just being launched (that holds the lock too)
        return all(runs.worker_alive(cfg, t) and (r := runs.read_run(cfg, t))
                   and isinstance(r.meta.get("pid"), int) for t in tasks[:3])

    wait_for(three_running, what="3 running workers")
    first.kill()
    first.wait()
    assert all(runs.worker_alive(cfg, t) for t in tasks[:3])  # they outlive the launcher
    orphans = [runs.read_run(cfg, t).meta["pid"] for t in tasks[:3]]
    assert all(psutil.Process(pid).ppid() == os.getpid() for pid in orphans)

    second = launchers.start(cfg)
    wait_for(lambda: finished(cfg, *tasks), what="all four runs")
    for pid in orphans:  # we are their subreaper now: reap them as init would
        os.waitpid(pid, 0)
    launched = events_of(cfg, "worker_launched")
    assert sorted(e["task"] for e in launched) == tasks  # nothing launched twice
    order = [(e["type"], e.get("task")) for e in events_of(cfg)
             if e["type"] in ("worker_launched", "run_finished")]
    assert order.index(("worker_launched", "t-4")) > min(
        order.index(("run_finished", t)) for t in tasks[:3])  # adopted workers held the slots
    assert "adopted 3 live worker(s): t-1, t-2, t-3" in second.log.read_text()


WAITING_FOREVER = ("I will not stop", "running a long Bash tool")  # what such agents say


def test_a_hundred_runs_leave_no_zombie_and_no_orphan(sandbox, pids, launchers):
    """Agents that fork daemons, ignore signals, leave grandchildren, fail, succeed. Those
    that would wait forever are stopped as a person does (STOP) once they say they wait, so
    each has left what it leaves behind and ignores what it ignores: no time limit fires
    on an agent that is merely slow to start."""
    cfg = setup(sandbox, pids, "mix", max_workers=4, stop_grace=0.1)
    tasks = [f"t-{n}" for n in range(1, 101)]
    queue(sandbox, *(f"[] {t}: Task {t}" for t in tasks))
    launcher = launchers.start(cfg)

    def stop_the_waiting_then_all_finished() -> bool:
        for task in tasks:
            stop, log = cfg.tree(task) / "STOP", cfg.agent_log(task)
            if not stop.exists() and log.exists() and \
                    any(words in log.read_text(errors="replace") for words in WAITING_FOREVER):
                stop.write_text("")
        return finished(cfg, *tasks)
    wait_for(stop_the_waiting_then_all_finished, timeout=100, interval=0.2, what="100 runs")
    wait_for(lambda: not workers_of(launcher), what="the last workers to exit")
    outcomes = [runs.read_run(cfg, t).meta["outcome"] for t in tasks]
    assert outcomes.count("pr") == sum(1 for n in range(1, 101) if n % 6 in (0, 1))  # MIX
    assert outcomes.count("stopped") == sum(1 for n in range(1, 101) if n % 6 in (2, 3))
    left_behind = sum(1 for n in range(1, 101) if n % 6 in (1, 3))  # daemons, grandchildren
    assert len(list(pids.iterdir())) == left_behind  # they all existed...
    assert survivors(pids) == []  # ...and none survived
    assert zombies(descendants()) == []
    assert [p.pid for p in descendants()] == [launcher.pid]
    launchers.stop(launcher)


def test_degraded_health_removes_stale_trees_only(sandbox, pids, launchers):
    cfg = setup(sandbox, pids)
    trees = {}
    for task in ("t-1", "t-2", "t-3", "t-4", "t-5"):
        with hold(cfg.liveness_lock(task)) as lock:
            trees[task] = worktree.ensure_worktree(cfg, task, lock)
    (trees["t-2"] / "unpushed.txt").write_text("work\n")
    git(trees["t-2"], "add", "unpushed.txt")
    git(trees["t-2"], "commit", "-qm", "unpushed work")
    queue(sandbox, completed=["[✅ abc1234, w-aaaaaa] t-1: Done"],
          blocked=["[⏰ w-bbbbbb] t-3: Asked a question"], failed=["[❌ w-cccccc] t-4: Gave up"])
    pause(cfg, "cli", "quiet")  # recovery works while paused; nothing launches
    (sandbox.root / "metrics.json").write_text(json.dumps({"health": "degraded"}))
    launchers.start(cfg)
    [cleaned] = wait_for(lambda: events_of(cfg, "worktrees_cleaned"), what="a cleanup")
    assert sorted(cleaned["removed"]) == ["t-1", "t-5"]  # Failed t-4: kept for debugging
    assert cleaned["kept"] == ["t-2: 1 commit(s) not on the remote"]
    assert worktree.task_trees(cfg) == ["t-2", "t-3", "t-4"]


def test_critical_health_pauses_once_and_a_person_may_resume(sandbox, pids, launchers):
    cfg = setup(sandbox, pids)
    metrics = sandbox.root / "metrics.json"
    metrics.write_text(json.dumps({"health": "ok"}))
    launchers.start(cfg)
    wait_for(lambda: cfg.heartbeat("launcher").exists(), what="the launcher to start")
    metrics.write_text(json.dumps({"health": "critical", "n": 1}))
    wait_for(lambda: read_pause(cfg), what="the auto-pause")
    assert read_pause(cfg)["reason"] == "auto: health critical"
    assert read_pause(cfg)["by"] == "launcher"
    assert [e["reason"] for e in events_of(cfg, "paused")] == ["auto: health critical"]

    resume(cfg)  # a person's decision, while metrics still says critical
    metrics.write_text(json.dumps({"health": "critical", "n": 2}))
    queue(sandbox, "[] t-1: Runs although health is still critical")
    wait_for(lambda: finished(cfg, "t-1"), what="t-1")
    assert read_pause(cfg) is None and len(events_of(cfg, "paused")) == 1


def test_sigterm_stops_the_launcher_at_once_and_leaves_the_worker_running(
        sandbox, pids, launchers, subreaper):
    cfg = setup(sandbox, pids, "commit", "2.0")
    queue(sandbox, "[] t-1: Outlives the launcher")
    launcher = launchers.start(cfg)
    pid = wait_for(lambda: (r := runs.read_run(cfg, "t-1")) and r.meta.get("pid"),
                   what="the worker to start")
    launchers.stop(launcher)
    assert runs.worker_alive(cfg, "t-1") and runs.read_run(cfg, "t-1").meta.get("outcome") is None
    os.waitpid(pid, 0)  # orphaned to us (the subreaper), as to init in real life
    assert runs.read_run(cfg, "t-1").meta["outcome"] == "pr"


def test_low_memory_holds_launches(sandbox, pids, launchers):
    cfg = setup(sandbox, pids, "commit")
    cfg = sandbox.write_config(launcher={"min_free_memory_mb": 10**9})
    queue(sandbox, "[] t-1: Needs memory")
    launcher = launchers.start(cfg)
    wait_for(lambda: "not launching:" in launcher.log.read_text(), what="the memory warning")
    assert "below min_free_memory_mb 1000000000" in launcher.log.read_text()
    assert runs.read_run(cfg, "t-1") is None and not events_of(cfg, "worker_launched")


def test_the_liveness_lock_is_never_free_while_a_run_is_on_record(sandbox, pids, launchers):
    """The launcher takes the lock before the run record and hands it to the worker
    (``--lock-fd``): the observer reads "lock free and no outcome" as a dead worker."""
    cfg = setup(sandbox, pids, "commit", "0.5", max_workers=1)
    queue(sandbox, "[] t-1: First", "[] t-2: Second")
    launchers.start(cfg)

    gaps = []  # moments t-2's run had begun and not ended, and its lock was free
    while not finished(cfg, "t-2"):
        before = runs.read_run(cfg, "t-2")
        held = runs.worker_alive(cfg, "t-2")
        after = runs.read_run(cfg, "t-2")  # the outcome is written before the lock is freed
        if not held and all(r and r.meta.get("worker_id") and not r.meta.get("outcome")
                            for r in (before, after)):
            gaps.append(time.monotonic())
    assert gaps == []
    meta = runs.read_run(cfg, "t-2").meta
    assert meta["outcome"] == "pr"
    assert events_of(cfg, "worker_launched", "t-2")[0]["pid"] == meta["pid"]


