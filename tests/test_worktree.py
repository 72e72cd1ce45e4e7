"""shared.worktree against real git: a bare origin and a clone (the ``sandbox`` fixture)."""

from __future__ import annotations

import pytest

from shared import worktree
from shared.locks import hold
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


def test_control_files_are_never_committed(sandbox):
    cfg = sandbox.cfg
    tree = ensure(cfg, "t-1")
    (tree / "STOP").write_text("now\n")
    (tree / "BLOCKED.md").write_text("?\n")
    before = git(tree, "rev-parse", "HEAD")
    assert worktree.commit_all(tree, "nothing") == before  # nothing to commit
    (tree / "change.txt").write_text("a change\n")
    after = worktree.commit_all(tree, "Leftovers\n\nfrom the agent\n")
    assert after != before and after == git(tree, "rev-parse", "HEAD")
    assert git(tree, "show", "--name-only", "--format=%s", "HEAD").split() == \
        ["Leftovers", "change.txt"]


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


def test_clean_stale_spares_the_kept_tasks(sandbox):
    cfg = sandbox.cfg
    for task in ("t-1", "t-2", "t-3"):
        ensure(cfg, task)
    (cfg.tree("t-3") / "wip.txt").write_text("uncommitted\n")
    removed, kept = worktree.clean_stale(cfg, keep={"t-1"})
    assert removed == ["t-2"]
    assert kept == {"t-3": "1 uncommitted change(s)"}
    assert worktree.task_trees(cfg) == ["t-1", "t-3"]
