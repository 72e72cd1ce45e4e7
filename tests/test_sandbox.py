"""The agent's sandbox with the real bubblewrap: what an agent can see, touch and leave behind.

CI installs bubblewrap (.ci/run); these tests fail, never skip, without it. The worker runs
with a HOME of the test's making, so nothing of the machine's own HOME is involved.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from shared import runs, sandbox as sandbox_module, worktree
from shared.config import CHECKOUT
from shared.errors import ConfigError
from shared.locks import hold
from tests.agents import use_command, wait_for
from tests.sandbox import git

TASK = "t-1"
SECRET = "gho_SECRET_TOKEN"

# Each probe prints "<name> READ|DENIED|WROTE|REFUSED": the agent's view, in its log.
PROBES = r'''
cat > /dev/null
probe() { if cat "$2" > /dev/null 2>&1; then echo "$1 READ"; else echo "$1 DENIED"; fi; }
probe gh "$HOME/.config/gh/hosts.yml"
probe ssh "$HOME/.ssh/id_ed25519"
probe login "$HOME/.claude/credentials.json"
probe record "$STATE_DIR/runs/t-1.md"
probe tasks "$TASKS_FILE"
probe config "$CONF_FILE"
probe checkout "$CHECKOUT_FILE"
if [ -e "$STATE_DIR/supervisor.sock" ]; then echo "socket VISIBLE"; else echo "socket HIDDEN"; fi
if echo x >> "$MAIN_GITDIR/config" 2>/dev/null; then echo "gitconfig WROTE"; else echo "gitconfig REFUSED"; fi
if echo x > "$MAIN_GITDIR/hooks/pre-push" 2>/dev/null; then echo "hook WROTE"; else echo "hook REFUSED"; fi
echo x > "$REPO/outside.txt" 2>/dev/null  # refused, or into a throwaway tmpfs
echo "token ${GH_TOKEN:-unset} ${SUPERVISOR_SERVER_URL:-unset}"
echo "work" > work.txt && git add work.txt && git commit -q -m "agent work" && echo "commit DONE"
'''


@pytest.fixture
def home(tmp_path):
    """A HOME with a gh login, an ssh key and the agent's own login in it."""
    home = tmp_path / "home"
    for path, text in {".config/gh/hosts.yml": f"oauth_token: {SECRET}\n",
                       ".ssh/id_ed25519": "PRIVATE KEY\n",
                       ".claude/credentials.json": '{"token": "the agent\'s own"}\n'}.items():
        (home / path).parent.mkdir(parents=True, exist_ok=True)
        (home / path).write_text(text)
    return home


def prepare(sandbox, home, script, **worker):
    cfg = sandbox.cfg
    env = {"STATE_DIR": str(cfg.paths.state), "TASKS_FILE": str(cfg.tasks_file),
           "CONF_FILE": str(cfg.file), "CHECKOUT_FILE": str(CHECKOUT / "pyproject.toml"),
           "REPO": str(cfg.repo.path), "MAIN_GITDIR": str(worktree.common_dir(cfg))}
    use_command(sandbox, ["sh", "-c", script], env=env, stall_timeout=30, stop_grace=1)
    cfg = sandbox.write_config(worker={"sandbox": "bwrap",
                                       "sandbox_binds": [str(home / ".claude")], **worker})
    cfg.paths.state.mkdir(parents=True, exist_ok=True)
    (cfg.paths.state / "supervisor.sock").write_text("")  # where the real one would be
    with hold(cfg.liveness_lock(TASK)) as lock:
        worktree.ensure_worktree(cfg, TASK, lock)
    runs.start_run(cfg, TASK, {"task": TASK, "worker_id": "w-abc123", "attempt": 1,
                               "branch": cfg.branch(TASK), "title": "Sandboxed"})
    return cfg


def start_worker(cfg, home, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "services.worker", TASK, "--config", str(cfg.file)],
        cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HOME": str(home), **env})


def test_the_agent_sees_its_tree_and_its_login_and_nothing_of_tac8(sandbox, home):
    assert shutil.which("bwrap"), "bubblewrap is needed (apt install bubblewrap)"
    cfg = prepare(sandbox, home, PROBES)
    worker = start_worker(cfg, home, GH_TOKEN=SECRET, SUPERVISOR_SERVER_URL="unix:///x")
    out, _ = worker.communicate(timeout=60)
    said = cfg.agent_log(TASK).read_text()
    meta = runs.read_run(cfg, TASK).meta
    assert meta["sandbox"] == "bwrap", (out, said)
    for line in ("gh DENIED", "ssh DENIED", "record DENIED", "tasks DENIED", "config DENIED",
                 "checkout DENIED", "socket HIDDEN", "gitconfig REFUSED", "hook REFUSED",
                 "token unset unset", "login READ", "commit DONE"):
        assert line in said.splitlines(), (line, said)
    assert SECRET not in said
    assert meta["outcome"] == "pr"  # the agent's commit, made inside, pushed by the worker
    assert git(cfg.tree(TASK), "log", "-1", "--format=%s") == "agent work"
    assert "x" not in (cfg.repo.path / ".git" / "config").read_text().splitlines()
    assert not (cfg.repo.path / "outside.txt").exists()
    assert not (cfg.repo.path / ".git" / "hooks" / "pre-push").exists()


def test_what_the_agent_started_dies_with_a_killed_worker(sandbox, home, tmp_path):
    """A daemon in a session of its own (setsid), and the worker SIGKILLed (OOM): the PID
    namespace goes, and every process in it, by the kernel, not by a sweep. (Killed once the
    sandbox is up: bwrap's own start-up has an instant where --die-with-parent is not set
    yet; a worker killed right then leaves the sandbox to the next attempt's sweep.)"""
    mark = f"TAC8_SANDBOX_TEST={tmp_path}"
    script = ("cat > /dev/null; setsid sleep 600 < /dev/null > /dev/null 2>&1 & "
              "echo started; sleep 600")
    cfg = prepare(sandbox, home, script)
    sandbox.write_config(worker={"sandbox": "bwrap"})
    template = cfg.worker.template
    template.write_text(template.read_text().replace(
        "env:\n", f"env:\n  TAC8_SANDBOX_TEST: {tmp_path}\n", 1))
    worker = start_worker(cfg, home)
    log = cfg.agent_log(TASK)
    wait_for(lambda: log.exists() and "started" in log.read_text(), what="the daemon started")
    assert len(marked(mark)) >= 4  # bwrap, its init, the agent, the daemon (and its sleep)
    worker.kill()
    worker.communicate(timeout=10)
    wait_for(lambda: marked(mark) == [], what="every process of the sandbox to be gone")


def marked(mark: str) -> list[int]:
    """Live (not zombie) processes with ``mark`` in their environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if mark.encode() in f.read().split(b"\0") and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
        except (OSError, psutil.NoSuchProcess):
            pass
    return found


def test_a_stop_reaches_the_agent_inside_not_the_sandbox(sandbox, home):
    """SIGINT goes to the agent, which may still finish its turn; bwrap itself ignores it."""
    script = ("cat > /dev/null; trap 'echo interrupted; exit 0' INT; echo working; "
              "while true; do sleep 0.1; done")
    cfg = prepare(sandbox, home, script)
    worker = start_worker(cfg, home)
    log = cfg.agent_log(TASK)
    wait_for(lambda: log.exists() and "working" in log.read_text(), what="the agent to start")
    (cfg.tree(TASK) / "STOP").write_text("")
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=30)
    assert "interrupted" in cfg.agent_log(TASK).read_text()
    meta = runs.read_run(cfg, TASK).meta
    assert meta["outcome"] == "stopped" and meta["exit_code"] == 0


def test_root_is_refused_unless_allowed(sandbox, home):
    cfg = prepare(sandbox, home, "cat > /dev/null; echo ran", allow_root=False)
    worker = start_worker(cfg, home)
    worker.communicate(timeout=60)
    meta = runs.read_run(cfg, TASK).meta
    if os.geteuid() == 0:
        assert meta["outcome"] == "failed"
        assert meta["error"].startswith("refusing to run the agent as root")
        assert not cfg.agent_log(TASK).exists()
    else:  # an ordinary user: the agent runs
        assert "ran" in cfg.agent_log(TASK).read_text()


def test_a_required_sandbox_that_cannot_work_is_a_config_error_auto_falls_back(
        sandbox, monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    cfg = sandbox.write_config(worker={"sandbox": "bwrap"})
    with pytest.raises(ConfigError, match="bwrap is not installed"):
        sandbox_module.mode(cfg)
    cfg = sandbox.write_config(worker={"sandbox": "auto"})
    assert sandbox_module.mode(cfg) == (False, "none (bwrap is not installed (apt install "
                                               "bubblewrap))")


def test_the_agent_environment_is_an_allowlist(monkeypatch):
    monkeypatch.setenv("GH_TOKEN", SECRET)
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = sandbox_module.agent_env({"ANTHROPIC_API_KEY": "the template's"}, TASK)
    assert "GH_TOKEN" not in env and "SSH_AUTH_SOCK" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["ANTHROPIC_API_KEY"] == "the template's"
    assert env["TAC8_TASK"] == TASK and env["PATH"] == os.environ["PATH"]
