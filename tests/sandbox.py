"""A throwaway tac8 installation for tests: a config, tasks.md, state/, and a real git
repository ("repo") cloned from a bare "origin", all under one temporary directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from shared.config import Config, load_config

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "tac8 test",
    "GIT_AUTHOR_EMAIL": "test@tac8.invalid",
    "GIT_COMMITTER_NAME": "tac8 test",
    "GIT_COMMITTER_EMAIL": "test@tac8.invalid",
}

EMPTY_QUEUE = "# Tasks\n\n## Active\n\n## Pending\n\n## Blocked\n\n## Stopped\n\n## Failed\n\n## Completed Today\n"


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.conf_dir = root / "conf"
        self.config_path = self.conf_dir / "tac8.toml"
        self.origin = root / "origin.git"
        self.repo = root / "repo"
        self.conf_dir.mkdir(parents=True)
        (root / "tasks.md").write_text(EMPTY_QUEUE)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.origin)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.repo)], check=True)
        (self.repo / "README.md").write_text("sandbox repository\n")
        git(self.repo, "add", "README.md")
        git(self.repo, "commit", "-qm", "initial")
        git(self.repo, "remote", "add", "origin", str(self.origin))
        git(self.repo, "push", "-q", "origin", "main")
        self.settings: dict[str, dict[str, Any]] = {
            "paths": {"tasks": "../tasks.md", "state": "../state", "logs": "../logs",
                      "metrics": "../metrics.json"},
            "repo": {"path": "../repo"},
            # The tests run as root (CI does): a person's install never sets this.
            # conf/worker_template.md: the tests' own agent (unset: the shipped default)
            "worker": {"allow_root": os.geteuid() == 0, "template": "worker_template.md"},
        }
        self.write_config()

    def write_config(self, **sections: dict[str, Any]) -> Config:
        """Merge ``sections`` ({"launcher": {"max_workers": 4}}) into the config file."""
        for name, values in sections.items():
            self.settings.setdefault(name, {}).update(values)
        lines = []
        for name, values in self.settings.items():
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
        self.config_path.write_text("\n".join(lines))
        return self.cfg

    @property
    def cfg(self) -> Config:
        return load_config(self.config_path)

    @property
    def tasks_text(self) -> str:
        return (self.root / "tasks.md").read_text()
