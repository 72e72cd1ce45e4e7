"""The agent's sandbox: bubblewrap around whatever command the template names.

Inside, the filesystem is read-only except the task's worktree, what git needs to commit
there (the repository's objects, refs, logs and ``worktrees/<task>``) and a private
``/tmp``. HOME is a private tmpfs at the same path, into which only ``[worker]
sandbox_binds`` (the agent's login: ``~/.claude``, ``~/.claude.json``) and a read-only
``~/.gitconfig`` are bound. Hidden: tac8's checkout, ``state/`` (and so the supervisor
socket), ``logs/``, the config folder, tasks.md, metrics.json, and so ``~/.config/gh`` and
``~/.ssh``. The program the command names (its install prefix) stays visible, read-only.
The agent gets a PID namespace of its own that dies with its worker (``--unshare-pid
--die-with-parent``): when either dies, every process the agent started dies too. The
network is shared (the agent needs its API). The environment is an allowlist in every mode.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shared.config import CHECKOUT, Config
from shared.errors import ConfigError, ExternalError
from shared.proc import run

ALLOWED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME",
               "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
TASK_ENV = "TAC8_TASK"  # in every agent's environment: marks the task's processes
# bwrap ignores SIGINT/SIGTERM (inherited SIG_IGN) so a graceful stop reaches the agent
# instead of killing the sandbox; env restores the default dispositions for the agent.
RESET_SIGNALS = ["env", "--default-signal=INT,TERM,HUP"]


def agent_env(template_env: dict[str, str], task: str) -> dict[str, str]:
    """The agent's environment: the allowlist and ``LC_*`` from ours, the template's
    ``env:``, and ``TAC8_TASK``. Never tokens (``GH_TOKEN``…) unless the template names them."""
    env = {k: v for k, v in os.environ.items() if k in ALLOWED_ENV or k.startswith("LC_")}
    return {**env, **template_env, TASK_ENV: task}


def unusable() -> str | None:
    """Why bubblewrap cannot sandbox an agent here (None: it can). Asked once per worker."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt install bubblewrap)"
    try:
        done = run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                    "--unshare-pid", "--die-with-parent", "/bin/sh", "-c", ":"], timeout=30)
    except ExternalError as exc:
        return str(exc)
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bwrap does not work here: {said[-1] if said else f'exit {done.returncode}'}"
    return None


def mode(cfg: Config) -> tuple[bool, str]:
    """(use the sandbox, what to record about it). ``[worker] sandbox = "bwrap"`` that does
    not work raises ``ConfigError``; ``"auto"`` falls back to none and says why."""
    wanted = cfg.worker.sandbox
    if wanted == "none":
        return False, "none (sandbox = \"none\")"
    why = unusable()
    if why is None:
        return True, "bwrap"
    if wanted == "bwrap":
        raise ConfigError(f"{cfg.file}: [worker] sandbox = \"bwrap\", but {why}")
    return False, f"none ({why})"


def wrap(cfg: Config, tree: Path, admin: Path, common: Path, command: list[str]) -> list[str]:
    """The bwrap command line that runs ``command`` in ``tree`` inside the sandbox.
    ``admin`` is the tree's directory in the repository's ``.git`` (``worktrees/<task>``),
    ``common`` the repository's ``.git``."""
    home = Path(os.path.expanduser("~"))
    args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    hidden: list[Path] = []
    for path in (home, CHECKOUT, cfg.paths.state, cfg.paths.logs, cfg.file.parent):
        path = Path(os.path.realpath(path))
        if path != Path("/") and not any(path.is_relative_to(h) for h in hidden):
            hidden = [h for h in hidden if not h.is_relative_to(path)] + [path]
    for path in sorted(hidden):
        args += ["--tmpfs", str(path)]
    for path in (cfg.tasks_file, cfg.paths.metrics, cfg.status_page):
        path = Path(os.path.realpath(path))
        if path.exists() and not any(path.is_relative_to(h) for h in hidden):
            args += ["--ro-bind", "/dev/null", str(path)]
    args += ["--ro-bind", str(common), str(common)]
    for part in (common / "objects", common / "refs", common / "logs", admin):
        if part.exists():
            args += ["--bind", str(part), str(part)]
    args += ["--bind", str(tree), str(tree)]
    for entry in cfg.worker.sandbox_binds:
        path = Path(os.path.expanduser(entry))
        if path.exists():
            args += ["--bind", str(path), str(path)]
    gitconfig = home / ".gitconfig"
    if gitconfig.exists():
        args += ["--ro-bind", str(gitconfig), str(gitconfig)]
    for path in _program_files(command):
        args += ["--ro-bind", str(path), str(path)]
    args += ["--unshare-pid", "--die-with-parent", "--chdir", str(tree), "--"]
    return args + RESET_SIGNALS + command


def _program_files(command: list[str]) -> list[Path]:
    """What must stay visible for ``command`` to run: the program as found on PATH, the
    install prefix of what it resolves to (the folder above its ``bin/``: a Python or Node
    installation, a virtualenv) or else that file, and the files its arguments name."""
    found = shutil.which(command[0])
    paths = []
    if found:
        real = Path(os.path.realpath(found))
        paths += [Path(os.path.abspath(found)),
                  real.parent.parent if real.parent.name == "bin" else real]
    paths += [Path(arg) for arg in command[1:] if os.path.isabs(arg) and os.path.isfile(arg)]
    return paths
