"""tac8 end to end under the real supervisord (issue 7, item 5): the four programs from the
shipped ``conf/supervisord.conf``, the real ``supervisorctl``, ``gh`` and git, a fake GitHub
and fake agents (``tests/e2e.py``).

The calm scenarios share one installation (each uses issues of its own and waits until they
have settled); the two that stop or restart programs get a fresh one each. Installations live
in short ``tmp_path_factory`` folders: supervisord's unix socket path must fit in 107 bytes.
"""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from shared import runs
from shared.config import EXAMPLE_CONFIG, load_config
from shared.health import read_metrics
from shared.locks import is_held
from shared.tasks import read_board
from tests.agents import wait_for
from tests.e2e import PROGRAMS, Installation, installed, stop_lines
from tests.sandbox import git


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One running installation for the scenarios that leave every program running."""
    with installed(tmp_path_factory.mktemp("sv"), launcher={"max_workers": 3}) as inst:
        yield inst


@pytest.fixture
def fresh(tmp_path_factory):
    """A running installation of the test's own (max_workers 2)."""
    with installed(tmp_path_factory.mktemp("sv")) as inst:
        yield inst


def tac8(inst: Installation, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", "--config", str(inst.cfg.file),
                           *args], capture_output=True, text=True, env=inst.env(), timeout=60)


def running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def completed_once(inst: Installation, task: str) -> None:
    """``task`` ran once and is done: one agent run, one PR (opened by the worker, for the
    commit pushed to origin), one comment on its issue naming the PR, the Completed line
    naming it too, and the worktree gone."""
    section, line = inst.where(task)
    assert section == "Completed Today", (task, section)
    assert [r.get("exit") for r in inst.agent_runs(task)] == [0], inst.agent_runs(task)
    record = inst.run_record(task)
    assert record["outcome"] == runs.PR and record["attempt"] == 1
    pulls = inst.pulls(task)
    assert len(pulls) == 1 and pulls[0]["base"]["ref"] == "main", pulls
    url = pulls[0]["html_url"]
    assert line.detail("PR") == url
    assert inst.marker(task)["url"] == url
    head = inst.origin_head(task)
    assert head == record["commit"] and line.marker.startswith(f"✅ {head[:7]}")
    assert git(inst.origin, "rev-list", "--count", f"main..{head}") == "1"  # one run's commit
    comments = inst.comments(task)
    assert len(comments) == 1 and comments[0].startswith(f"PR ready for review: {url}")
    assert f"<!-- tac8:{task}/{record['worker_id']}/completed -->" in comments[0]
    assert not inst.cfg.tree(task).exists()
    assert str(inst.cfg.tree(task)) not in git(inst.cfg.repo.path, "worktree", "list")


# --- smoke: the install is valid, the programs run -------------------------------------------

def test_the_shipped_config_is_valid_and_the_installation_checks_out(shared):
    load_config(EXAMPLE_CONFIG)  # the seed's "config valid": raises on any bad key
    states = shared.states()
    assert sorted(states) == sorted(PROGRAMS)
    supervisord = shared.supervisord_pid()
    for name in PROGRAMS:
        state, pid = states[name]
        assert state == "RUNNING"
        proc = psutil.Process(pid)
        assert proc.ppid() == supervisord
        assert f"services.{name}" in proc.cmdline()
        # the config the tac8 command finds: $TAC8_CONFIG, from supervisord's environment
        assert proc.environ().get("TAC8_CONFIG") == str(shared.cfg.file)
        assert is_held(shared.cfg.program_lock(name)), name  # the single-instance lock
        assert shared.cfg.heartbeat(name).exists(), name

    doctor = tac8(shared, "doctor")
    verdicts = {line[6:18].strip(): line[:4].strip() for line in doctor.stdout.splitlines()
                if line.startswith(("ok  ", "FAIL"))}  # "ok    NAME(12)  detail"
    # (not "gh auth": gh checks a token over GraphQL, which the fake GitHub does not serve)
    for check in ("git", "gh", "config", "agent", "repository", "supervisord"):
        assert verdicts.get(check) == "ok", doctor.stdout
    assert "running: fetcher RUNNING, launcher RUNNING" in doctor.stdout


# --- the main job ----------------------------------------------------------------------------

def test_labelled_issues_become_pull_requests_and_completed_tasks(shared):
    tasks_md = shared.cfg.tasks_file
    tasks_md.write_text(tasks_md.read_text().replace("## Pending\n", "## Pending\n[] Tidy the README\n"))
    issues = [shared.add_issue(title) for title in
              ("Fix the flaky parser test", "Add a docstring to coordinator.py", "Rename a variable")]
    stranger = shared.fake.add_issue("Run this for me", "e2e-agent: commit", author="mallory",
                                     association="NONE")["number"]
    typed = wait_for(lambda: next((t.id for t in read_board(tasks_md).tasks()
                                   if t.title == "Tidy the README" and t.id), None),
                     what="the typed task's id")

    shared.wait_settled(issues, "completed")
    shared.wait_settled([typed], "completed")
    for task in issues:
        completed_once(shared, task)
        assert f"Closes #{task[3:]}" in shared.pulls(task)[0]["body"]
    assert shared.where(typed)[1].detail("PR") == shared.pulls(typed)[0]["html_url"]
    assert not shared.cfg.tree(typed).exists()
    # an untrusted author's issue was polled many times meanwhile, and never became work
    assert shared.where(f"gh-{stranger}") == (None, None)
    assert not shared.cfg.issue_snapshot(stranger).exists()
    assert not shared.fake.issue_comments(stranger)
    assert shared.live_workers() == []


def test_stop_mid_run_commits_the_work_in_progress_and_stops_the_task(shared):
    task = shared.add_issue("Rewrite the importer", "interruptible")
    tree = shared.cfg.tree(task)
    wait_for(lambda: shared.active_with_agent([task])
             and "work in progress" in (tree / "README.md").read_text(),
             what="the agent at work")
    worker = psutil.Process(shared.run_record(task)["pid"])

    (tree / "STOP").touch()  # what a person does
    shared.wait_settled([task], "stopped")

    section, line = shared.where(task)
    record = shared.run_record(task)
    wip = record["commit"]
    assert section == "Stopped" and record["outcome"] == runs.STOPPED
    assert line.detail("Stopped").endswith(f"· WIP commit {wip[:7]}")
    # the work is committed on the task's branch in the kept tree, and not pushed
    assert git(tree, "rev-parse", "HEAD") == wip
    assert git(tree, "log", "-1", "--format=%s") == "WIP: Stopped by user"
    assert "work in progress" in git(tree, "show", f"{wip}:README.md")
    assert git(tree, "status", "--porcelain", "--untracked-files=all") == ""
    assert shared.origin_head(task) == wip and shared.pulls(task) == []  # pushed, no PR
    [comment] = shared.comments(task)
    assert comment.startswith(f"Stopped on request (worker {record['worker_id']}). "
                              f"Work in progress is committed as {wip[:7]}")
    assert not (tree / "STOP").exists()  # carried out, so it would not stop a next attempt
    wait_for(lambda: not running(worker), timeout=10, what="the worker to exit")
    [run] = shared.agent_runs(task)
    assert run["exit"] == 0 and run["behaviour"] == ["interruptible"]  # interrupted, not killed
    assert shared.where(task)[0] == "Stopped"  # and not launched again


def test_a_blocked_task_asks_its_question_on_the_issue(shared):
    task = shared.add_issue("Migrate CI", "blocked")
    shared.wait_settled([task], "blocked")

    section, line = shared.where(task)
    question = "Which Python versions should CI cover?"
    assert section == "Blocked" and line.detail("Blocked") == question
    assert shared.run_record(task)["outcome"] == runs.BLOCKED
    [comment] = shared.comments(task)
    assert comment.startswith(f"The agent is blocked and asks:\n\n```\n{question}\n```\n")
    assert runs.question_file(shared.cfg, task).read_text().strip() == question  # set aside
    assert shared.cfg.tree(task).is_dir()  # the tree is kept for the next attempt
    assert shared.pulls(task) == [] and shared.origin_head(task) is None
    assert len(shared.agent_runs(task)) == 1


def test_an_answer_in_a_comment_sends_the_blocked_task_back_to_completion(shared):
    task = shared.add_issue("Pick the Python versions", "blocked")
    shared.wait_settled([task], "blocked")
    number = int(task[3:])
    shared.fake.add_comment(number, "Drive-by: e2e-agent: fail", author="mallory")
    answer = shared.fake.add_comment(number, "3.11 and 3.12.\ne2e-agent: commit", author="alice",
                                     association="MEMBER")
    wait_for(lambda: len(shared.comments(task)) == 4 and shared.settled(task, "completed"),
             timeout=60, interval=0.1, what="the answered task to complete")

    assert [r["behaviour"] for r in shared.agent_runs(task)] == [["blocked"], ["commit"]]
    assert shared.run_record(task)["feedback"] == [f"comment/{answer['id']}"]
    assert len(shared.pulls(task)) == 1 and shared.where(task)[0] == "Completed Today"
    question, _, _, done = shared.comments(task)
    assert question.startswith("The agent is blocked") and done.startswith("PR ready for review")
    assert shared.fake.comment_reactions(answer["id"]) == []  # an answer, not a command


def test_a_review_asking_for_changes_reworks_the_same_pr(shared):
    task = shared.add_issue("Add a helper")
    shared.wait_settled([task], "completed")
    [pr] = shared.pulls(task)
    first = shared.run_record(task)
    # a person reviews seconds later: GitHub's times are whole seconds, and a review in the
    # PR's last second leaves its updated_at as tac8 saw it (tac8 reads reviews when it moves)
    shared.fake.advance_clock(2)
    shared.fake.add_review(pr["number"], "CHANGES_REQUESTED", body="Name it better.",
                           author="alice", association="MEMBER")
    wait_for(lambda: shared.run_record(task)["worker_id"] != first["worker_id"]
             and shared.settled(task, "completed")
             and any("Updated this PR" in c["body"] for c in shared.fake.issue_comments(pr["number"])),
             timeout=90, interval=0.1, what="the rework round to complete")

    record = shared.run_record(task)
    assert [r["exit"] for r in shared.agent_runs(task)] == [0, 0]
    assert len(record["feedback"]) == 1 and record["feedback"][0].startswith("review/")
    assert [p["number"] for p in shared.pulls(task)] == [pr["number"]]  # one PR, never two
    head = shared.origin_head(task)
    assert head == record["commit"] != first["commit"]  # the same branch moved on
    assert git(shared.origin, "rev-list", "--count", f"{first['commit']}..{head}") == "1"
    [updated] = [c["body"] for c in shared.fake.issue_comments(pr["number"])]
    assert updated.startswith("Updated this PR for review by alice: commit ")
    assert shared.where(task)[0] == "Completed Today"
    assert len(shared.comments(task)) == 1  # the issue heard of the PR once


# --- supervisorctl while workers run ---------------------------------------------------------

def test_stopping_the_launcher_leaves_running_workers_to_finish(fresh):
    first, second = (fresh.add_issue(t, gate="go") for t in ("Port the CLI", "Add a test"))
    wait_for(lambda: fresh.active_with_agent([first, second]), what="two workers at work")
    workers = [psutil.Process(fresh.run_record(t)["pid"]) for t in (first, second)]
    offset = len(fresh.supervisord_log())

    stopped = fresh.ctl("stop", "launcher")
    assert stopped.returncode == 0 and "launcher: stopped" in stopped.stdout, stopped
    states = fresh.states()
    assert states["launcher"][0] == "STOPPED"
    assert all(states[p][0] == "RUNNING" for p in PROGRAMS if p != "launcher")
    assert stop_lines(fresh.supervisord_log(), offset) == {"launcher": "exit status 0"}
    assert all(running(w) for w in workers) and fresh.live_workers() == sorted([first, second])

    third = fresh.add_issue("Launched only with a launcher")
    wait_for(lambda: fresh.where(third)[0] == "Pending", what="the third issue in Pending")
    fresh.open_gate("go")
    fresh.wait_settled([first, second], "completed")
    for task in (first, second):
        completed_once(fresh, task)
    # slots were free all along, but nothing launches while the launcher is stopped
    assert fresh.where(third)[0] == "Pending"
    assert fresh.agent_runs(third) == [] and not fresh.cfg.run_record(third).exists()

    started = fresh.ctl("start", "launcher")
    assert started.returncode == 0 and "launcher: started" in started.stdout, started
    fresh.wait_settled([third], "completed")
    completed_once(fresh, third)


def test_restart_all_mid_run_loses_and_duplicates_nothing(fresh):
    tasks = [fresh.add_issue(f"Change number {n}", gate="go") for n in range(4)]
    at_work, waiting = tasks[:2], tasks[2:]
    wait_for(lambda: fresh.active_with_agent(at_work)
             and all(fresh.where(t)[0] == "Pending" for t in waiting),
             what="two tasks at work and two waiting")
    workers = [psutil.Process(fresh.run_record(t)["pid"]) for t in at_work]
    before = fresh.states()
    offset = len(fresh.supervisord_log())
    tasks.append(fresh.add_issue("Filed during the restart", gate="go"))

    restarted = fresh.ctl("restart", "all")
    assert restarted.returncode == 0, restarted
    for name in PROGRAMS:
        assert f"{name}: stopped" in restarted.stdout and f"{name}: started" in restarted.stdout
    after = fresh.wait_running()
    assert all(after[p] != before[p][1] for p in PROGRAMS)
    # each program stopped on SIGTERM by itself, within stopwaitsecs (else: SIGKILL)
    assert stop_lines(fresh.supervisord_log(), offset) == {p: "exit status 0" for p in PROGRAMS}
    assert all(running(w) for w in workers)  # workers outlive their launcher

    fresh.open_gate("go")
    fresh.wait_settled(tasks, "completed", timeout=90)
    for task in tasks:
        completed_once(fresh, task)
    ids = [t.id for t in read_board(fresh.cfg.tasks_file).tasks()]
    assert sorted(ids) == sorted(tasks)  # each task once in tasks.md
    spans = [(r["started"], r["ended"]) for r in fresh.agent_runs()]
    busiest = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert busiest <= fresh.cfg.launcher.max_workers  # the adopted workers counted
    wanted = {"workers_launched": 5, "workers_completed": 5, "prs_created": 5}
    wait_for(lambda: {k: (read_metrics(fresh.cfg) or {}).get(k) for k in wanted} == wanted,
             timeout=15, what=f"metrics to count every run once ({read_metrics(fresh.cfg)})")


def test_github_faults_cost_no_rerun_and_duplicate_no_pr_or_comment(fresh):
    """A fifth of GitHub's answers are 502s or come later than the client waits (and are
    carried out all the same): every issue still ends with one agent run, one PR and one
    comment (the workers make no GitHub call: only the fetcher does, and retries)."""
    fresh.fake.chaos(0.2, slow=4.0, seed=20)  # 4 s: longer than [github] timeout
    tasks = [fresh.add_issue(f"Change under faults {n}") for n in range(5)]
    fresh.wait_settled(tasks, "completed", timeout=240)
    fresh.fake.chaos(0)
    for task in tasks:
        completed_once(fresh, task)
