"""``tac8 demo``: tac8's main job on embedded defaults, with no GitHub account and no AI key.

It builds a sandbox in ``--dir`` (``<checkout>/demo/`` by default), a folder that is missing,
empty, or marked by an earlier demo (``.tac8-demo``, written first): a marked folder is removed
and rebuilt, any other is refused and left untouched. Only a marked folder's supervisord (the
demo's own) is ever shut down. The sandbox holds:

* ``origin.git`` (a bare "origin") and ``repo/``, its clone, which the agents work on;
* ``tasks.md`` with tasks typed the way a person would (one is a question);
* ``conf/tac8.toml`` (no GitHub repository: a finished task means its branch was pushed),
  ``conf/worker_template.md`` running ``demo_agent.py`` beside this file (commits a small
  note, or writes BLOCKED.md for the question), and ``conf/supervisord.conf``: the shipped
  one, with only the interpreter's path filled in;

then starts the real supervisord with the four programs, shows progress until every task
has settled, prints ``tac8 status``, lists the branches pushed to the sandbox origin and
shuts supervisord down.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from services.cli.common import UserError
from shared.config import CHECKOUT, DEFAULT_TEMPLATE, load_config
from shared.proc import run
from shared.records import read_record, write_record
from shared.tasks import ACTIVE, PENDING, SECTIONS, read_board
from shared.worktree import git

DEMO_TASKS = """# Tasks

Typed by a person: add a line under Pending and tac8 picks it up.

## Active

## Pending
[] Add a CONTRIBUTING guide
[] Write a changelog entry for the first release {p1}
[] Which license should the project use?
[] Add a code of conduct

## Blocked

## Stopped

## Failed

## Completed Today
"""

DEMO_CONFIG = """# tac8 demo sandbox: no GitHub repository, the demo agent, quick retries.
[repo]
path = "../repo"

[github]
repo = ""

[launcher]
max_workers = 2
retry_backoff = 5
min_free_memory_mb = 50

[worker]
template = "worker_template.md"   # the demo agent's
# The demo agent is a script, not an AI: run as root (a container), it may run as root too.
allow_root = {allow_root}
max_runtime = 120
stall_timeout = 60
stop_grace = 5

[metrics]
min_write_interval = 1
"""

# run as a script, not ``-m services.cli.demo_agent``: it then imports nothing of the CLI
DEMO_AGENT = Path(__file__).with_name("demo_agent.py")
SHIPPED_INTERPRETER = "%(here)s/../.venv/bin/python"
SETTLE_TIMEOUT = 180.0  # seconds; the demo agent takes about two seconds a task
MARKER = ".tac8-demo"  # in every folder the demo builds: only such a folder is rebuilt


def supervisord_conf_for(python: str, config: Path) -> str:
    """The shipped conf/supervisord.conf with ``python`` as the programs' interpreter and
    ``config`` as their config (``TAC8_CONFIG`` in supervisord's environment)."""
    text = (CHECKOUT / "conf" / "supervisord.conf").read_text()
    if SHIPPED_INTERPRETER not in text or "\n[supervisord]\n" not in text:
        raise RuntimeError(f"conf/supervisord.conf no longer names {SHIPPED_INTERPRETER}")
    text = text.replace("\n[supervisord]\n", f'\n[supervisord]\nenvironment = TAC8_CONFIG="{config}"\n')
    return text.replace(SHIPPED_INTERPRETER, python)


def _git(cwd: Path, *args: str) -> str:
    return "\n".join(f"  {line}" for line in git(cwd, *args).splitlines())


def _tool(name: str) -> str:
    """A console script of this installation (supervisord, supervisorctl)."""
    return str(Path(sys.executable).with_name(name))


def refuse_unless_ours(root: Path) -> None:
    """``UserError`` unless ``root`` is missing, an empty folder, or a folder a demo made."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; choose a new or empty folder with --dir")
    if not (root / MARKER).is_file():
        raise UserError(f"{root} is not empty and has no {MARKER} (the mark of a folder tac8 "
                        "demo made): choose a new or empty folder with --dir; nothing was changed")


def build_sandbox(root: Path) -> Path:
    """Create the demo sandbox at ``root``, after ``refuse_unless_ours``: a
    folder an earlier demo made is shut down (its supervisord) and removed first. Returns
    the sandbox's config file."""
    refuse_unless_ours(root)
    if (root / MARKER).is_file():
        shutdown(root)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("Made by `tac8 demo`, which removes and rebuilds this folder.\n")
    (root / "conf").mkdir()
    for sub in ("state", "logs"):
        (root / sub).mkdir(mode=0o700)
    origin, repo = root / "origin.git", root / "repo"
    _git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    _git(root, "init", "-q", "-b", "main", str(repo))
    _git(repo, "config", "user.name", "tac8 demo")
    _git(repo, "config", "user.email", "demo@tac8.invalid")
    (repo / "README.md").write_text("# A sandbox project\n\nThe tac8 demo's agents work here.\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "Initial commit")
    _git(repo, "remote", "add", "origin", str(origin))
    _git(repo, "push", "-q", "origin", "main")

    (root / "tasks.md").write_text(DEMO_TASKS)
    config = root / "conf" / "tac8.toml"
    config.write_text(DEMO_CONFIG.format(allow_root="true" if os.geteuid() == 0 else "false"))
    template = read_record(DEFAULT_TEMPLATE)
    template.meta["command"] = [sys.executable, str(DEMO_AGENT), "--output-format", "stream-json"]
    template.meta["env"] = {}
    write_record(root / "conf" / "worker_template.md", template.meta, template.body)
    (root / "conf" / "supervisord.conf").write_text(supervisord_conf_for(sys.executable, config))
    load_config(config)  # the sandbox must be a valid installation
    return config


def _supervisorctl(root: Path, *args: str) -> str:
    """What supervisorctl printed (its exit status only says whether every program runs)."""
    done = run([_tool("supervisorctl"), "-c", str(root / "conf" / "supervisord.conf"), *args],
               timeout=60)
    return (done.stdout or done.stderr).decode("utf-8", "replace").rstrip()


def start(root: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("TAC8_CONFIG", None)  # the programs get it from supervisord.conf's environment
    # Not shared.proc.run: supervisord daemonizes, and run kills what its child leaves behind.
    # umask 077: supervisord's own log is made before it daemonizes with the conf's umask.
    subprocess.run([_tool("supervisord"), "-c", str(root / "conf" / "supervisord.conf")],
                   check=True, env=env, cwd=root, timeout=60, umask=0o077)


def shutdown(root: Path) -> None:
    """Stop the sandbox's supervisord if it runs, and wait until it has exited (only ever
    called for a folder the demo made: its supervisord is the demo's)."""
    pidfile = root / "state" / "supervisord.pid"
    _supervisorctl(root, "shutdown")
    deadline = time.monotonic() + 30
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def counts(config: Path) -> dict[str, int]:
    board = read_board(load_config(config).tasks_file)
    return {section: len(board.tasks(section)) for section in SECTIONS}


def wait_until_settled(config: Path, say: Callable[[str], None],
                       timeout: float = SETTLE_TIMEOUT) -> bool:
    """Print progress until nothing is Pending or Active; False on timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        now = counts(config)
        line = " · ".join(f"{name} {n}" for name, n in now.items() if n)
        if line != last:
            say(f"  {time.strftime('%H:%M:%S')}  {line}")
            last = line
        if now[PENDING] == 0 and now[ACTIVE] == 0:
            return True
        time.sleep(0.5)
    return False


def run_demo(root: Path, say: Callable[[str], None] = print) -> int:
    root = root.resolve()
    config = build_sandbox(root)
    say(f"tac8 demo: built a sandbox in {root}")
    say("  a repository with a bare origin, tasks.md with 4 tasks, the demo agent, no GitHub")
    say(f"tac8 demo: starting supervisord ({root / 'conf' / 'supervisord.conf'})")
    start(root)
    try:
        say(_supervisorctl(root, "status"))
        say("tac8 demo: working (tasks.md sections, as they change)")
        settled = wait_until_settled(config, say)
        time.sleep(1.5)  # let the metrics program write its last figures
        status = run([sys.executable, "-m", "services.cli", "--config", str(config), "status"],
                     timeout=60)
        say((status.stdout or status.stderr).decode("utf-8", "replace").rstrip())
        say("tac8 demo: branches pushed to the sandbox origin")
        say(_git(root / "origin.git", "branch", "--list", "--format=%(refname:short)  %(subject)"))
    finally:
        say("tac8 demo: shutting supervisord down")
        shutdown(root)
    if not settled:
        say(f"tac8 demo: tasks had not settled after {SETTLE_TIMEOUT:.0f}s; see {root / 'logs'}")
        return 1
    say(f"tac8 demo: done. Look around in {root} (tasks.md, state/, logs/, metrics.json).")
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=CHECKOUT / "demo",
                   help="where to build the sandbox: a new or empty folder, or one an earlier "
                        "demo made (rebuilt on every run; default: ./demo)")


def command(args: argparse.Namespace) -> int:
    return run_demo(args.dir)
