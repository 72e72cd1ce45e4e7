"""shared.worktree against real git: a bare origin and a clone (the ``sandbox`` fixture)."""

from __future__ import annotations

import os
import subprocess

import pytest

from shared import worktree
from shared.locks import hold
from tests.agents import wait_for
from tests.sandbox import git


def ensure(cfg, task):
    with hold(cfg.liveness_lock(task)) as lock:
        return worktree.ensure_worktree(cfg, task, lock)


def commit_file(tree, name, text="x\n"):
    (tree / name).write_text(text)
    git(tree, "add", name)
    git(tree, "commit", "-qm", f"add {name}")
    return git(tree, "rev-parse", "HEAD")


def test_new_tree_on_task_branch_from_origin_base_and_repo_stays_clean(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "gh-7")
    assert tree == sandbox.repo / "trees" / "gh-7"
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "auto/gh-7"
    assert git(tree, "rev-parse", "HEAD") == git(sandbox.repo, "rev-parse", "origin/main")
    (tree / "STOP").write_text("")
    (tree / "BLOCKED.md").write_text("a question\n")
    assert git(sandbox.repo, "status", "--porcelain") == ""  # trees/ is ignored
    assert worktree.dirty_paths(tree) == []  # control files are ignored in the tree
    exclude = (sandbox.repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert {"/STOP", "/BLOCKED.md", "/trees/"} <= set(exclude)


def test_ensure_twice_is_a_no_op_and_a_retry_keeps_all_work(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    head = commit_file(tree, "done.txt")
    (tree / "wip.txt").write_text("uncommitted\n")
    assert ensure(cfg, "t-1") == tree
    assert ensure(cfg, "t-1") == tree
    assert git(tree, "rev-parse", "HEAD") == head
    assert (tree / "wip.txt").read_text() == "uncommitted\n"


def test_registered_but_deleted_tree_is_repaired_with_its_branch(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    head = commit_file(tree, "done.txt")
    for path in sorted(tree.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    tree.rmdir()
    assert "trees/t-1" in git(sandbox.repo, "worktree", "list")  # still registered
    assert ensure(cfg, "t-1") == tree
    assert git(tree, "rev-parse", "HEAD") == head  # the branch's commit is back


def test_branch_only_on_the_remote_is_checked_out(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    head = commit_file(tree, "done.txt")
    worktree.push(cfg, tree, "auto/t-1")
    git(sandbox.repo, "worktree", "remove", str(tree))
    git(sandbox.repo, "branch", "-D", "auto/t-1")
    assert ensure(cfg, "t-1") == tree
    assert git(tree, "rev-parse", "HEAD") == head


def test_a_directory_that_is_no_worktree_is_moved_aside_not_deleted(sandbox):
    cfg = sandbox.cfg
    tree = cfg.tree("t-1")
    tree.mkdir(parents=True)
    (tree / "precious.txt").write_text("someone's notes\n")
    assert ensure(cfg, "t-1") == tree
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "auto/t-1"
    kept = [p for p in cfg.trees_dir.iterdir() if p.name.startswith(".t-1.unusable-")]
    assert len(kept) == 1 and (kept[0] / "precious.txt").read_text() == "someone's notes\n"
    assert worktree.task_trees(cfg) == ["t-1"]


def test_tree_on_another_branch_switches_when_clean_and_is_left_alone_when_dirty(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    git(tree, "switch", "-q", "-c", "elsewhere")
    assert ensure(cfg, "t-1") == tree
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "auto/t-1"

    git(tree, "switch", "-q", "elsewhere")
    (tree / "README.md").write_text("edited by a person\n")
    with pytest.raises(worktree.WorktreeError, match="uncommitted changes on elsewhere"):
        ensure(cfg, "t-1")
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "elsewhere"
    assert (tree / "README.md").read_text() == "edited by a person\n"


def test_ensure_needs_the_tasks_own_liveness_lock(sandbox):
    cfg = sandbox.cfg
    with hold(cfg.liveness_lock("t-2")) as other:
        with pytest.raises(ValueError):
            worktree.ensure_worktree(cfg, "t-1", other)


MB = 1024 * 1024


def test_control_files_are_never_committed(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    (tree / "STOP").write_text("now\n")
    (tree / "BLOCKED.md").write_text("?\n")
    before = git(tree, "rev-parse", "HEAD")
    assert worktree.commit_all(tree, "nothing", MB) == (before, [])  # nothing to commit
    (tree / "change.txt").write_text("a change\n")
    after, skipped = worktree.commit_all(tree, "Leftovers\n\nfrom the agent\n", MB)
    assert skipped == []
    assert after != before and after == git(tree, "rev-parse", "HEAD")
    assert git(tree, "show", "--name-only", "--format=%s", "HEAD").split() == \
        ["Leftovers", "change.txt"]


def test_leftovers_that_look_like_secrets_or_are_large_are_not_committed(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    (tree / "README.md").write_text("changed by the agent\n")  # tracked: always committed
    files = {"src/app.py": b"print('hi')\n", ".env": b"TOKEN=x\n", ".env.local": b"T=y\n",
             "deploy/id_ed25519": b"KEY", "certs/site.PEM": b"PEM", "credentials.json": b"{}",
             "big.bin": b"x" * (MB + 1), "name with\ttab and \u00e9.txt": b"fine\n"}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    head, skipped = worktree.commit_all(tree, "the agent's work", MB)
    committed = git(tree, "show", "--name-only", "--format=", "-z", "HEAD").split("\0")
    assert sorted(filter(None, committed)) == sorted(
        ["README.md", "src/app.py", "name with\ttab and \u00e9.txt"])
    assert sorted(skipped) == sorted([
        ".env (looks like a secret)", ".env.local (looks like a secret)",
        "deploy/id_ed25519 (looks like a secret)", "certs/site.PEM (looks like a secret)",
        "credentials.json (looks like a secret)",
        "big.bin (1024 KB, over [worker] max_leftover_file_kb)"])
    assert head == git(tree, "rev-parse", "HEAD")
    assert (tree / ".env").exists()  # left where the agent put it, only not committed


def test_dirty_paths_names_every_kind_of_change(sandbox):
    tree = ensure(sandbox.cfg, "t-1")
    tracked = git(tree, "ls-files").splitlines()[0]
    (tree / tracked).write_text("changed in the tree\n")
    (tree / "a new file.txt").write_text("untracked, with spaces\n")
    (tree / "renamed.txt").write_text("to be renamed\n")
    git(tree, "add", "renamed.txt")
    git(tree, "commit", "--quiet", "-m", "a file to rename")
    git(tree, "mv", "renamed.txt", "moved here.txt")
    assert sorted(worktree.dirty_paths(tree)) == sorted([tracked, "a new file.txt",
                                                         "moved here.txt"])


def test_guarded_removal_keeps_dirty_unpushed_and_live_trees(sandbox):
    cfg = sandbox.cfg
    dirty = ensure(cfg, "t-1")
    (dirty / "wip.txt").write_text("uncommitted\n")
    unpushed = ensure(cfg, "t-2")
    commit_file(unpushed, "unpushed.txt")
    live = ensure(cfg, "t-3")
    pushed = ensure(cfg, "t-4")
    commit_file(pushed, "pushed.txt")
    worktree.push(cfg, pushed, "auto/t-4")
    clean = ensure(cfg, "t-5")

    assert worktree.remove_worktree(cfg, "t-1") == "1 uncommitted change(s)"
    assert worktree.remove_worktree(cfg, "t-2") == "1 commit(s) not on the remote"
    with hold(cfg.liveness_lock("t-3")):
        assert worktree.remove_worktree(cfg, "t-3") == "its worker is alive"
    assert worktree.remove_worktree(cfg, "t-4") is None
    assert worktree.remove_worktree(cfg, "t-5") is None
    assert dirty.exists() and unpushed.exists() and live.exists()
    assert not pushed.exists() and not clean.exists()
    assert git(sandbox.repo, "rev-parse", "auto/t-4")  # the branch stays for a retry
    assert worktree.remove_worktree(cfg, "t-5") is None  # already gone: fine


def test_removal_with_the_branch_keeps_a_branch_the_remote_lacks(sandbox):
    """A dropped task's tree goes with its branch; a branch with a commit the remote lacks
    stays, even when its tree is gone already."""
    cfg = sandbox.cfg
    ensure(cfg, "t-1")  # made in advance: nothing done in it
    pushed = ensure(cfg, "t-2")
    commit_file(pushed, "pushed.txt")
    worktree.push(cfg, pushed, "auto/t-2")
    unpushed = ensure(cfg, "t-3")
    commit_file(unpushed, "unpushed.txt")
    git(sandbox.repo, "worktree", "remove", "--force", str(unpushed))  # a person's rm

    assert worktree.remove_worktree(cfg, "t-1", with_branch=True) is None
    assert worktree.remove_worktree(cfg, "t-2", with_branch=True) is None
    assert worktree.remove_worktree(cfg, "t-3", with_branch=True) == \
        "branch auto/t-3: 1 commit(s) not on the remote"
    branches = git(sandbox.repo, "branch", "--list", "auto/*", "--format=%(refname:short)")
    assert branches.split() == ["auto/t-3"]
    assert worktree.task_trees(cfg) == []
    assert git(sandbox.origin, "rev-parse", "auto/t-2")  # only the local branch went


def test_clean_stale_spares_the_kept_tasks(sandbox):
    cfg = sandbox.cfg
    for task in ("t-1", "t-2", "t-3"):
        ensure(cfg, task)
    (cfg.tree("t-3") / "wip.txt").write_text("uncommitted\n")
    removed, kept = worktree.clean_stale(cfg, keep={"t-1"})
    assert removed == ["t-2"]
    assert kept == {"t-3": "1 uncommitted change(s)"}
    assert worktree.task_trees(cfg) == ["t-1", "t-3"]


@pytest.fixture
def hanging_remote(sandbox, tmp_path, monkeypatch):
    """The origin's receive-pack and upload-pack replaced by a script that never answers
    (a half-open connection), and a 1 s network timeout."""
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/hung.pid\nexec sleep 60\n")
    script.chmod(0o755)
    git(sandbox.repo, "config", "remote.origin.receivepack", str(script))
    git(sandbox.repo, "config", "remote.origin.uploadpack", str(script))
    monkeypatch.setattr(worktree, "NETWORK_TIMEOUT", 1.0)
    return tmp_path / "hung.pid"


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")  # a zombie waits for init
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("call", ["push", "fetch"])
def test_a_hung_remote_ends_in_a_git_error_after_the_timeout(sandbox, hanging_remote, call):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    commit_file(tree, "done.txt")
    with pytest.raises(worktree.GitError, match=r"timed out after 1 s"):  # not the script's 60 s
        if call == "push":
            worktree.push(cfg, tree, cfg.branch("t-1"))
        else:
            worktree.fetch_base(cfg)
    # the whole process group was killed (SIGKILL takes effect when the kernel next runs it)
    wait_for(lambda: _gone(int(hanging_remote.read_text())), what="the hung script to die")


def test_network_calls_keep_a_configured_ssh_command_and_add_stall_limits(sandbox, tmp_path):
    """A fake ``ssh`` (an ssh:// remote) shows the options git gave the transport."""
    cfg = sandbox.cfg
    seen = tmp_path / "ssh-args"
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {seen}\nexit 1\n")
    fake_ssh.chmod(0o755)
    git(sandbox.repo, "remote", "set-url", "origin", "ssh://example.invalid/repo.git")
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_SSH", "GIT_SSH_COMMAND")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        mp.setattr(worktree, "_SSH_COMMAND", f"{fake_ssh} -o BatchMode=yes")
        with pytest.raises(worktree.GitError):
            worktree.fetch_base(cfg)
        assert "-o BatchMode=yes" in seen.read_text()  # ours, when none is configured
        seen.unlink()
        git(sandbox.repo, "config", "core.sshCommand", f"{fake_ssh} -o User=mine")
        with pytest.raises(worktree.GitError):
            worktree.fetch_base(cfg)
        assert "User=mine" in seen.read_text() and "BatchMode" not in seen.read_text()


def test_ensure_ignored_edits_the_exclude_file_under_its_lock(sandbox):
    from shared.locks import LockTimeout, file_lock

    cfg = sandbox.cfg
    exclude = sandbox.repo / ".git" / "info" / "exclude"
    exclude.write_text("# a person's line\n")
    worktree._ignored_repos.clear()
    with file_lock(cfg.locks_dir / "git-exclude.lock"):
        with pytest.raises(LockTimeout):
            with pytest.MonkeyPatch.context() as mp:  # no 10 s wait in a test
                mp.setattr(worktree, "file_lock",
                           lambda path: file_lock(path, timeout=0.2))
                worktree.ensure_ignored(cfg)
    assert exclude.read_text() == "# a person's line\n"  # nothing written without the lock
    worktree.ensure_ignored(cfg)
    lines = exclude.read_text().splitlines()
    assert lines[0] == "# a person's line" and {"/STOP", "/BLOCKED.md", "/trees/"} <= set(lines)


PLANTED_HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-push",
                 "reference-transaction", "post-checkout", "post-index-change")


@pytest.mark.parametrize("where", ["hooks folder", "core.hooksPath"])
def test_hooks_and_fsmonitor_planted_by_the_agent_never_run_in_tac8s_git(sandbox, tmp_path,
                                                                          where):
    """What an agent can write: hooks in the repository's hooks folder or in a folder of its
    tree named by ``core.hooksPath``, and an fsmonitor command. Each leaves a marker when it
    runs; tac8's commit, push and worktree creation leave none, plain git does."""
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    ran = tmp_path / "ran"
    ran.mkdir()
    hooks = sandbox.repo / ".git" / "hooks"
    if where == "core.hooksPath":
        hooks = tree / ".husky"
        hooks.mkdir()
        git(tree, "config", "core.hooksPath", ".husky")
    for name in (*PLANTED_HOOKS, "fsmonitor"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\ntouch {ran}/{name}\n")
        hook.chmod(0o755)
    git(tree, "config", "core.fsmonitor", str(hooks / "fsmonitor"))
    (tree / "work.txt").write_text("the agent's work\n")
    assert worktree.commit_all(tree, "the agent's work", MB)[0] is not None
    worktree.push(cfg, tree, cfg.branch("t-1"))
    ensure(cfg, "t-2")
    assert sorted(p.name for p in ran.iterdir()) == []
    git(tree, "commit", "--allow-empty", "--quiet", "-m", "plain git")
    assert {"pre-commit", "post-commit", "fsmonitor"} <= {p.name for p in ran.iterdir()}


# What an agent can do to make tac8's git its own: a gitdir of its making (``.own``) whose
# config names commands git runs by itself (a clean filter on `git add`, a signing program
# on commit, an ssh command and a receive-pack on push, hooks, an fsmonitor), then the tree
# pointed at it: ``.git`` rewritten ("file"), made a symlink ("symlink") or a directory
# ("directory"), a FIFO ("fifo": an open would block), or the tree's admin directory's
# ``commondir`` redirected ("commondir"; the sandbox lets the agent write that directory).
# Each command leaves a marker in ``$1`` when it runs. ``sh -c OWN_GITDIR sh <markers> <how>``,
# in the tree.
OWN_GITDIR = r"""
[ -t 0 ] || cat >/dev/null
set -e
ran=$1 how=$2 tree=$PWD
admin=$(sed -n 's/^gitdir: //p' .git)
git init -q --bare .own
mkdir .bin
for name in filter gpg ssh receive-pack fsmonitor pre-commit commit-msg post-commit \
            pre-push post-checkout reference-transaction; do
    printf '#!/bin/sh\ntouch "%s/%s"\n[ %s != filter ] || exec cat\nexit 1\n' \
        "$ran" "$name" "$name" > ".bin/$name"
    chmod +x ".bin/$name"
done
git config -f .own/config core.bare false
git config -f .own/config core.hooksPath "$tree/.bin"
git config -f .own/config core.fsmonitor "$tree/.bin/fsmonitor"
git config -f .own/config filter.own.clean "$tree/.bin/filter"
echo '* filter=own' > .own/info/attributes
git config -f .own/config commit.gpgSign true
git config -f .own/config gpg.program "$tree/.bin/gpg"
git config -f .own/config core.sshCommand "$tree/.bin/ssh"
git config -f .own/config remote.origin.url "$tree/.own"
git config -f .own/config remote.origin.receivepack "$tree/.bin/receive-pack"
echo "the agent's work" > work.txt
case $how in
    file) printf 'gitdir: %s/.own\n' "$tree" > .git ;;
    symlink) rm .git && ln -s .own .git ;;
    directory) rm .git && mv .own .git ;;
    fifo) rm .git && mkfifo .git ;;
    commondir) printf '%s/.own\n' "$tree" > "$admin/commondir" ;;
esac
"""
HOW = ("file", "symlink", "directory", "fifo", "commondir")


def plant_own_gitdir(tree, ran, how):
    subprocess.run(["sh", "-c", OWN_GITDIR, "sh", str(ran), how], cwd=tree, check=True,
                   stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("how", HOW)
def test_a_tree_pointed_at_a_gitdir_of_the_agents_making_is_refused_and_kept(sandbox, tmp_path,
                                                                              how):
    """tac8's git never runs there (no marker), every call says why, and nothing of the tree
    is touched: not moved aside, not removed, not cleaned."""
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    ran = tmp_path / "ran"
    ran.mkdir()
    plant_own_gitdir(tree, ran, how)
    planted = sorted(p.name for p in tree.iterdir())
    worktree.checked_out_branch(tree)  # the launcher's look returns (a FIFO is not opened)
    refused = r"\.git|commondir"
    for call in (lambda: worktree.commit_all(tree, "the agent's work", MB),
                 lambda: worktree.push(cfg, tree, cfg.branch("t-1")),
                 lambda: worktree.head(tree),
                 lambda: worktree.dirty_paths(tree),
                 lambda: worktree.unpublished_commits(cfg, tree),
                 lambda: ensure(cfg, "t-1")):
        with pytest.raises(worktree.WorktreeError, match=refused):
            call()
    reason = worktree.remove_worktree(cfg, "t-1")
    assert reason and "t-1" in reason
    assert worktree.clean_stale(cfg, keep=set()) == ([], {"t-1": reason})
    assert sorted(p.name for p in tree.iterdir()) == planted
    assert worktree.task_trees(cfg) == ["t-1"]
    assert sorted(p.name for p in ran.iterdir()) == []
    assert not git(sandbox.origin, "branch", "--list", "auto/t-1")


def test_a_tree_pointed_at_another_tasks_gitdir_is_refused(sandbox):
    """``.git`` naming a real admin directory of the repository, but another tree's: tac8
    would commit this tree's files onto the other task's branch."""
    cfg = sandbox.cfg
    tree, other = ensure(cfg, "t-1"), ensure(cfg, "t-2")
    other_head = git(other, "rev-parse", "HEAD")
    (tree / ".git").write_text((other / ".git").read_text())
    (tree / "work.txt").write_text("the agent's work\n")
    with pytest.raises(worktree.WorktreeError, match="another tree's"):
        worktree.commit_all(tree, "the agent's work", MB)
    assert git(other, "rev-parse", "HEAD") == other_head and worktree.dirty_paths(other) == []


def test_a_config_worktree_in_the_trees_admin_directory_is_refused(sandbox, tmp_path):
    """With extensions.worktreeConfig on (``git sparse-checkout`` turns it on), git reads the
    admin directory's ``config.worktree``, which the sandbox lets the agent write, and no
    ``-c`` turns that off. tac8 never writes one: a tree that has one is refused."""
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    git(sandbox.repo, "config", "extensions.worktreeConfig", "true")
    ran = tmp_path / "ran"
    receive_pack = tmp_path / "receive-pack"
    receive_pack.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    receive_pack.chmod(0o755)
    (worktree.admin_dir(tree) / "config.worktree").write_text(
        f'[remote "origin"]\n\treceivepack = {receive_pack}\n')
    with pytest.raises(worktree.WorktreeError, match="config.worktree"):
        worktree.push(cfg, tree, cfg.branch("t-1"))
    assert not ran.exists()


def test_a_rework_round_catches_up_with_commits_people_pushed_to_the_branch(sandbox, tmp_path):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-7")
    commit_file(tree, "a.txt")
    worktree.push(cfg, tree, "auto/t-7")
    assert not worktree.catch_up(cfg, "t-7", tree)  # nothing new
    other = tmp_path / "person"
    subprocess.run(["git", "clone", "-q", "-b", "auto/t-7", str(sandbox.origin), str(other)],
                   check=True)
    commit_file(other, "suggestion.txt")
    git(other, "push", "-q", "origin", "auto/t-7")

    assert worktree.catch_up(cfg, "t-7", tree)
    assert (tree / "suggestion.txt").exists()
    assert git(tree, "rev-parse", "HEAD") == git(other, "rev-parse", "HEAD")
