"""Git worktrees for tasks: ``<repo>/<trees>/<task>`` on branch ``<branch_prefix><task>``,
made from ``<remote>/<base_branch>``. Both calls below run under the task's liveness lock (the
caller's, or taken by ``remove_worktree``): holding it proves that no worker uses the tree.

* ``ensure_worktree`` creates the tree or reuses it for a retry, and repairs what a crash or a
  person left: a registration whose directory is gone is pruned; a directory that is not a
  usable worktree is moved aside (never deleted); an existing local or remote branch is
  checked out, not re-created. No "already exists" can repeat.
* ``remove_worktree`` is the only removal, and it keeps a tree whose worker is alive, a tree
  with uncommitted changes and a tree with commits not on the remote.
* The trees folder, and ``STOP`` and ``BLOCKED.md`` at the top of every tree, are ignored
  through the common ``.git/info/exclude`` (edited under ``state/locks/git-exclude.lock``).

Git runs through ``shared.proc.run`` with neither hooks nor an fsmonitor command (the agent can
write both); commit messages go through stdin; network calls give up on a stalled transfer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from shared.config import Config
from shared.fsio import atomic_write
from shared.locks import AlreadyHeld, HeldLock, file_lock, hold
from shared.errors import ExternalError
from shared.proc import run

CONTROL_FILES = ("STOP", "BLOCKED.md")  # written into a tree by a person or the agent
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "tac8", "GIT_AUTHOR_EMAIL": "tac8@localhost",
    "GIT_COMMITTER_NAME": "tac8", "GIT_COMMITTER_EMAIL": "tac8@localhost",
}


class GitError(ExternalError):
    """A git command failed; the message is the command and git's last words."""


class WorktreeError(ExternalError):
    """The tree cannot be used as it is (and tac8 will not destroy what is in it)."""


LOCAL_TIMEOUT = 60.0  # seconds any other git call may take
NETWORK_TIMEOUT = 120.0  # seconds a push or fetch may take in all
# Options of every call: git runs no hook and no fsmonitor command, whatever the agent wrote
# into the hooks folder or the configuration (core.hooksPath, core.fsmonitor).
_SAFE_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
_NETWORK_OPTIONS = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60")
_SSH_COMMAND = "ssh -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o BatchMode=yes"


def git(cwd: Path, *args: str, stdin: str | None = None, env: dict | None = None,
        timeout: float = LOCAL_TIMEOUT) -> str:
    """Run git in ``cwd``; its stdout, stripped. ``GitError`` on a non-zero exit, or when
    ``timeout`` seconds pass (git and every process it started are killed then)."""
    try:
        done = run(["git", *_SAFE_OPTIONS, *args], cwd=cwd, stdin=stdin, timeout=timeout,
                   env={**os.environ, **_GIT_ENV, **(env or {})})
    except ExternalError as exc:
        raise GitError(str(exc)) from None
    out = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace")
        said = (err.strip() or out.strip()).splitlines()
        raise GitError(f"git {' '.join(args)}: {said[-1] if said else f'exit {done.returncode}'}")
    return out.strip()


def network_git(cwd: Path, *args: str) -> str:
    """``git`` for a call that talks to the remote: bounded in time, with stall limits."""
    options = list(_NETWORK_OPTIONS)
    if not {"GIT_SSH_COMMAND", "GIT_SSH"} & os.environ.keys():
        try:
            git(cwd, "config", "--get", "core.sshCommand")  # the user's choice wins
        except GitError:  # not configured (exit 1)
            options += ["-c", f"core.sshCommand={_SSH_COMMAND}"]
    return git(cwd, *options, *args, timeout=NETWORK_TIMEOUT)


# --- ignoring trees and control files -------------------------------------------------

_ignored_repos: set[Path] = set()


def ensure_ignored(cfg: Config) -> None:
    """Add the trees folder and the control files to the repository's ``info/exclude``
    (read-modify-write under its lock; the git call that finds the file comes before)."""
    repo = cfg.repo.path
    if repo in _ignored_repos:
        return
    dot_git = repo / ".git"
    common = dot_git if dot_git.is_dir() else Path(git(repo, "rev-parse", "--git-common-dir"))
    exclude = (common if common.is_absolute() else repo / common) / "info" / "exclude"
    wanted = [f"/{name}" for name in CONTROL_FILES]
    if cfg.trees_dir.is_relative_to(repo):
        wanted.append(f"/{cfg.trees_dir.relative_to(repo).as_posix()}/")
    with file_lock(cfg.locks_dir / "git-exclude.lock"):
        try:
            text = exclude.read_text()
        except FileNotFoundError:
            text = ""
        missing = [line for line in wanted if line not in text.splitlines()]
        if missing:
            sep = "" if not text or text.endswith("\n") else "\n"
            atomic_write(exclude, text + sep + "# tac8: task worktrees and their control files\n"
                         + "\n".join(missing) + "\n")
    _ignored_repos.add(repo)


# --- inspecting a tree ------------------------------------------------------------------

def _admin_dir(tree: Path) -> Path | None:
    """The worktree's directory inside the repository's ``.git``, if the tree is usable."""
    try:
        line = (tree / ".git").read_text().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if not line.startswith("gitdir:"):
        return None
    admin = Path(line.removeprefix("gitdir:").strip())
    admin = admin if admin.is_absolute() else (tree / admin).resolve()
    return admin if (admin / "HEAD").is_file() else None


def checked_out_branch(tree: Path) -> str | None:
    """The branch checked out in ``tree`` (no git process), or None (detached, not a tree)."""
    admin = _admin_dir(tree)
    if admin is None:
        return None
    head = (admin / "HEAD").read_text().strip()
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None


def _ref_exists(repo: Path, ref: str) -> bool:
    try:
        git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return True
    except GitError:
        return False


def head(tree: Path) -> str:
    return git(tree, "rev-parse", "HEAD")


_PATH_AFTER = {"1": 8, "2": 9, "u": 10}  # fields before the path in `git status --porcelain=v2`


def _status(tree: Path) -> tuple[str | None, list[str]]:
    """From one ``git status``: the HEAD commit (None on an unborn branch) and the paths
    with uncommitted changes or untracked (not ignored) files."""
    head, dirty = None, []
    out = git(tree, "status", "--porcelain=v2", "--branch", "--untracked-files=all")
    for line in out.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.removeprefix("# branch.oid ")
            head = None if oid == "(initial)" else oid
        elif line.startswith("? "):
            dirty.append(line[2:])
        elif line[:1] in _PATH_AFTER:  # a renamed entry ends with "<path>\t<old path>"
            fields = _PATH_AFTER[line[0]]
            dirty.append(line.split(" ", fields)[fields].split("\t")[0])
    return head, dirty


def dirty_paths(tree: Path) -> list[str]:
    """Paths with uncommitted changes or untracked (not ignored) files."""
    return _status(tree)[1]


def unpublished_commits(cfg: Config, tree: Path) -> int:
    """Commits reachable from the tree's HEAD that no ``<remote>/*`` branch has."""
    return int(git(tree, "rev-list", "--count", "HEAD", "--not", f"--remotes={cfg.repo.remote}"))


def commits_ahead(cfg: Config, tree: Path) -> int:
    """Commits on the tree's HEAD that the base it started from does not have."""
    return int(git(tree, "rev-list", "--count", f"{start_point(cfg)}..HEAD"))


@dataclass(frozen=True)
class TreeStatus:
    """What removing a tree would lose; ``keep_reason`` is None when nothing."""

    dirty: list[str]
    unpublished: int

    @property
    def keep_reason(self) -> str | None:
        if self.dirty:
            return f"{len(self.dirty)} uncommitted change(s)"
        if self.unpublished:
            return f"{self.unpublished} commit(s) not on the remote"
        return None


def tree_status(cfg: Config, task: str) -> TreeStatus:
    tree = cfg.tree(task)
    return TreeStatus(dirty_paths(tree), unpublished_commits(cfg, tree))


# --- creating and reusing ---------------------------------------------------------------

def start_point(cfg: Config) -> str:
    """Where a new task branch starts: ``<remote>/<base>`` if known, else the local base."""
    remote_base = f"{cfg.repo.remote}/{cfg.repo.base_branch}"
    return remote_base if _ref_exists(cfg.repo.path, f"refs/remotes/{remote_base}") \
        else cfg.repo.base_branch


def fetch_base(cfg: Config) -> None:
    """Bring ``<remote>/<base>`` up to date, so new branches start from the latest base."""
    network_git(cfg.repo.path, "fetch", "--quiet", cfg.repo.remote, cfg.repo.base_branch)


def _move_aside(tree: Path) -> Path:
    """Keep an unusable directory's content under a new name next to it (never delete)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = tree.with_name(f".{tree.name}.unusable-{stamp}-{os.getpid()}")
    os.rename(tree, target)
    return target


def ensure_worktree(cfg: Config, task: str, liveness: HeldLock) -> Path:
    """The task's tree on the task's branch, created or reused; see the module docstring.

    ``liveness`` must be the task's liveness lock, held by the caller. Raises
    ``WorktreeError`` when a tree holds uncommitted work on another branch, ``GitError``
    when git fails.
    """
    if liveness.path != cfg.liveness_lock(task):
        raise ValueError(f"{task}: ensure_worktree needs the task's own liveness lock")
    repo, tree, branch = cfg.repo.path, cfg.tree(task), cfg.branch(task)
    ensure_ignored(cfg)
    if tree.is_dir() and _admin_dir(tree) is not None:
        current = checked_out_branch(tree)
        if current == branch:
            return tree  # a retry: same tree, same branch, whatever work it holds
        if dirty_paths(tree):
            raise WorktreeError(
                f"{tree} has uncommitted changes on {current or 'a detached HEAD'}, "
                f"not on {branch}; left untouched")
        if _ref_exists(repo, f"refs/heads/{branch}"):
            git(tree, "switch", "--quiet", branch)
        else:
            git(tree, "switch", "--quiet", "--no-track", "-c", branch, start_point(cfg))
        return tree
    if tree.exists() or tree.is_symlink():
        if tree.is_dir() and not tree.is_symlink() and not any(tree.iterdir()):
            tree.rmdir()
        else:
            _move_aside(tree)
    git(repo, "worktree", "prune")  # forget registrations whose directory is gone
    tree.parent.mkdir(parents=True, exist_ok=True)
    if _ref_exists(repo, f"refs/heads/{branch}"):
        git(repo, "worktree", "add", "--quiet", str(tree), branch)
    else:
        remote_branch = f"{cfg.repo.remote}/{branch}"
        start = remote_branch if _ref_exists(repo, f"refs/remotes/{remote_branch}") \
            else start_point(cfg)
        git(repo, "worktree", "add", "--quiet", "--no-track", "-b", branch, str(tree), start)
    return tree


# --- committing and publishing (the worker) ---------------------------------------------

def _identity_env(tree: Path) -> dict[str, str]:
    """A fallback identity for tac8's own commits when git has none configured."""
    try:
        git(tree, "config", "user.email")
        return {}
    except GitError:
        return {k: v for k, v in _FALLBACK_IDENTITY.items() if k not in os.environ}


def commit_all(tree: Path, message: str) -> str | None:
    """Commit every change in ``tree`` (control files stay excluded); the HEAD commit then."""
    current, dirty = _status(tree)
    if not dirty:
        return current
    git(tree, "add", "--all")
    git(tree, "-c", "gc.autoDetach=false", "commit", "--quiet", "--no-verify", "--file=-",
        stdin=message, env=_identity_env(tree))
    return head(tree)


def push(cfg: Config, tree: Path, branch: str) -> None:
    """Push ``branch`` to the remote (updating its remote-tracking ref)."""
    network_git(tree, "push", "--quiet", "--no-verify", cfg.repo.remote,
                f"refs/heads/{branch}:refs/heads/{branch}")


# --- guarded removal ----------------------------------------------------------------------

def remove_worktree(cfg: Config, task: str) -> str | None:
    """Remove the task's tree unless that would lose something; returns why it was kept,
    or None once it is gone. The branch stays (a later retry checks it out again)."""
    tree = cfg.tree(task)
    try:
        lock = hold(cfg.liveness_lock(task), wait=0.05)
    except AlreadyHeld:
        return "its worker is alive"
    with lock:
        if not tree.exists():
            git(cfg.repo.path, "worktree", "prune")
            return None
        if _admin_dir(tree) is None:
            return "not a git worktree"
        reason = tree_status(cfg, task).keep_reason
        if reason:
            return reason
        git(cfg.repo.path, "worktree", "remove", str(tree))
        return None


def task_trees(cfg: Config) -> list[str]:
    """Names of the task trees present in the trees folder."""
    try:
        return sorted(e.name for e in os.scandir(cfg.trees_dir)
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def clean_stale(cfg: Config, keep: set[str]) -> tuple[list[str], dict[str, str]]:
    """Remove every task tree not named in ``keep`` through the guarded removal.
    Returns (removed, {kept: reason})."""
    removed: list[str] = []
    kept: dict[str, str] = {}
    for task in task_trees(cfg):
        if task in keep:
            continue
        try:
            reason = remove_worktree(cfg, task)
        except GitError as exc:
            reason = str(exc)
        if reason is None:
            removed.append(task)
        else:
            kept[task] = reason
    return removed, kept
