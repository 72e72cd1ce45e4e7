"""The template's ``setup``: run in the tree before the agent, on every attempt, as the agent
is run (in its sandbox); its failure fails the attempt with its output on record."""

from __future__ import annotations

import shlex

import pytest

from shared.config import CHECKOUT
from shared.prompt import TemplateError, load_template
from shared.records import read_record, write_record
from tests.sandbox import git
from tests.test_worker import TASK, pids, prepare, run_worker  # noqa: F401 (a fixture)
from tests.agents import descendants, survivors


@pytest.fixture(autouse=True)
def nothing_left_behind(pids):
    yield
    assert survivors(pids) == [] and descendants() == []


def with_setup(cfg, setup, **more):
    """The sandbox's template (the fake agent's) with ``setup`` in its frontmatter."""
    record = read_record(cfg.worker.template)
    write_record(cfg.worker.template, {**record.meta, "setup": setup, **more}, record.body)
    return cfg


def test_setup_runs_in_the_tree_before_the_agent(sandbox, pids):
    cfg = with_setup(prepare(sandbox, pids, "commit"), "printf 'made by setup' > setup-note.txt")
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "pr", meta
    # the agent's commit came after: the setup's file is in the tree, committed as a leftover
    assert (cfg.tree(TASK) / "setup-note.txt").read_text() == "made by setup"
    assert "setup-note.txt" in git(cfg.tree(TASK), "show", "--name-only", "--format=", "HEAD")


def test_a_failed_setup_fails_the_attempt_with_its_output_and_no_agent(sandbox, pids):
    cfg = with_setup(prepare(sandbox, pids, "commit"),
                     "echo installing; echo 'npm ERR! missing: package.json' >&2; exit 3")
    record = run_worker(cfg)
    meta = record.meta
    assert meta["outcome"] == "failed"
    assert meta["error"].startswith("setup failed (exit 3): ")
    assert meta["error"].endswith("npm ERR! missing: package.json")
    assert "installing" in record.body  # its output, on record
    assert not cfg.agent_log(TASK).exists()  # the agent never started


def test_a_setup_past_its_timeout_is_killed_and_fails_the_attempt(sandbox, pids):
    cfg = with_setup(prepare(sandbox, pids, "commit"), ["sleep", "60"], setup_timeout=0.5)
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "failed" and "setup failed" in meta["error"]
    assert meta["error"].endswith("timed out after 0.5 s")


def test_setup_runs_in_the_agent_s_sandbox(sandbox, pids):
    """tac8's own checkout is hidden from the agent's sandbox, and so from its setup."""
    cfg = prepare(sandbox, pids, "commit")
    cfg = sandbox.write_config(worker={"sandbox": "bwrap"})
    probe = f"test -e {shlex.quote(str(CHECKOUT / 'shared' / 'config.py'))} && exit 9 || exit 0"
    with_setup(cfg, probe)
    meta = run_worker(cfg).meta
    assert meta["outcome"] == "pr", meta["error"]
    assert meta["sandbox"] == "bwrap"


@pytest.mark.parametrize("meta, message", [
    ({"setup": 5}, "setup: expected a shell command line or a list of strings"),
    ({"setup": "true", "setup_timeout": 0}, "setup_timeout: expected a positive number"),
])
def test_a_bad_setup_is_a_template_error(tmp_path, meta, message):
    path = tmp_path / "template.md"
    write_record(path, {"command": ["agent"], **meta}, "Do {{task_id}}.\n")
    with pytest.raises(TemplateError, match=message):
        load_template(path)
