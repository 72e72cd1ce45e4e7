"""`tac8 demo`: the sandbox run under the real supervisord, twice (re-running must work)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.cli.demo import run_demo
from shared.tasks import BLOCKED, COMPLETED, read_board


def test_demo_settles_every_task_and_pushes_branches_and_can_run_again(tmp_path, monkeypatch):
    assert Path(sys.executable).with_name("supervisord").exists(), \
        "supervisord is missing beside the interpreter: install tac8's dependencies"
    monkeypatch.delenv("TAC8_CONFIG", raising=False)
    root = tmp_path / "demo"
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
