"""A whole tac8 installation under the real supervisord, for the end-to-end tests and the
system benchmark (issue 7).

``Installation(root, fake)`` lays out what a real install has: ``conf/tac8.toml``,
``conf/worker_template.md``, ``conf/supervisord.conf`` (the shipped one, with this
interpreter: ``services.cli.demo.supervisord_conf_for``), ``state/``, ``logs/``, ``tasks.md``,
and the repository the agents work on (``repo/``, a clone of a bare ``origin.git``), with
``[github] repo`` pointing at a ``FakeGitHub`` that the test runs. ``start()`` starts the real
``supervisord -c conf/supervisord.conf`` with the fake's environment, so every program and
every worker inherits it; ``ctl(...)`` is the real ``supervisorctl -c …``; ``close()`` shuts
supervisord down and kills whatever the installation left running (workers and agents live
in sessions of their own and outlive supervisord).

The agent is ``tests/e2e_agent.py``: an issue's body says what it does (``e2e-agent:
blocked``) and may hold it at a gate until the test opens it (``e2e-gate: NAME``); its runs
are recorded under ``e2e/runs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import psutil

from services.cli.demo import shutdown, supervisord_conf_for
from shared import runs
from shared.config import Config
from shared.records import read_record, render_record
from shared.tasks import read_board
from tests.agents import FAKE_AGENT, TEMPLATE_BODY, wait_for
from tests.fakegithub import FakeGitHub
from tests.sandbox import GIT_IDENTITY, Sandbox, git

VENV_BIN = Path(sys.executable).parent
AGENT = Path(__file__).with_name("e2e_agent.py")
PROGRAMS = ("fetcher", "launcher", "observer", "metrics")
START_TIMEOUT = 30.0  # seconds for the four programs to reach RUNNING (startsecs is 2)

# Small intervals and limits so a scenario takes seconds (the config's key names).
SETTINGS: dict[str, dict[str, Any]] = {
    # timeout 3: a write whose answer never came is looked for after 6 s
    "github": {"host": "github.localhost", "poll_interval": 0.5, "timeout": 3},
    "launcher": {"max_workers": 2, "retry_backoff": 1, "retry_backoff_max": 5,
                 "min_free_memory_mb": 50},
    "worker": {"max_runtime": 120, "stall_timeout": 60, "stop_grace": 2},
    "metrics": {"min_write_interval": 0.5},
}


def tool(name: str) -> str:
    """A console script of this venv (supervisord, supervisorctl, gh); the test fails, never
    skips, when it is missing."""
    path = VENV_BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"the end-to-end tests need {name} (pip install -e '.[test]' into the venv)"
    return found


class Installation:
    def __init__(self, root: Path, fake: FakeGitHub, **sections: dict[str, Any]):
        self.supervisord = tool("supervisord")
        self.supervisorctl = tool("supervisorctl")
        tool("gh")
        self.root = root
        self.fake = fake
        self.sandbox = Sandbox(root)  # conf/tac8.toml, tasks.md, repo/ and origin.git
        self.conf_dir = self.sandbox.conf_dir
        self.supervisord_conf = self.conf_dir / "supervisord.conf"
        self.origin = self.sandbox.origin
        self.e2e = root / "e2e"
        for folder in (root / "state", root / "logs", self.e2e / "gates", self.e2e / "runs"):
            folder.mkdir(parents=True)
        template = self.conf_dir / "worker_template.md"
        # The agents run from a copy outside tac8's checkout, which their sandbox hides.
        agent = self.e2e / AGENT.name
        shutil.copy(AGENT, agent)
        (self.e2e / "agents").mkdir()
        shutil.copy(FAKE_AGENT, self.e2e / "agents" / FAKE_AGENT.name)
        command = [sys.executable, str(agent), "--output-format", "stream-json", "--verbose"]
        template.write_text(render_record({"command": command, "env": {"E2E_DIR": str(self.e2e)}},
                                          TEMPLATE_BODY))
        settings = {name: dict(values) for name, values in SETTINGS.items()}
        settings["github"]["repo"] = fake.repo
        settings["worker"]["sandbox_binds"] = [str(self.e2e)]  # the agents note their runs there
        for name, values in sections.items():
            settings.setdefault(name, {}).update(values)
        self.cfg: Config = self.sandbox.write_config(**settings)  # must be a valid config
        self.supervisord_conf.write_text(supervisord_conf_for(sys.executable, self.cfg.file))

    def env(self) -> dict[str, str]:
        """supervisord's environment, which the programs, workers and agents inherit."""
        env = {**os.environ, **GIT_IDENTITY, **self.fake.env,
               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
        env.pop("TAC8_CONFIG", None)  # the programs get it from supervisord.conf's environment
        return env

    # --- supervisord ---
    def start(self) -> None:
        subprocess.run([self.supervisord, "-c", str(self.supervisord_conf)], env=self.env(),
                       cwd=self.root, check=True, timeout=60)
        self.wait_running()

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.supervisorctl, "-c", str(self.supervisord_conf), *args],
                              capture_output=True, text=True, timeout=120)

    def states(self) -> dict[str, tuple[str, int | None]]:
        """``supervisorctl status``: program → (state, pid while running)."""
        found = {}
        for line in self.ctl("status").stdout.splitlines():
            match = re.match(r"(\S+)\s+([A-Z]+)(?:\s+pid (\d+),)?", line)
            if match:
                pid = match.group(3)
                found[match.group(1)] = (match.group(2), int(pid) if pid else None)
        return found

    def wait_running(self, timeout: float = START_TIMEOUT) -> dict[str, int]:
        """Wait until all four programs are RUNNING; their pids."""
        def running():
            states = self.states()
            if all(states.get(p, ("",))[0] == "RUNNING" for p in PROGRAMS):
                return {p: states[p][1] for p in PROGRAMS}
            return None
        return wait_for(running, timeout=timeout, interval=0.2,
                        what=f"{', '.join(PROGRAMS)} RUNNING (last: {self.states()})")

    def supervisord_pid(self) -> int | None:
        try:
            return int((self.root / "state" / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return None

    def supervisord_log(self) -> str:
        return (self.root / "logs" / "supervisord.log").read_text()

    def close(self) -> list[int]:
        """Shut supervisord down, then kill every process the installation left (workers,
        agents, and supervisord itself if it did not exit). Returns the pids killed."""
        shutdown(self.root)
        return kill_processes_under(self.root)

    # --- GitHub and the agent ---
    def add_issue(self, title: str, behaviour: str = "commit", gate: str | None = None,
                  **fields: Any) -> str:
        """A labelled issue whose agent does ``behaviour``; returns its task id."""
        body = f"Please: {title}.\n\ne2e-agent: {behaviour}\n"
        if gate:
            body += f"e2e-gate: {gate}\n"
        return f"gh-{self.fake.add_issue(title, body, **fields)['number']}"

    def open_gate(self, name: str) -> None:
        (self.e2e / "gates" / name).touch()

    def agent_runs(self, task: str | None = None) -> list[dict[str, Any]]:
        found = []
        for path in (self.e2e / "runs").glob("*.json"):
            run = json.loads(path.read_text())
            if task is None or run["task"] == task:
                found.append(run)
        return sorted(found, key=lambda r: r["started"])

    def comments(self, task: str) -> list[str]:
        return [c["body"] for c in self.fake.issue_comments(int(task[3:]))]

    def pulls(self, task: str) -> list[dict[str, Any]]:
        head = f"{self.fake.owner}:{self.cfg.branch(task)}"
        return [p for p in self.fake.pulls.values() if p["head"]["label"] == head]

    # --- the files ---
    def where(self, task: str) -> tuple[str | None, Any]:
        """(section, task line) of ``task`` in tasks.md."""
        found = read_board(self.cfg.tasks_file).find(task)
        return found if found else (None, None)

    def applied(self, task: str) -> list[str]:
        record = runs.read_run(self.cfg, task)
        return list(record.meta.get("applied") or []) if record else []

    def settled(self, task: str, transition: str) -> bool:
        """The observer carried ``transition`` out to the end: announced (and, when
        completed, the tree cleaned), and the comment of a gh- task is on the issue."""
        done = {transition, "announced"} | ({"cleaned"} if transition == "completed" else set())
        if not done <= set(self.applied(task)):
            return False
        return not task.startswith("gh-") or any(f"tac8:{task}/" in c for c in self.comments(task))

    def wait_settled(self, tasks: list[str], transition: str, timeout: float = 60.0) -> None:
        wait_for(lambda: all(self.settled(t, transition) for t in tasks), timeout=timeout,
                 interval=0.1, what=f"{transition}: {tasks} "
                 f"(applied: {[self.applied(t) for t in tasks]})")

    def active_with_agent(self, tasks: list[str]) -> bool:
        """Every one of ``tasks`` is Active, its worker alive and its agent started."""
        return all(self.where(t)[0] == "Active" and runs.worker_alive(self.cfg, t)
                   and self.agent_runs(t) for t in tasks)

    def live_workers(self) -> list[str]:
        return sorted(p.stem for p in self.cfg.live_dir.glob("*.lock")
                      if runs.worker_alive(self.cfg, p.stem))

    def origin_head(self, task: str) -> str | None:
        """The commit of the task's branch on origin, None if it was never pushed."""
        out = git(self.origin, "for-each-ref", "--format=%(objectname)",
                  f"refs/heads/{self.cfg.branch(task)}")
        return out or None

    def marker(self, task: str) -> dict[str, Any] | None:
        return runs.read_pr_marker(self.cfg, task)

    def run_record(self, task: str) -> dict[str, Any]:
        return read_record(self.cfg.run_record(task)).meta


@contextlib.contextmanager
def installed(root: Path, **sections: dict[str, Any]) -> Iterator[Installation]:
    """A started installation with a fake GitHub of its own; shut down and cleaned up
    afterwards, also when the block fails."""
    with FakeGitHub() as fake:
        inst = Installation(root, fake, **sections)
        try:
            inst.start()
            yield inst
        finally:
            inst.close()


def kill_processes_under(root: Path) -> list[int]:
    """SIGKILL every process whose command line names ``root`` or that works under it
    (never this process). Returns their pids."""
    mine, prefix = os.getpid(), str(root)
    doomed = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.info["pid"] == mine:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if prefix in cmdline or cwd == prefix or cwd.startswith(prefix + os.sep):
            doomed.append(proc)
    for proc in doomed:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(doomed, timeout=5)
    return [p.pid for p in doomed]


def stop_lines(log: str, since: int = 0) -> dict[str, str]:
    """From supervisord's log after offset ``since``: program → how it last stopped
    ("exit status 0", "terminated by SIGKILL", …)."""
    return dict(re.findall(r"stopped: (\S+) \((.*?)\)", log[since:]))

