"""Git worktrees for tasks: ``<repo>/<trees>/<task>`` on branch ``<branch_prefix><task>``,
made from ``<remote>/<base_branch>``. Both calls below run under the task's liveness lock (the
caller's, or taken by ``remove_worktree``): holding it proves that no worker uses the tree.

* ``ensure_worktree`` creates the tree or reuses it for a retry, and repairs what a crash or a
  person left: a registration whose directory is gone is pruned; a directory that is not a
  usable worktree is moved aside (never deleted); an existing local or remote branch is
  checked out, not re-created. No "already exists" can repeat.
* ``remove_worktree`` is the only removal, and it keeps a tree whose worker is alive, a tree
  with uncommitted changes and a tree with commits not on the remote (and so a branch).
* The trees folder, and ``STOP`` and ``BLOCKED.md`` at the top of every tree, are ignored
  through the common ``.git/info/exclude`` (edited under ``state/locks/git-exclude.lock``).

Git runs through ``shared.proc.run`` with neither hooks nor an fsmonitor command (the agent can
write both); commit messages go through stdin; network calls give up on a stalled transfer.
In a tree, git runs only once ``admin_dir`` has checked that the tree's ``.git`` leads back
into the configured repository, and is then handed that gitdir (see ``admin_dir``).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from shared.config import Config
from shared.fsio import atomic_write
from shared.errors import ExternalError
from shared.locks import AlreadyHeld, HeldLock, file_lock, hold
from shared.proc import run
from shared.treefiles import read_capped

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
    ``timeout`` seconds pass (git and every process it started are killed then). In a task's
    tree (of a trees folder ``common_dir`` has seen) the tree is checked first."""
    pinned = _pinned(Path(cwd)) if _real(Path(cwd).parent) in _common_dirs else {}
    try:
        done = run(["git", *_SAFE_OPTIONS, *args], cwd=cwd, stdin=stdin, timeout=timeout,
                   env={**os.environ, **_GIT_ENV, **(env or {}), **pinned})
    except ExternalError as exc:
        raise GitError(str(exc)) from None
    out = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace")
        said = (err.strip() or out.strip()).splitlines()
        raise GitError(f"git {' '.join(args)}: {said[-1] if said else f'exit {done.returncode}'}")
    return out.strip()


def tree_git(tree: Path, *args: str, stdin: str | None = None, env: dict | None = None) -> str:
    """``git`` in a task's tree; ``WorktreeError`` unless this process knows the tree's
    repository (``common_dir``) and ``admin_dir`` vouches for the tree."""
    _repository_of(tree)
    return git(tree, *args, stdin=stdin, env=env)


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
    exclude = common_dir(cfg) / "info" / "exclude"
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


# --- a tree's gitdir is tac8's, not the tree's ------------------------------------------
# A worktree's ``.git`` is a file ``gitdir: <common>/worktrees/<name>`` that the agent can
# rewrite, and sandboxed it may write that admin directory (its ``commondir`` too). Pointed at
# a gitdir of its making, git would read that gitdir's config and run what it names (a clean
# filter, a signing program, an ssh command). So the repository comes from the config, a tree
# is used only when its pointers lead back into it, and git is then handed the checked gitdir
# (GIT_DIR, GIT_COMMON_DIR, GIT_WORK_TREE): it reads no pointer that could change meanwhile.

POINTER_CAP = 4096  # bytes read of a `.git`, `gitdir` or `commondir` pointer file
_common_dirs: dict[Path, Path] = {}  # trees folder → its repository's git directory


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def common_dir(cfg: Config) -> Path:
    """The repository's own git directory (resolved), which holds every worktree's admin
    directory. From then on this process checks each tree of ``cfg.trees_dir`` against it."""
    trees = _real(cfg.trees_dir)
    if trees not in _common_dirs:
        repo = cfg.repo.path
        dot_git = repo / ".git"
        found = dot_git if dot_git.is_dir() else Path(git(repo, "rev-parse", "--git-common-dir"))
        _common_dirs[trees] = _real(repo / found)
    return _common_dirs[trees]


def _repository_of(tree: Path) -> Path:
    common = _common_dirs.get(_real(tree.parent))
    if common is None:
        raise WorktreeError(f"{tree}: not in the trees folder of a repository tac8 was "
                            "configured with; tac8 runs no git there")
    return common


def _pointer(path: Path, prefix: str = "") -> Path | None:
    """The path a git pointer file names (resolved; relative to the file's folder), or None
    unless ``path`` is a regular one-line file that starts with ``prefix``."""
    text = read_capped(path, POINTER_CAP)
    if text is None or text.count("\n") > 1 or not text.startswith(prefix):
        return None
    named = text.removeprefix(prefix).strip()
    return _real(path.parent / named) if named else None


def _shape(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a file of other content" if stat.S_ISREG(mode) else "a FIFO or device")


def _refused(tree: Path, why: str) -> WorktreeError:
    return WorktreeError(f"{tree}: {why}; tac8 runs no git there and leaves the tree as it is")


def admin_dir(tree: Path) -> Path | None:
    """The tree's admin directory (``<common>/worktrees/<name>``), checked: ``.git`` is a
    regular file naming a folder of the repository's ``worktrees/`` whose ``gitdir`` names
    this tree back and whose ``commondir`` names the repository. None when the tree is no
    worktree (no ``.git``, or its registration is gone: a crash, a person). ``WorktreeError``
    when ``.git`` is anything else (a symlink, a directory, a pointer elsewhere)."""
    common = _repository_of(tree)
    if tree.is_symlink() or not tree.is_dir() or not os.path.lexists(tree / ".git"):
        return None
    admin = _pointer(tree / ".git", "gitdir: ")
    if admin is None:
        raise _refused(tree, f"its .git is {_shape(tree / '.git')} (git writes a one-line "
                             "'gitdir:' file there)")
    if admin.parent != _real(common / "worktrees"):
        raise _refused(tree, f"its .git points to {admin}, not into {common / 'worktrees'}")
    if not (admin / "HEAD").is_file():
        return None  # its registration is gone
    if _pointer(admin / "gitdir") != _real(tree) / ".git":
        raise _refused(tree, f"its .git points to {admin}, which is another tree's")
    if _pointer(admin / "commondir") != common:
        raise _refused(tree, f"{admin}/commondir does not point back to {common}")
    if os.path.lexists(admin / "config.worktree"):  # read with extensions.worktreeConfig
        raise _refused(tree, f"{admin} holds a config.worktree, which tac8 never writes")
    return admin


def _pinned(tree: Path) -> dict[str, str]:
    """The environment that hands git the tree's checked gitdir."""
    admin = admin_dir(tree)
    if admin is None:
        raise WorktreeError(f"{tree} is not a git worktree")
    return {"GIT_DIR": str(admin), "GIT_COMMON_DIR": str(_repository_of(tree)),
            "GIT_WORK_TREE": str(tree)}


# --- inspecting a tree ------------------------------------------------------------------

def checked_out_branch(tree: Path) -> str | None:
    """The branch checked out in ``tree``, read from the gitdir its ``.git`` names (no git
    process; regular files only: a FIFO cannot block), or None (detached, not a tree). A hint
    for whether to (re)create the tree: git runs there only once ``admin_dir`` vouched for it."""
    gitdir = _pointer(tree / ".git", "gitdir: ")
    head = read_capped(gitdir / "HEAD", POINTER_CAP) if gitdir else None
    if head is None or not head.startswith("ref: refs/heads/"):
        return None
    return head.strip().removeprefix("ref: refs/heads/")


def _ref_exists(repo: Path, ref: str) -> bool:
    try:
        git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return True
    except GitError:
        return False


def head(tree: Path) -> str:
    return tree_git(tree, "rev-parse", "HEAD")


_PATH_AFTER = {"1": 8, "2": 9, "u": 10}  # fields before the path in `git status --porcelain=v2`


@dataclass
class Status:
    head: str | None  # None on an unborn branch
    changed: list[str]  # tracked paths with uncommitted changes
    new: list[str]  # untracked, not ignored

    @property
    def dirty(self) -> list[str]:
        return self.changed + self.new


def _status(tree: Path) -> Status:
    """One ``git status`` (NUL-separated: any byte may be in a path)."""
    status = Status(None, [], [])
    fields = iter(tree_git(tree, "status", "--porcelain=v2", "-z", "--branch",
                           "--untracked-files=all").split("\0"))
    for entry in fields:
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            status.head = None if oid == "(initial)" else oid
        elif entry.startswith("? "):
            status.new.append(entry[2:])
        elif entry[:1] in _PATH_AFTER:
            status.changed.append(entry.split(" ", _PATH_AFTER[entry[0]])[_PATH_AFTER[entry[0]]])
            if entry[0] == "2":
                next(fields, None)  # a rename's original path comes as the next field
    return status


def dirty_paths(tree: Path) -> list[str]:
    """Paths with uncommitted changes or untracked (not ignored) files."""
    return _status(tree).dirty


def unpublished_commits(cfg: Config, tree: Path) -> int:
    """Commits reachable from the tree's HEAD that no ``<remote>/*`` branch has."""
    common_dir(cfg)
    return int(tree_git(tree, "rev-list", "--count", "HEAD", "--not",
                        f"--remotes={cfg.repo.remote}"))


def commits_ahead(cfg: Config, tree: Path) -> int:
    """Commits on the tree's HEAD that the base it started from does not have."""
    common_dir(cfg)
    return int(tree_git(tree, "rev-list", "--count", f"{start_point(cfg)}..HEAD"))


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


def catch_up(cfg: Config, task: str, tree: Path) -> bool:
    """Before a rework round: fast-forward the task's branch in ``tree`` to the remote's, which
    people may have pushed to (a suggestion applied on the PR), so the round's push is not
    refused. Only a fast-forward, only of a clean tree; True if the branch moved."""
    branch = cfg.branch(task)
    network_git(cfg.repo.path, "fetch", "--quiet", cfg.repo.remote,
                f"+refs/heads/{branch}:refs/remotes/{cfg.repo.remote}/{branch}")
    remote = f"{cfg.repo.remote}/{branch}"
    if dirty_paths(tree) or tree_git(tree, "rev-parse", "HEAD") == tree_git(tree, "rev-parse", remote):
        return False
    tree_git(tree, "merge", "--quiet", "--ff-only", remote)
    return True


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
    if admin_dir(tree) is not None:  # raises for a .git that leads elsewhere: left as it is
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
        tree_git(tree, "config", "user.email")
        return {}
    except GitError:
        return {k: v for k, v in _FALLBACK_IDENTITY.items() if k not in os.environ}


# New files an agent leaves that tac8 never commits for it: they look like secrets.
SECRET_NAMES = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_dsa*", "id_ecdsa*",
                "id_ed25519*", "*.p12", "*.pfx", "credentials*", "*.kdbx", ".netrc",
                ".git-credentials", ".npmrc", ".pypirc", "*.jks", "*.keystore")


def leftover_refusal(tree: Path, path: str, max_bytes: int) -> str | None:
    """Why a new file the agent left is not committed for it (None: it is)."""
    name = os.path.basename(path).lower()
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_NAMES):
        return "looks like a secret"
    try:
        st = os.lstat(tree / path)
    except OSError:
        return "gone"
    if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
        return f"{st.st_size // 1024} KB, over [worker] max_leftover_file_kb"
    return None


def commit_all(tree: Path, message: str, max_new_bytes: int) -> tuple[str | None, list[str]]:
    """Commit the changes the agent left in ``tree``: every change to a tracked file, and the
    new files ``leftover_refusal`` lets through (control files stay excluded). Returns the
    HEAD commit then, and the new files left out, each with why."""
    status = _status(tree)
    refused = {p: why for p in status.new if (why := leftover_refusal(tree, p, max_new_bytes))}
    wanted = status.changed + [p for p in status.new if p not in refused]
    if wanted:
        tree_git(tree, "add", "--all", "--pathspec-from-file=-", "--pathspec-file-nul",
                 stdin="\0".join(wanted))
        tree_git(tree, "-c", "gc.autoDetach=false", "commit", "--quiet", "--no-verify",
                 "--file=-", stdin=message, env=_identity_env(tree))
    return (head(tree) if wanted else status.head), [f"{p} ({why})" for p, why in refused.items()]


def push(cfg: Config, tree: Path, branch: str, to: str | None = None) -> None:
    """Push ``branch`` to the remote, as the remote's branch ``to`` (default: the same
    name), updating its remote-tracking ref."""
    common_dir(cfg)  # so that git checks the tree first
    network_git(tree, "push", "--quiet", "--no-verify", cfg.repo.remote,
                f"refs/heads/{branch}:refs/heads/{to or branch}")


# --- guarded removal ----------------------------------------------------------------------

def remove_worktree(cfg: Config, task: str, with_branch: bool = False) -> str | None:
    """Remove the task's tree unless that would lose something; returns why it was kept,
    or None once it is gone. The branch stays (a later retry checks it out again), unless
    ``with_branch`` (the task is dropped) and the remote has all its commits."""
    tree = cfg.tree(task)
    try:
        lock = hold(cfg.liveness_lock(task), wait=0.05)
    except AlreadyHeld:
        return "its worker is alive"
    with lock:
        if not os.path.lexists(tree):
            git(cfg.repo.path, "worktree", "prune")
            return _remove_branch(cfg, task) if with_branch else None
        common_dir(cfg)
        try:
            if admin_dir(tree) is None:
                return "not a git worktree"
        except WorktreeError as exc:  # a .git that leads elsewhere: keep, do not touch
            return str(exc)
        reason = tree_status(cfg, task).keep_reason
        if reason:
            return reason
        git(cfg.repo.path, "worktree", "remove", str(tree))
        return _remove_branch(cfg, task) if with_branch else None


def _remove_branch(cfg: Config, task: str) -> str | None:
    """Delete the task's branch (its tree is gone) unless it has commits the remote lacks;
    why it was kept, or None."""
    repo, branch = cfg.repo.path, cfg.branch(task)
    if not _ref_exists(repo, f"refs/heads/{branch}"):
        return None
    unpublished = int(git(repo, "rev-list", "--count", f"refs/heads/{branch}", "--not",
                          f"--remotes={cfg.repo.remote}"))
    if unpublished:
        return f"branch {branch}: {unpublished} commit(s) not on the remote"
    git(repo, "branch", "--quiet", "-D", branch)
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
