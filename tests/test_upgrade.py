"""Upgrades keep settings: a person clones tac8, configures it, runs a task under the real
supervisord, pulls a newer tac8 and restarts — nothing lost, no conflict.

The "upstream" is a repository made from this checkout's tracked files as they are in the
working tree (so the test sees uncommitted changes too); the install is its clone, whose
``.venv`` is this checkout's (the programs run the install's code: supervisord starts them
in the install's folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from shared.config import CHECKOUT
from tests.agents import FAKE_AGENT, wait_for
from tests.sandbox import GIT_IDENTITY, Sandbox, git

VENV = Path(sys.executable).parent.parent


def _upstream(root: Path) -> Path:
    """A repository holding what this checkout tracks, as the working tree has it."""
    upstream = root / "upstream"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=CHECKOUT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = CHECKOUT / name
        if source.is_file():  # (a file deleted in the working tree is left out)
            target = upstream / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q", "-b", "main", str(upstream)], check=True)
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "tac8 as it is")
    return upstream


def _run(install: Path, env: dict, *args: str) -> str:
    done = subprocess.run([str(install / ".venv" / "bin" / "python"), *args], cwd=install,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _section_of(install: Path, title: str) -> str | None:
    section = None
    for line in (install / "tasks.md").read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif title in line:
            return section
    return None


def test_a_pull_and_restart_keep_settings_queue_and_state(tmp_path):
    root = Path(os.path.realpath(tmp_path))
    upstream = _upstream(root)
    install = root / "i"  # short: supervisord's socket path must fit in 107 bytes
    subprocess.run(["git", "clone", "-q", str(upstream), str(install)], check=True)
    (install / ".venv").symlink_to(VENV)
    project = Sandbox(root / "project")  # the repository the agents work on, with its origin
    env = {**os.environ, **GIT_IDENTITY,
           "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    env.pop("TAC8_CONFIG", None)

    said = _run(install, env, "-m", "services.cli", "init")
    assert "conf/tac8.toml" in said and (install / "tasks.md").exists()
    config = install / "conf" / "tac8.toml"
    config.write_text(config.read_text()
                      .replace('path          = ".."', f'path          = "{project.repo}"')
                      .replace("# template    =", "template      =")
                      .replace("allow_root    = false", f"allow_root    = {str(os.geteuid() == 0).lower()}")
                      .replace("min_free_memory_mb = 300", "min_free_memory_mb = 50")
                      .replace('sandbox       = "auto"', 'sandbox       = "none"'))  # (not the subject)
    (install / "conf" / "worker_template.md").write_text(
        (install / "conf" / "worker_template.default.md").read_text().replace(
            "command: [claude, -p, --output-format, stream-json, --verbose, "
            "--dangerously-skip-permissions]",
            f"command: [{sys.executable}, {FAKE_AGENT}, commit, --output-format, stream-json, --verbose]"))
    _run(install, env, "-m", "services.cli", "add", "Write the first note")
    mine = {name: (install / name).read_text()
            for name in ("conf/tac8.toml", "conf/worker_template.md")}
    ctl = [str(VENV / "bin" / "supervisorctl"), "-c", str(install / "conf" / "supervisord.conf")]
    subprocess.run([str(VENV / "bin" / "supervisord"), "-c",
                    str(install / "conf" / "supervisord.conf")], env=env, cwd=install,
                   check=True, timeout=60)
    try:
        wait_for(lambda: _section_of(install, "Write the first note") == "Completed Today",
                 timeout=90, interval=0.2, what="the first task, before the upgrade")
        assert git(install, "status", "--porcelain") == ""  # nothing of the person's is tracked

        # upstream moves on: docs, the example config, the shipped prompt
        (upstream / "README.md").write_text((upstream / "README.md").read_text() + "\nNews.\n")
        for name in ("conf/tac8.example.toml", "conf/worker_template.default.md"):
            (upstream / name).write_text((upstream / name).read_text() + "\n# a newer default\n")
        git(upstream, "commit", "-qam", "a newer tac8")
        git(install, "pull", "-q", "--ff-only")
        assert git(install, "log", "-1", "--format=%s") == "a newer tac8"
        assert git(install, "status", "--porcelain") == ""
        subprocess.run([*ctl, "restart", "all"], env=env, check=True, timeout=120,
                       capture_output=True)

        _run(install, env, "-m", "services.cli", "add", "Write the second note")
        wait_for(lambda: _section_of(install, "Write the second note") == "Completed Today",
                 timeout=90, interval=0.2, what="a task after the upgrade")
    finally:
        subprocess.run([*ctl, "shutdown"], env=env, timeout=60, capture_output=True)
        wait_for(lambda: not (install / "state" / "supervisord.pid").exists(), timeout=30,
                 what="supervisord to exit")
    assert _section_of(install, "Write the first note") == "Completed Today"  # nothing lost
    assert {name: (install / name).read_text() for name in mine} == mine
    branches = git(project.origin, "branch", "--list", "--format=%(refname:short)").split()
    assert sorted(branches) == ["auto/t-1", "auto/t-2", "main"], (install / "tasks.md").read_text()
