"""services.worker with real git (sandbox) and fake agents (tests/agents/fake_agent.py).

Each test prepares what the launcher would (the tree and a fresh run record), runs the real
worker process, and checks the outcome in the tree, the run record, the PR marker, the
events, and that no process is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from services.worker import LOG_CAP, LOG_TAIL
from shared import runs, worktree
from shared.config import CHECKOUT
from shared.fsio import pending
from shared.locks import hold
from shared.tasks import ACTIVE, edit_tasks, make_marker
from tests.agents import descendants, events_of, survivors, use_agent, use_command, wait_for
from tests.sandbox import git
from tests.test_worktree import HOW, OWN_GITDIR

TASK = "t-1"


@pytest.fixture
def pids(tmp_path):
    folder = tmp_path / "agent-pids"
    folder.mkdir()
    return folder


BLOCKED_QUESTION = "Which Python versions should CI cover?\n"  # the fake agent's


def prepare(sandbox, pids, behaviour, *args, task=TASK, title="Tidy the README", env=None,
            **limits):
    """What the launcher does before it starts a worker: the agent, the tree, the record."""
    limits = {"stall_timeout": 10, "stop_grace": 0.5, **limits}
    cfg = use_agent(sandbox, behaviour, *args, env={"FAKE_AGENT_PIDS": str(pids), **(env or {})},
                    **limits)
    with hold(cfg.liveness_lock(task)) as lock:
        worktree.ensure_worktree(cfg, task, lock)
    runs.start_run(cfg, task, {
        "task": task, "worker_id": "w-abc123", "attempt": 1, "pid": None, "started": "now",
        "branch": cfg.branch(task), "worktree": str(cfg.tree(task)), "title": title})
    return cfg


def prepare_tree(sandbox, task=TASK):
    """``prepare`` for an agent the test set itself (``use_command``)."""
    cfg = sandbox.cfg
    with hold(cfg.liveness_lock(task)) as lock:
        worktree.ensure_worktree(cfg, task, lock)
    runs.start_run(cfg, task, {
        "task": task, "worker_id": "w-abc123", "attempt": 1, "pid": None, "started": "now",
        "branch": cfg.branch(task), "worktree": str(cfg.tree(task)), "title": "Hostile"})
    return cfg


def start_worker(cfg, task=TASK):
    return subprocess.Popen([sys.executable, "-m", "services.worker", task, "--config",
                             str(cfg.file)], cwd=CHECKOUT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_worker(cfg, task=TASK, timeout=30):
    proc = start_worker(cfg, task)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return runs.read_run(cfg, task)


def origin_has(sandbox, branch):
    return git(sandbox.origin, "branch", "--list", branch) != ""


@pytest.fixture(autouse=True)
def nothing_left_behind(pids):
    yield
    assert survivors(pids) == [], "processes the agents left behind are still there"
    assert descendants() == [], "the test process still has children (zombies or live)"


def test_agent_that_commits_gives_a_pushed_branch_marker_record_and_event(sandbox, pids, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    cfg = prepare(sandbox, pids, "commit", env={"FAKE_AGENT_PROMPTS": str(prompts)})
    record = run_worker(cfg)
    meta = record.meta
    tree = cfg.tree(TASK)
    assert meta["outcome"] == "pr" and meta["exit_code"] == 0 and meta["error"] is None
    assert meta["commit"] == git(tree, "rev-parse", "HEAD") == \
        git(sandbox.origin, "rev-parse", "auto/t-1")
    assert (meta["cost_usd"], meta["tokens"], meta["turns"]) == (0.0123, 165, 3)
    assert meta["finished"] and meta["worker_id"] == "w-abc123"
    assert '"type": "result"' in record.body  # the log's tail
    marker = runs.read_pr_marker(cfg, TASK)
    assert marker == {"task": TASK, "worker_id": "w-abc123", "url": "", "number": None,
                      "head": "auto/t-1", "commit": meta["commit"], "found_by": "worker"}
    [event] = events_of(cfg, "run_finished")
    assert (event["outcome"], event["worker_id"], event["cost_usd"], event["tokens"]) == \
        ("pr", "w-abc123", 0.0123, 165)
    assert events_of(cfg, "pr_created") == []  # no GitHub: pushed, no PR opened
    prompt = (prompts / "t-1.txt").read_text()
    assert "Task: Tidy the README" in prompt and "<<<UNTRUSTED ISSUE TEXT" in prompt
    assert not runs.worker_alive(cfg, TASK)
    log = cfg.agent_log(TASK).read_text().splitlines()
    assert json.loads(log[-1])["type"] == "result"


def test_leftovers_are_committed_then_pushed(sandbox, pids):
    cfg = prepare(sandbox, pids, "leave-uncommitted")
    meta = run_worker(cfg).meta
    tree = cfg.tree(TASK)
    assert meta["outcome"] == "pr"
    assert worktree.dirty_paths(tree) == []
    message = git(tree, "log", "-1", "--format=%B")
    assert message.startswith("Tidy the README") and "left uncommitted" in message
    assert origin_has(sandbox, "auto/t-1")


def test_blocked_agent_ends_blocked_and_its_question_is_not_committed(sandbox, pids):
    cfg = prepare(sandbox, pids, "blocked")
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "blocked"
    tree = cfg.tree(TASK)
    # set aside for the observer and the next prompt, out of the tree
    assert not (tree / "BLOCKED.md").exists()
    assert runs.question_file(cfg, TASK).read_text() == BLOCKED_QUESTION
    assert git(tree, "rev-parse", "HEAD") == git(sandbox.repo, "rev-parse", "origin/main")
    assert not origin_has(sandbox, "auto/t-1") and runs.read_pr_marker(cfg, TASK) is None
    assert events_of(cfg, "run_finished")[0]["outcome"] == "blocked"


@pytest.mark.parametrize("plant", ["symlink", "fifo", "hardlink", "huge"])
def test_a_hostile_blocked_md_is_never_read_past_its_cap_or_followed(sandbox, pids, tmp_path,
                                                                    plant):
    """BLOCKED.md as a symlink to a secret, a FIFO (an open would block forever), a hard link
    to a secret, or huge: the run still ends blocked, and no secret reaches state/. Without
    the sandbox, which would hide the secret and forbid the hard link (another mount): this
    is about what tac8 itself reads."""
    secret = tmp_path / "hosts.yml"
    secret.write_text("oauth_token: gho_SECRET\n")
    tree_file = '"$PWD/BLOCKED.md"'
    make = {"symlink": f"ln -s {secret} {tree_file}", "fifo": f"mkfifo {tree_file}",
            "hardlink": f"ln {secret} {tree_file}",
            "huge": f"head -c 10000000 /dev/zero | tr '\\0' x > {tree_file}"}[plant]
    use_command(sandbox, ["sh", "-c", f"cat >/dev/null; {make}"], stall_timeout=10,
                stop_grace=0.5)
    sandbox.write_config(worker={"sandbox": "none"})
    cfg = prepare_tree(sandbox)
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "blocked"
    question = runs.question_file(cfg, TASK).read_text()
    assert "SECRET" not in question
    assert len(question) <= 16 * 1024
    assert not os.path.lexists(cfg.tree(TASK) / "BLOCKED.md")
    assert secret.read_text() == "oauth_token: gho_SECRET\n"  # the target is left alone


@pytest.mark.parametrize("behaviour, exit_code, error", [
    ("noop", 0, "exited without changes"),
    ("exit1", 1, "the agent ended without a final result message (exit code 1)"),
    ("is-error", 0, "the agent reported an error: API Error: overloaded"),
])
def test_runs_without_a_usable_result_fail_whatever_the_exit_code(sandbox, pids, behaviour,
                                                                  exit_code, error):
    cfg = prepare(sandbox, pids, behaviour)
    meta = run_worker(cfg).meta
    assert (meta["outcome"], meta["exit_code"], meta["error"]) == ("failed", exit_code, error)
    assert runs.read_pr_marker(cfg, TASK) is None  # no PR for a failed agent's work...
    if behaviour == "is-error":  # ...but what it committed is kept, as work in progress
        assert git(sandbox.origin, "rev-parse", "auto/t-1") == meta["commit"]
    else:
        assert not origin_has(sandbox, "auto/t-1") and meta["commit"] is None
    [event] = events_of(cfg, "run_finished")
    assert (event["outcome"], event["error"]) == ("failed", error)


def test_agent_without_stream_json_is_judged_by_the_tree(sandbox, pids):
    cfg = prepare(sandbox, pids, "commit")
    cfg = use_agent(sandbox, "exit1", stream_json=False)
    meta = run_worker(cfg).meta
    assert (meta["outcome"], meta["error"]) == ("failed", "the agent exited with code 1")


def test_a_silent_agent_is_stopped_after_stall_timeout(sandbox, pids):
    cfg = prepare(sandbox, pids, "hang", stall_timeout=0.5)
    meta = run_worker(cfg).meta
    assert (meta["outcome"], meta["error"]) == ("failed", "stalled: no output for 0.5 s")


def test_max_runtime_escalates_to_sigkill_for_an_agent_that_ignores_signals(sandbox, pids):
    from tests.agents import FAKE_AGENT

    # env ignores SIGINT and SIGTERM before it starts the agent: the limit cannot catch the
    # agent still starting up, before it ignores them itself
    use_command(sandbox, ["env", "--ignore-signal=INT,TERM", sys.executable, str(FAKE_AGENT),
                          "stubborn", "--output-format", "stream-json", "--verbose"],
                env={"FAKE_AGENT_PIDS": str(pids)}, max_runtime=0.5, stop_grace=0.2)
    cfg = prepare_tree(sandbox)
    meta = run_worker(cfg).meta
    assert (meta["outcome"], meta["error"]) == ("failed", "max_runtime of 0.5 s exceeded")
    assert meta["exit_code"] == -signal.SIGKILL


def test_a_daemon_forked_by_the_agent_is_killed_and_reaped(sandbox, pids):
    cfg = prepare(sandbox, pids, "daemon")
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "pr"
    assert len(list(pids.iterdir())) == 1  # the daemon was there; the fixture checks it is gone


def test_a_flood_of_output_is_capped_and_the_result_still_counts(sandbox, pids):
    cfg = prepare(sandbox, pids, "flood", "25")
    meta = run_worker(cfg, timeout=60).meta
    assert meta["outcome"] == "pr" and meta["cost_usd"] == 0.0123
    log = cfg.agent_log(TASK)
    assert LOG_CAP < log.stat().st_size <= LOG_CAP + LOG_TAIL + 200
    tail = log.read_bytes()[-LOG_TAIL - 200:].decode(errors="replace")
    assert '"type": "tac8_log_truncated"' in tail
    assert json.loads(tail.splitlines()[-1])["type"] == "result"


def test_stop_file_and_sigterm_interrupt_the_agent_and_commit_work_in_progress(sandbox, pids):
    cfg = prepare(sandbox, pids, "interruptible", stop_grace=30)
    worker = start_worker(cfg)
    wait_for(lambda: "working" in _read(cfg.agent_log(TASK)), what="the agent to start")
    (cfg.tree(TASK) / "STOP").write_text("")  # as `tac8 stop`; then the observer signals
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=20)  # SIGINT alone ended it: far below the 30 s grace
    meta = runs.read_run(cfg, TASK).meta
    tree = cfg.tree(TASK)
    assert meta["outcome"] == "stopped"
    assert git(tree, "log", "-1", "--format=%s") == "WIP: Stopped by user"
    assert meta["commit"] == git(tree, "rev-parse", "HEAD")
    assert worktree.dirty_paths(tree) == []
    assert git(sandbox.origin, "rev-parse", "auto/t-1") == meta["commit"]  # pushed: not lost


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_without_stop_fails_the_run_for_a_retry_and_keeps_the_work(sandbox, pids,
                                                                           signum):
    """A reboot's SIGTERM (or an operator's kill) is no person's stop."""
    cfg = prepare(sandbox, pids, "interruptible", stop_grace=30)
    worker = start_worker(cfg)
    wait_for(lambda: "working" in _read(cfg.agent_log(TASK)), what="the agent to start")
    worker.send_signal(signum)
    worker.communicate(timeout=20)
    meta = runs.read_run(cfg, TASK).meta
    tree = cfg.tree(TASK)
    assert (meta["outcome"], meta["error"]) == ("failed", f"terminated by signal {int(signum)}")
    assert git(tree, "log", "-1", "--format=%s") == f"WIP: terminated by signal {int(signum)}"
    assert meta["commit"] == git(tree, "rev-parse", "HEAD")
    assert worktree.dirty_paths(tree) == []
    assert git(sandbox.origin, "rev-parse", "auto/t-1") == meta["commit"]  # pushed: not lost
    [event] = events_of(cfg, "run_finished")
    assert (event["outcome"], event["error"]) == ("failed", f"terminated by signal {int(signum)}")


def test_a_stop_without_changes_records_no_commit(sandbox, pids):
    cfg = prepare(sandbox, pids, "commit")
    (cfg.tree(TASK) / "STOP").write_text("")  # before the agent could start
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "stopped" and meta["commit"] is None  # not the base's sha
    assert git(cfg.tree(TASK), "rev-parse", "HEAD") == git(sandbox.repo, "rev-parse", "origin/main")


def test_the_run_s_events_carry_its_key_and_are_emitted_before_the_outcome(sandbox, pids):
    cfg = prepare(sandbox, pids, "commit")
    meta = run_worker(cfg).meta
    assert "applied" not in meta
    [event] = events_of(cfg)
    assert (event["type"], event["key"]) == ("run_finished", f"{TASK}/w-abc123/run_finished")
    assert pending(cfg.events_dir, "tmp") == []


def test_a_worker_killed_before_recording_its_outcome_is_counted_once(
        sandbox, pids, tmp_path, monkeypatch):
    """Its run_finished is out, its outcome not on record: the observer finds it dead and
    emits run_finished under the same key; the metrics program counts one run."""
    from services import worker as worker_module
    from services.metrics import Metrics
    from tests.test_observer_support import ServiceProcess

    cfg = prepare(sandbox, pids, "commit")

    def killed(*args):
        raise SystemExit("killed between the event and the record")

    monkeypatch.setattr(runs, "update_run", killed)
    worker = worker_module.Worker(cfg, TASK)
    with pytest.raises(SystemExit):
        worker.finish(runs.read_run(cfg, TASK).meta, worker_module.AgentRun(exit_code=1),
                      worker_module.Outcome(runs.FAILED, error="boom"), 1.0)
    monkeypatch.undo()
    assert runs.read_run(cfg, TASK).meta.get("outcome") is None
    assert [e["error"] for e in events_of(cfg, "run_finished")] == ["boom"]
    edit_tasks(cfg, lambda board: board.move(board.add("Tidy", task_id=TASK), ACTIVE,
                                             marker=make_marker(ACTIVE, "w-abc123")))
    observer = ServiceProcess(cfg, tmp_path / "observer.log").start()
    try:
        wait_for(lambda: len(events_of(cfg, "run_finished")) == 2, what="the observer's event")
    finally:
        assert observer.stop() == 0
    assert runs.read_run(cfg, TASK).meta["error"] == "worker died"
    assert {e["key"] for e in events_of(cfg, "run_finished")} == {f"{TASK}/w-abc123/run_finished"}
    metrics = Metrics(cfg)
    metrics.fold_pending()
    assert metrics.tally.outcomes == {"failed": 1}


def test_stop_now_file_ends_an_agent_that_ignores_signals_with_the_short_grace(sandbox, pids):
    cfg = prepare(sandbox, pids, "stubborn", stop_grace=3600, stall_timeout=3600)
    worker = start_worker(cfg)
    wait_for(lambda: "I will not stop" in _read(cfg.agent_log(TASK)), what="the agent to start")
    (cfg.tree(TASK) / "STOP").write_text("now\n")  # as `tac8 stop --now`; nobody signals
    worker.communicate(timeout=60)  # liveness only: stop_grace's escalation takes 2 hours
    meta = runs.read_run(cfg, TASK).meta
    assert meta["outcome"] == "stopped" and meta["exit_code"] == -signal.SIGKILL
    assert "STOP" not in git(cfg.tree(TASK), "ls-files")


def test_agent_exiting_on_sigterm_leaves_a_grandchild_that_is_swept(sandbox, pids):
    """Without the sandbox (whose PID namespace would take the grandchild by itself)."""
    sandbox.write_config(worker={"sandbox": "none"})
    cfg = prepare(sandbox, pids, "orphan-on-sigterm", stop_grace=0.3)
    worker = start_worker(cfg)
    wait_for(lambda: "long Bash tool" in _read(cfg.agent_log(TASK)), what="the agent to start")
    [grandchild] = [int(p.name.split(".")[0]) for p in pids.iterdir()]
    assert psutil.Process(grandchild).ppid() != worker.pid  # in another session, not ours
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=20)
    meta = runs.read_run(cfg, TASK).meta
    assert (meta["outcome"], meta["error"]) == ("failed", "terminated by signal 15")
    assert meta["exit_code"] == 143 and not psutil.pid_exists(grandchild)


def test_a_new_worker_kills_what_a_killed_worker_left_in_the_tree_before_its_agent(
        sandbox, pids, adopt_orphans):
    """Without the sandbox (whose PID namespace would take the grandchild by itself)."""
    sandbox.write_config(worker={"sandbox": "none"})
    cfg = prepare(sandbox, pids, "orphan-on-sigterm")
    worker = start_worker(cfg)
    wait_for(lambda: "long Bash tool" in _read(cfg.agent_log(TASK)), what="the agent to start")
    [grandchild] = [int(p.name.split(".")[0]) for p in pids.iterdir()]
    [agent] = psutil.Process(worker.pid).children()
    worker.kill()  # kill -9, OOM: no outcome, no sweep
    worker.communicate(timeout=10)
    wait_for(lambda: not _running(agent), what="the agent to die with its worker (PDEATHSIG)")
    assert _running(psutil.Process(grandchild))  # another session: it outlived both

    # The retry: an agent that fails if anything else still works in the tree.
    cfg = use_agent(sandbox, "alone", env={"FAKE_AGENT_PIDS": str(pids)})
    runs.start_run(cfg, TASK, {"task": TASK, "worker_id": "w-def456", "attempt": 2,
                               "branch": cfg.branch(TASK), "title": "Tidy the README"})
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "pr", _read(cfg.agent_log(TASK))
    assert not _running(psutil.Process(grandchild))
    for pid in (agent.pid, grandchild):  # orphans of the killed worker: ours (adopt_orphans)
        os.waitpid(pid, 0)


@pytest.fixture
def adopt_orphans():
    """This test process as a child subreaper, so it can reap what a killed worker left
    (this machine's init does not reap orphans)."""
    from services.worker import PR_SET_CHILD_SUBREAPER, _libc

    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _running(proc):
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_second_worker_for_a_live_task_refuses_to_run(sandbox, pids):
    cfg = prepare(sandbox, pids, "commit")
    with hold(cfg.liveness_lock(TASK)):
        proc = start_worker(cfg)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "another worker is alive" in out
    assert runs.read_run(cfg, TASK).meta.get("outcome") is None


def test_a_missing_agent_fails_the_run_with_a_clear_error(sandbox, pids):
    cfg = prepare(sandbox, pids, "commit")
    template = sandbox.conf_dir / "worker_template.md"
    template.write_text(template.read_text().replace(sys.executable, "/nonexistent/agent", 1))
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "failed"
    assert meta["error"].startswith("agent could not start: /nonexistent/agent")


def test_with_github_the_worker_queues_its_pr_and_the_fetcher_opens_it_once(
        sandbox, pids, fake_github):
    from tests.test_fetcher import make_fetcher

    sandbox.write_config(github={"repo": fake_github.repo})
    cfg = prepare(sandbox, pids, "commit", task="gh-5", title="Fix the parser")
    meta = run_worker(cfg, task="gh-5").meta
    assert meta["outcome"] == "pr" and fake_github.count() == 0  # no GitHub call: queued
    assert runs.read_pr_marker(cfg, "gh-5") is None
    make_fetcher(cfg).send_outbox()
    [pr] = fake_github.open_prs()
    assert (pr["head"]["ref"], pr["base"]["ref"], pr["title"]) == \
        ("auto/gh-5", "main", "Fix the parser")
    assert "Closes #5" in pr["body"]
    marker = runs.read_pr_marker(cfg, "gh-5")
    assert (marker["url"], marker["number"], marker["worker_id"], marker["commit"]) == \
        (pr["html_url"], pr["number"], meta["worker_id"], meta["commit"])
    [created] = events_of(cfg, "pr_created")
    assert (created["url"], created["number"]) == (pr["html_url"], pr["number"])
    assert created["worker_id"] == meta["worker_id"]  # the run it names (launch→PR per run)

    # A retry that adds commits finds the open PR instead of opening a second one.
    runs.start_run(cfg, "gh-5", {"task": "gh-5", "worker_id": "w-def456", "attempt": 2,
                                 "branch": "auto/gh-5", "title": "Fix the parser"})
    meta = run_worker(cfg, task="gh-5").meta
    make_fetcher(cfg).send_outbox()
    assert meta["outcome"] == "pr" and len(fake_github.open_prs()) == 1
    assert len(events_of(cfg, "pr_created")) == 1
    marker = runs.read_pr_marker(cfg, "gh-5")
    assert (marker["commit"], marker["worker_id"]) == (meta["commit"], "w-def456")


def _read(path):
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_many_runs_leave_no_zombie_and_no_orphan(sandbox, pids):
    """Daemon-forking, signal-ignoring and grandchild-leaving agents, run after run. The two
    that wait forever are STOPped once they say they wait, as a person would: a time limit
    could fire before a slow-starting one ignores signals or has made its orphan."""
    behaviours = [("daemon", None), ("stubborn", "I will not stop"),
                  ("orphan-on-sigterm", "long Bash tool")]
    for n in range(6):
        behaviour, waiting = behaviours[n % 3]
        task = f"t-{n + 1}"
        cfg = prepare(sandbox, pids, behaviour, task=task, stop_grace=0.1)
        worker = start_worker(cfg, task)
        if waiting:
            wait_for(lambda: waiting in _read(cfg.agent_log(task)), what=f"the {behaviour} agent")
            (cfg.tree(task) / "STOP").write_text("")
        out, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, out
        assert survivors(pids) == [] and descendants() == []
    assert len(list(pids.iterdir())) == 4  # 2 daemons + 2 grandchildren existed, all gone


def test_an_inherited_lock_descriptor_must_be_the_tasks_lock(sandbox, tmp_path):
    from shared.locks import AlreadyHeld, adopt

    cfg = sandbox.cfg
    cfg.liveness_lock(TASK).parent.mkdir(parents=True, exist_ok=True)
    cfg.liveness_lock(TASK).touch()
    with hold(tmp_path / "other.lock") as other:
        with pytest.raises(AlreadyHeld, match="another file"):
            adopt(cfg.liveness_lock(TASK), other.fileno())
    with hold(cfg.liveness_lock(TASK)) as mine:
        adopted = adopt(cfg.liveness_lock(TASK), mine.fileno())
        assert runs.worker_alive(cfg, TASK) and adopted.fileno() == mine.fileno()


def test_pushed_work_of_an_earlier_attempt_without_a_pr_is_delivered_by_the_next(
        sandbox, pids, fake_github):
    """An attempt whose push worked but whose PR never came (its queued item set aside):
    the next attempt's agent has nothing left to do, and the pushed work still becomes the
    PR; once delivered, an attempt that changes nothing has nothing to deliver."""
    from tests.test_fetcher import make_fetcher

    sandbox.write_config(github={"repo": fake_github.repo})
    cfg = prepare(sandbox, pids, "commit", task="gh-6", title="Flaky GitHub")
    assert run_worker(cfg, task="gh-6").meta["outcome"] == "pr"
    for item in pending(cfg.outbox_dir):  # lost: a person cleared the outbox
        item.unlink()
    assert origin_has(sandbox, "auto/gh-6") and fake_github.open_prs() == []

    cfg = use_agent(sandbox, "noop", env={"FAKE_AGENT_PIDS": str(pids)})
    runs.start_run(cfg, "gh-6", {"task": "gh-6", "worker_id": "w-def456", "attempt": 2,
                                 "branch": "auto/gh-6", "title": "Flaky GitHub"})
    meta = run_worker(cfg, task="gh-6").meta
    make_fetcher(cfg).send_outbox()
    [pr] = fake_github.open_prs()
    assert meta["outcome"] == "pr" and runs.read_pr_marker(cfg, "gh-6")["url"] == pr["html_url"]

    runs.start_run(cfg, "gh-6", {"task": "gh-6", "worker_id": "w-0f0f0f", "attempt": 3,
                                 "branch": "auto/gh-6", "title": "Flaky GitHub"})
    assert run_worker(cfg, task="gh-6").meta["error"] == "exited without changes"


@pytest.mark.parametrize("how", HOW)
def test_an_agent_that_points_its_tree_at_a_gitdir_of_its_own_fails_the_run_and_runs_nothing(
        sandbox, pids, tmp_path, how):
    """The agent rewrites its tree's git pointers towards a gitdir whose config names its own
    hooks, filter, signing program, ssh command and receive-pack (tests.test_worktree's
    OWN_GITDIR): the run fails saying so, none of them ran in tac8's git, nothing was pushed."""
    ran = tmp_path / "ran"
    ran.mkdir()
    use_command(sandbox, ["sh", "-c", OWN_GITDIR, "sh", str(ran), how], stall_timeout=10,
                stop_grace=0.5)
    cfg = prepare_tree(sandbox)
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "failed"
    assert meta["error"].startswith(f"{cfg.tree(TASK)}: ") and "runs no git there" in meta["error"]
    assert sorted(p.name for p in ran.iterdir()) == []
    assert not origin_has(sandbox, "auto/t-1")


def test_a_leftover_secret_is_not_pushed_and_the_pr_says_what_was_left_out(
        sandbox, pids, fake_github):
    """An agent that copied a .env (and left a huge file) beside its real change."""
    script = ("cat > /dev/null; echo 'the change' >> README.md; echo 'TOKEN=gho_SECRET' > .env; "
              "head -c 2048 /dev/zero > blob.bin; echo 'new module' > module.py")
    use_command(sandbox, ["sh", "-c", script])
    sandbox.write_config(github={"repo": fake_github.repo, "host": "github.localhost"},
                         worker={"max_leftover_file_kb": 1})
    cfg = prepare_tree(sandbox)
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "pr", meta
    pushed = git(sandbox.origin, "show", "--name-only", "--format=", "auto/t-1").split()
    assert sorted(pushed) == ["README.md", "module.py"]
    assert "gho_SECRET" not in git(sandbox.origin, "log", "-p", "auto/t-1")
    assert meta["skipped_leftovers"] == [".env (looks like a secret)",
                                         "blob.bin (2 KB, over [worker] max_leftover_file_kb)"]
    from tests.test_fetcher import make_fetcher

    make_fetcher(cfg).send_outbox()
    [pr] = fake_github.pulls.values()
    assert ".env (looks like a secret)" in pr["body"] and "blob.bin" in pr["body"]


def test_work_in_progress_of_a_task_whose_pr_is_open_goes_beside_the_pr_branch(sandbox, pids):
    """A rework round that fails: reviewers and CI must not take its half-done work for the
    round's; it is kept on <branch>-wip and the PR's branch is left as it was."""
    cfg = prepare(sandbox, pids, "is-error")
    cfg = sandbox.write_config(github={"repo": "octo/demo"})
    runs.write_pr_marker(cfg, TASK, worker_id="w-000001", url="https://github.localhost/pull/7",
                         number=7, head="auto/t-1", commit="c0ffee", found_by="fetcher")
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "failed" and meta["error"].endswith("WIP pushed to auto/t-1-wip")
    assert git(sandbox.origin, "rev-parse", "auto/t-1-wip") == meta["commit"]
    assert not origin_has(sandbox, "auto/t-1")  # the PR's branch: untouched
