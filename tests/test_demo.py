"""`tac8 demo`: the sandbox run under the real supervisord, twice (re-running must work), and
the folders it must not touch: a checkout, whose own supervisord must keep running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.cli.demo import run_demo
from shared.config import CHECKOUT
from shared.tasks import BLOCKED, COMPLETED, read_board
from tests.agents import wait_for
from tests.sandbox import git

SUPERVISORD = Path(sys.executable).with_name("supervisord")


def open_to_others(root: Path) -> list[str]:
    """What, of the sandbox's state/, logs/ and metrics.json, has a group or other bit."""
    paths = [root / "metrics.json"]
    for top in ("state", "logs"):
        for folder, dirs, files in os.walk(root / top):
            paths += [Path(folder)] + [Path(folder) / name for name in files]
    return [f"{path.relative_to(root)} {oct(path.lstat().st_mode & 0o777)}" for path in paths
            if path.lstat().st_mode & 0o077]


def test_demo_settles_every_task_and_pushes_branches_and_can_run_again(tmp_path, monkeypatch):
    assert SUPERVISORD.exists(), \
        "supervisord is missing beside the interpreter: install tac8's dependencies"
    monkeypatch.delenv("TAC8_CONFIG", raising=False)
    root = tmp_path / "demo"
    root.mkdir()  # empty: built in; the second run rebuilds the folder the first one made
    umask = os.umask(0o022)  # a permissive shell: supervisord and the programs set their own
    try:
        for run in range(2):
            said: list[str] = []
            assert run_demo(root, said.append) == 0, "\n".join(said)
            board = read_board(root / "tasks.md")
            assert sorted(t.title for t in board.tasks(COMPLETED)) == [
                "Add a CONTRIBUTING guide", "Add a code of conduct",
                "Write a changelog entry for the first release"]
            assert [t.title for t in board.tasks(BLOCKED)] == ["Which license should the project use?"]
            branches = subprocess.run(["git", "branch", "--list", "--format=%(refname:short)"],
                                      cwd=root / "origin.git", capture_output=True, text=True,
                                      check=True).stdout.split()
            assert sorted(branches) == ["auto/t-1", "auto/t-2", "auto/t-4", "main"]
            assert any("health: OK" in line for line in said)
            assert not (root / "state" / "supervisord.pid").exists()  # shut down
            assert (root / ".tac8-demo").is_file()
            assert open_to_others(root) == []
    finally:
        os.umask(umask)


# A checkout's own supervisord: what `--dir .` used to shut down (then it removed the folder).
CHECKOUT_SUPERVISORD = """[unix_http_server]
file = %(here)s/../state/supervisor.sock
chmod = 0700
[supervisorctl]
serverurl = unix://%(here)s/../state/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisord]
logfile = %(here)s/../logs/supervisord.log
pidfile = %(here)s/../state/supervisord.pid
"""


def listing(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = (Path(folder) / name).lstat()
            found[os.path.relpath(Path(folder) / name, root)] = (st.st_mode, st.st_size,
                                                                 st.st_mtime_ns)
    return found


def test_demo_in_a_checkout_refuses_in_one_line_and_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("TAC8_CONFIG", raising=False)
    checkout = tmp_path / "checkout"
    for folder in ("conf", "state", "logs"):
        (checkout / folder).mkdir(parents=True)
    git(tmp_path, "init", "-q", "-b", "main", str(checkout))
    (checkout / "README.md").write_text("someone's project\n")
    git(checkout, "add", "README.md")
    git(checkout, "commit", "-qm", "initial")
    conf = checkout / "conf" / "supervisord.conf"
    conf.write_text(CHECKOUT_SUPERVISORD)
    subprocess.run([SUPERVISORD, "-c", conf], check=True, cwd=checkout, timeout=60)
    log = checkout / "logs" / "supervisord.log"
    wait_for(lambda: log.exists() and "supervisord started with pid" in log.read_text(),
             what="the checkout's supervisord")  # it writes nothing more while idle
    pid = int((checkout / "state" / "supervisord.pid").read_text())
    try:
        before = listing(checkout)
        done = subprocess.run([sys.executable, "-m", "services.cli", "demo", "--dir", "."],
                              cwd=checkout, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(CHECKOUT)})
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (f"tac8 demo: {checkout} is not empty and has no .tac8-demo (the "
                               "mark of a folder tac8 demo made): choose a new or empty folder "
                               "with --dir; nothing was changed\n")
        assert listing(checkout) == before
        os.kill(pid, 0)  # the checkout's supervisord still runs
    finally:
        subprocess.run([SUPERVISORD.with_name("supervisorctl"), "-c", conf, "shutdown"],
                       capture_output=True, timeout=60)
