"""The tac8 command line against a real state directory, run as a real process."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.cli import logs
from services.cli.layout import columns
from services.cli.logs import readable
from services.metrics import Metrics
from shared.config import CHECKOUT
from shared.events import emit
from shared.pause import read_pause
from shared.records import read_record, write_record
from shared.tasks import COMPLETED, edit_tasks
from tests.agents import wait_for
from tests.sandbox import git

TAC8 = Path(sys.executable).parent / "tac8"  # the console script pyproject.toml declares
HOLD_LOCK = """
import sys
from shared.locks import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    log = sys.argv[2] if len(sys.argv) > 2 else None
    for line in sys.stdin:  # lines for the agent log, fed by the test; EOF ends the worker
        with open(log, "a") as f:
            f.write(line.rstrip("\\n").replace("<nl>", "\\n"))
"""

STREAM = [
    {"type": "system", "subtype": "init", "cwd": "/srv/trees/gh-5", "session_id": "s1",
     "model": "claude-sonnet-4-5", "tools": ["Bash", "Edit"]},
    {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "text", "text": "I'll look at the parser first."}]}},
    {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "Bash",
         "input": {"command": "pytest -q tests/test_parser.py", "description": "Run the parser tests"}}]}},
    {"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "3 passed in 0.12s\n", "is_error": False}]}},
    {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "text", "text": "Running the test suite now"}]}},
]
RESULT = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 65000, "num_turns": 4,
          "result": "Fixed the flaky parser test.", "total_cost_usd": 0.0423, "session_id": "s1"}

QUEUE = """# Tasks

## Active
[🟡 w-ee4608] gh-5: Fix the flaky parser test {p1}
- Started: 2026-11-24 10:15:02 · attempt 1/3 · trees/gh-5 · auto/gh-5

## Pending
[] t-1: Tidy the README {p2}
[] gh-9: Add docstrings {p0}

## Failed
[❌ w-9f8e7d] gh-3: Refactor parser
- Error: Worker exited without creating PR
"""


def environment(**extra: str) -> dict[str, str]:
    """This process's environment but COLUMNS and LINES: tac8 status would take its width
    from them instead of from its stdout (80 columns when that is not a terminal)."""
    return {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}, **extra}


def tac8(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(TAC8), *args], cwd=CHECKOUT, capture_output=True, text=True,
                          env=env or environment(), timeout=timeout)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Also reachable as a module, e.g. from a checkout without the console script."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=CHECKOUT,
                          capture_output=True, text=True, env=env or environment(), timeout=60)


def _one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def installed(sandbox):
    """A sandbox with a queue, an active task with a run record and a log, and metrics."""
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(QUEUE)
    started = datetime.now().astimezone() - timedelta(minutes=5)
    write_record(cfg.run_record("gh-5"), {"task": "gh-5", "worker_id": "w-ee4608", "attempt": 1,
                                          "pid": 4242, "started": started.isoformat(timespec="seconds")})
    cfg.agent_log("gh-5").parent.mkdir(parents=True, exist_ok=True)
    cfg.agent_log("gh-5").write_text("".join(json.dumps(m) + "\n" for m in STREAM))
    for n in range(3):
        emit(cfg.events_dir, "worker_launched", task=f"gh-{n}", worker_id=f"w-{n}", attempt=1, pid=100 + n)
    emit(cfg.events_dir, "run_finished", task="gh-1", outcome="pr", cost_usd=0.42, tokens=12345, seconds=60)
    emit(cfg.events_dir, "run_finished", task="gh-2", outcome="failed", cost_usd=0.08, tokens=55, seconds=9)
    emit(cfg.events_dir, "worktree_error", task="gh-4", error="fatal: 'trees/gh-4' already exists")
    emit(cfg.events_dir, "worktree_error", task="gh-4", error="fatal: again")
    emit(cfg.events_dir, "rate_limit", remaining=4987, reset="2026-11-24T11:00:00+00:00")
    m = Metrics(cfg)
    m.fold_pending()
    m.publish()
    return sandbox


@pytest.fixture
def live_worker(installed):
    """A process holding gh-5's liveness lock, appending what the test feeds it to the log."""
    cfg = installed.cfg
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cfg.liveness_lock("gh-5")),
                             str(cfg.agent_log("gh-5"))], cwd=CHECKOUT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_status_shows_the_real_numbers_queue_workers_and_events(installed, live_worker):
    cfg = installed.cfg
    observer = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cfg.program_lock("observer"))],
                                cwd=CHECKOUT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert observer.stdout.readline().strip() == "held"
    cfg.heartbeats_dir.mkdir(parents=True)
    cfg.heartbeat("observer").touch()
    try:
        result = tac8("status")
    finally:
        observer.kill()
        observer.wait()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "health: WARNING" in out  # no heartbeats; 1 failure vs 1 completion is not more
    assert "launched 3" in out and "completed 1" in out and "failed 1" in out
    assert "worktree 2 (2 in the last 1h 00m)" in out
    assert "success rate 50.0%" in out
    assert "today $0.50 (12,400 tokens)" in out
    assert "rate limit left 4987" in out
    # piped: 80 columns, wrapped between facts
    assert "active 1 · pending 2 · blocked 0 · stopped 0 · failed 1 ·\n          completed today 0" in out
    assert "gh-9: Add docstrings {p0}" in out and "t-1: Tidy the README {p2}" in out
    runtime = re.search(rf"gh-5  w-ee4608  attempt 1  running  ({DURATION})\n", out)
    assert runtime and 300 <= _seconds(runtime[1]) <= _age(installed), out  # started 5 min ago
    assert "› Running the test suite now" in out
    assert "fetcher   NOT RUNNING     heartbeat never (stale)" in out
    assert "paused: no" in out
    assert "agents run sandboxed (bwrap)" in out  # bubblewrap works on this machine (CI's too)
    beat = re.search(rf"observer  running {DURATION} +heartbeat ({DURATION}) ago\n", out)
    assert beat and _seconds(beat[1]) <= time.time() - cfg.heartbeat("observer").stat().st_mtime
    events = re.findall(r"^  \d{4}-\d\d-\d\d .*", out.split("Last events")[1], re.M)
    assert len(events) == 5
    assert "rate_limit" in events[0] and "remaining=4987" in events[0]
    assert "run_finished     gh-1     outcome=pr cost_usd=0.42" in out

    data = json.loads(tac8("status", "--json").stdout)
    assert data["metrics"]["workers_launched"] == 3
    assert data["workers"][0]["task"] == "gh-5" and data["workers"][0]["alive"] is True
    assert 300 <= data["workers"][0]["runtime_seconds"] <= _age(installed)
    assert [t["id"] for t in data["queue"]["Pending"]] == ["t-1", "gh-9"]
    assert data["paused"] is None
    assert data["sandbox"] == "bwrap"


DURATION = r"(?:\d+[dhm] )?\d+[hms]"  # as `tac8 status` shows one: 42s, 5m 03s, 2h 05m


def _seconds(duration: str) -> int:
    """A duration as shown (truncated), in seconds: "5m 03s" is 303."""
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(part[:-1]) * unit[part[-1]] for part in duration.split())


def _age(installed) -> float:
    """Seconds since gh-5's run started, by its record: the most its runtime can show now."""
    started = read_record(installed.cfg.run_record("gh-5")).meta["started"]
    return (datetime.now().astimezone() - datetime.fromisoformat(str(started))).total_seconds()


def test_status_without_metrics_or_tasks_still_answers(sandbox):
    result = cli("status")
    assert result.returncode == 0, result.stderr
    assert "metrics.json does not exist" in result.stdout and "Active workers: none" in result.stdout


def test_status_reports_a_mistyped_section_and_a_priority_out_of_range(sandbox):
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Pendng\n[] t-1: Never run\n\n## Pending\n[] t-2: Urgent {p9}\n"
        "what is this?\n")
    result = cli("status")
    assert result.returncode == 0, result.stderr
    shown = re.sub(r"\n +", " ", result.stdout)  # long problems are wrapped
    assert ("! tasks.md line 3 \"## Pendng\": not a section: did you mean '## Pending'? The "
            "tasks under it are not run") in shown
    assert "! tasks.md line 7 \"[] t-2: Urgent {p9}\": {p9} is not a priority" in shown
    assert "! tasks.md lines not understood: 8\n" in result.stdout
    problems = json.loads(cli("status", "--json").stdout)["tasks_problems"]
    assert [(p["line"], p["text"]) for p in problems] == \
        [(3, "## Pendng"), (7, "[] t-2: Urgent {p9}"), (8, "what is this?")]


def test_status_shows_a_pr_s_checks_and_a_new_round_under_its_task(sandbox):
    (sandbox.root / "tasks.md").write_text(
        "# Tasks\n\n## Pending\n[↻ w-abc123] gh-4: Rework me\n"
        "- Feedback: rework round 1/3: review by alice\n\n## Completed Today\n"
        "[✅ 1234567, w-def456] gh-5: Done\n- Completed: 2026-11-30 09:00:00\n"
        "- CI: passed (3 checks) at 1234567\n")
    shown = cli("status").stdout
    assert "gh-4: Rework me {p2}\n      Feedback: rework round 1/3: review by alice\n" in shown
    assert "gh-5: Done {p2}\n      CI: passed (3 checks) at 1234567\n" in shown
    assert "Completed: 2026" not in shown  # only what GitHub said is shown


def test_status_watch_redraws_in_place_on_a_terminal_as_wide_as_it_is(installed):
    # a terminal of 60 columns; SIGINT as a terminal sends it (a test run in the background
    # inherits it ignored)
    terminal, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 60, 0, 0))
    proc = subprocess.Popen([str(TAC8), "status", "--watch", "--interval", "0.5"], cwd=CHECKOUT,
                            stdout=tty, stderr=subprocess.PIPE, env=environment(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(tty)
    output = bytearray()
    os.set_blocking(terminal, False)

    def read() -> None:
        try:
            output.extend(os.read(terminal, 65536))
        except OSError:  # BlockingIOError: nothing yet; EIO: the process has gone
            pass

    def redrawn_three_times() -> bool:
        read()
        return output.count(b"\x1b[H\x1b[2J") >= 3
    try:
        wait_for(redrawn_three_times, what="three redraws")
    finally:
        proc.send_signal(signal.SIGINT)
    # Read on, as a terminal does: a redraw may be half written into a full terminal.
    wait_for(lambda: read() or proc.poll() is not None, what="tac8 status to exit")
    read()
    os.close(terminal)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr.read()
    page = output.decode().split("\x1b[H\x1b[2J")[2]
    assert "launched 3" in page and b"---" not in output
    assert max(columns(line) for line in page.splitlines()) <= 60


def test_stop_writes_stop_in_the_tasks_worktree(installed):
    cfg = installed.cfg
    git(installed.repo, "worktree", "add", "-q", "-b", cfg.branch("gh-5"), str(cfg.tree("gh-5")))
    result = tac8("stop", "5")
    assert result.returncode == 0, result.stderr
    stop = cfg.tree("gh-5") / "STOP"
    assert stop.read_text() == "" and "stop requested for gh-5" in result.stdout
    assert "no live worker" in result.stdout
    result = tac8("stop", "gh-5", "--now")
    assert result.returncode == 0 and stop.read_text() == "now"
    assert [p.name for p in cfg.tree("gh-5").iterdir() if p.name.startswith(".STOP")] == []

    _one_line_error(tac8("stop", "t-1"), 1, "t-1", "Pending")
    _one_line_error(tac8("stop", "gh-77"), 1, "gh-77", "not in")
    _one_line_error(tac8("stop", "banana"), 1, "not a task id")
    _one_line_error(tac8("stop"), 2, "task")
    assert not (cfg.trees_dir / "t-1").exists()


def test_stop_refuses_an_active_task_whose_tree_does_not_exist_yet(installed):
    _one_line_error(tac8("stop", "gh-5"), 1, "no worktree")
    assert not installed.cfg.tree("gh-5").exists()


def test_pause_and_resume(installed):
    cfg = installed.cfg
    result = tac8("pause", "--reason", "deploy window")
    assert result.returncode == 0 and "paused: deploy window" in result.stdout
    record = read_pause(cfg)
    assert record["by"] == "cli" and record["reason"] == "deploy window" and record["at"]
    assert "PAUSED: deploy window (by cli" in tac8("status").stdout
    assert "already paused: deploy window" in tac8("pause").stdout
    result = tac8("resume")
    assert result.returncode == 0 and result.stdout.strip() == "resumed"
    assert read_pause(cfg) is None and not cfg.pause_file.exists()
    assert tac8("resume").stdout.strip() == "not paused"
    assert tac8("pause").returncode == 0 and read_pause(cfg)["reason"]


def test_add_appends_a_pending_task_with_the_next_id(installed):
    cfg = installed.cfg
    cfg.archive_dir.mkdir(parents=True)
    (cfg.archive_dir / "2026-11-01.md").write_text("## Completed Today\n[✅ abc1234, w-1] t-5: Old work\n")
    result = tac8("add", "Write a CONTRIBUTING guide", "--priority", "1")
    assert result.returncode == 0, result.stderr
    assert "added t-6: Write a CONTRIBUTING guide {p1}" in result.stdout
    result = cli("add", "Second [task] {p0}")
    assert "added t-7: Second (task) (p0) {p2}" in result.stdout
    text = installed.tasks_text
    pending = text.split("## Pending")[1].split("## Failed")[0]
    assert "[] t-6: Write a CONTRIBUTING guide {p1}\n" in pending
    assert "[] t-7: Second (task) (p0)\n" in pending
    assert text.startswith(QUEUE.split("## Pending")[0])  # the rest of the file is untouched
    _one_line_error(tac8("add", "x", "--priority", "7"), 2, "--priority")
    _one_line_error(tac8("add", "   "), 1, "empty")


def test_logs_renders_the_stream_json(installed):
    log = installed.cfg.agent_log("gh-5")
    with open(log, "a") as f:
        f.write("plain text from another agent\n" + json.dumps(RESULT) + "\n")
    result = tac8("logs", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "· session started: model claude-sonnet-4-5, cwd /srv/trees/gh-5",
        "I'll look at the parser first.",
        "→ Bash: pytest -q tests/test_parser.py",
        "  ← ok: 3 passed in 0.12s",
        "Running the test suite now",
        "plain text from another agent",
        "■ result: success · $0.0423 · 4 turns · 1m 05s",
        "Fixed the flaky parser test.",
    ]
    _one_line_error(tac8("logs", "gh-404"), 1, "no agent log for gh-404")


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # any but tab and newline
HOSTILE = "\x1b[2J\x9b31m\x07"  # clear the screen, 8-bit CSI (red), bell


def test_status_and_logs_print_no_control_characters_from_titles_or_agent_output(installed):
    cfg = installed.cfg
    (installed.root / "tasks.md").write_text(
        QUEUE.replace("gh-5: Fix the flaky parser test", f"gh-5: Fix the{HOSTILE} parser"))
    with open(cfg.agent_log("gh-5"), "a") as log:
        log.write(_said(f"Clearing{HOSTILE} the screen") + "\n"
                  + f"plain{HOSTILE} output\x1b]0;window title\x07 of another agent\n")
    emit(cfg.events_dir, "task_added", task="gh-5", issue=5, title=f"Fix the{HOSTILE} parser")
    metrics = Metrics(cfg)
    metrics.fold_pending()
    metrics.publish()

    status = tac8("status")
    logs = tac8("logs", "5")

    assert status.returncode == logs.returncode == 0, (status.stderr, logs.stderr)
    for out in (status.stdout, logs.stdout):
        assert not CONTROL.search(out), repr(out)
    assert "gh-5  w-ee4608" in status.stdout and "gh-5: Fix the parser {p1}" in status.stdout
    assert "title=Fix the parser" in status.stdout  # the event's details
    assert "› plain output of another agent" in status.stdout
    assert logs.stdout.splitlines()[-2:] == ["Clearing the screen", "plain output of another agent"]
    raw = tac8("status", "--json").stdout
    assert not CONTROL.search(raw)
    assert json.loads(raw)["queue"]["Active"][0]["title"] == f"Fix the{HOSTILE} parser"  # escaped


def test_logs_follow_prints_new_lines_until_the_task_ends(installed, live_worker, tmp_path):
    cfg = installed.cfg
    out_file = tmp_path / "follow.out"
    with open(out_file, "w") as out:
        follower = subprocess.Popen([str(TAC8), "logs", "gh-5", "--follow"], cwd=CHECKOUT, stdout=out,
                                    stderr=subprocess.PIPE, text=True)

    def shown():
        return out_file.read_text()

    wait_for(lambda: "Running the test suite now" in shown(), what="the log so far")
    live_worker.stdin.write(_said("Written while it runs") + "<nl>\n" + json.dumps(RESULT) + "<nl>\n")
    live_worker.stdin.flush()
    wait_for(lambda: "■ result: success" in shown(), what="the lines written since")
    live_worker.stdin.close()  # the worker ends; the task is Active until the observer moves it
    live_worker.wait(timeout=10)
    with open(cfg.agent_log("gh-5"), "a") as log:
        log.write(_said("Written after the worker") + "\n")
    wait_for(lambda: "Written after the worker" in shown(), what="a line after the worker ended")
    edit_tasks(cfg, lambda b: b.move(b.get("gh-5"), COMPLETED))  # what the observer does
    assert follower.wait(timeout=10) == 0
    assert shown().count("Written while it runs\n") == 1 and "Traceback" not in follower.stderr.read()


def test_follow_prints_a_line_written_in_two_parts_once_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "FOLLOW_POLL", 0)
    log = tmp_path / "gh-5.jsonl"
    line = _said("Half and half")
    log.write_text("before\n" + line[:20])
    reads = []

    def still_running() -> bool:  # asked before each read of the log
        reads.append(len(reads))
        if len(reads) == 2:  # the first read saw only the first part
            with open(log, "a") as f:
                f.write(line[20:] + "\n")
        return len(reads) < 3
    assert list(logs.follow(log, still_running)) == ["before", line]
    assert len(reads) == 3


def _said(text: str) -> str:
    """A stream-json line: the assistant saying ``text``."""
    return json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})


def test_readable_skips_noise_and_keeps_plain_lines():
    assert readable('{"type":"stream_event","event":{}}') == []
    assert readable("") == []
    assert readable("[1, 2]") == ["[1, 2]"]
    tool = {"type": "assistant", "message": {"content": [
        {"type": "tool_use", "name": "Edit", "input": {"file_path": "src/a.py", "old_string": "x"}},
        {"type": "tool_use", "name": "TodoWrite", "input": {"todos": []}}]}}
    assert readable(json.dumps(tool)) == ["→ Edit: src/a.py", "→ TodoWrite"]
    failed = {"type": "user", "message": {"content": [
        {"type": "tool_result", "content": [{"type": "text", "text": "boom\ntrace"}], "is_error": True}]}}
    assert readable(json.dumps(failed)) == ["  ← error: boom (+1 lines)"]
    error = {"type": "result", "subtype": "error_max_turns", "is_error": True, "total_cost_usd": 1.5}
    assert readable(json.dumps(error)) == ["■ result: error_max_turns (error) · $1.5000"]


def test_init_makes_the_queue_once_and_never_overwrites(tmp_path):
    from services.cli.init import EMPTY_QUEUE, init
    config = tmp_path / "conf" / "tac8.toml"
    config.parent.mkdir()
    config.write_text('# mine\n[paths]\ntasks = "../queue/tasks.md"\nstate = "../state"\n'
                      'logs = "../logs"\n')
    assert init(str(config)) == [tmp_path / "state", tmp_path / "logs", tmp_path / "queue" / "tasks.md"]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "queue" / "tasks.md").read_text() == EMPTY_QUEUE
    assert "## Completed Today\n" in EMPTY_QUEUE
    (tmp_path / "queue" / "tasks.md").write_text("## Pending\n[] mine\n")
    assert init(str(config)) == []
    assert config.read_text().startswith("# mine\n")
    assert (tmp_path / "queue" / "tasks.md").read_text() == "## Pending\n[] mine\n"


def test_init_copies_the_example_with_paths_into_the_checkout(tmp_path):
    from services.cli.init import example_for
    from shared.config import CHECKOUT, EXAMPLE_CONFIG, load_config
    assert example_for(EXAMPLE_CONFIG.with_name("tac8.toml")) == EXAMPLE_CONFIG.read_text()
    elsewhere = tmp_path / "etc" / "tac8.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(example_for(elsewhere))
    cfg = load_config(elsewhere)
    assert cfg.tasks_file == CHECKOUT / "tasks.md" and cfg.repo.path == CHECKOUT
    assert cfg.paths.state == CHECKOUT / "state" and cfg.repo.trees == CHECKOUT / "trees"
