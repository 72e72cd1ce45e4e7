"""Config loading: defaults, types, unknown keys, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import DEFAULT_TEMPLATE, EXAMPLE_CONFIG, ConfigError, load_config


def test_shipped_config_loads_with_design_defaults():
    cfg = load_config(EXAMPLE_CONFIG)  # what `tac8 init` copies to conf/tac8.toml
    checkout = EXAMPLE_CONFIG.parent.parent
    assert cfg.paths.tasks == checkout / "tasks.md"
    assert cfg.repo.trees == checkout / "trees"
    assert cfg.worker.template == DEFAULT_TEMPLATE == checkout / "conf" / "worker_template.default.md"
    assert (cfg.launcher.max_workers, cfg.launcher.max_attempts, cfg.github.label) == (2, 3, "agent")
    assert cfg.github.trusted_associations == ["OWNER", "MEMBER", "COLLABORATOR"]
    assert cfg.run_record("gh-1") == checkout / "state" / "runs" / "gh-1.md"


def test_paths_resolve_against_the_config_file_not_the_cwd(tmp_path, monkeypatch):
    conf = tmp_path / "etc" / "tac8.toml"
    conf.parent.mkdir()
    conf.write_text('[paths]\ntasks = "q/tasks.md"\n[repo]\npath = "/srv/repo"\n')
    monkeypatch.chdir("/")
    cfg = load_config(conf)
    assert cfg.paths.tasks == tmp_path / "etc" / "q" / "tasks.md"
    assert cfg.repo.trees == Path("/srv/repo/trees")


def test_env_variable_picks_the_file(tmp_path, monkeypatch):
    conf = tmp_path / "x.toml"
    conf.write_text("[launcher]\nmax_workers = 7\n")
    monkeypatch.setenv("TAC8_CONFIG", str(conf))
    assert load_config().launcher.max_workers == 7
    assert load_config(EXAMPLE_CONFIG).launcher.max_workers == 2  # --config wins


@pytest.mark.parametrize("text, message", [
    ("[launcher]\nmax_worker = 2\n", "[launcher] max_worker: unknown key"),
    ("[launcher]\nmax_workers = \"two\"\n", "[launcher] max_workers: expected an integer, got 'two'"),
    ("[github]\nallowed_authors = \"bob\"\n", "[github] allowed_authors: expected a list of strings"),
    ("[launcher]\nmax_workers = true\n", "[launcher] max_workers: expected an integer"),
    ("[worker]\nstall_timeout = -1\n", "[worker] stall_timeout: must not be negative"),
    ("[nosuch]\nx = 1\n", "[nosuch]: unknown section"),
    ("[github]\nrepo = \"justname\"\n", "[github] repo: expected \"owner/name\""),
    ("[launcher\n", "not valid TOML"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, message):
    conf = tmp_path / "tac8.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(conf)
    assert str(conf) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_a_missing_config_says_how_to_make_one(tmp_path, monkeypatch):
    import shared.config as config
    with pytest.raises(ConfigError, match=r"config file not found: `tac8 init` makes one"):
        load_config(tmp_path / "tac8.toml")
    # installed with `pip install .`: the code is in site-packages, conf/ is not beside it
    monkeypatch.setattr(config, "EXAMPLE_CONFIG", tmp_path / "gone" / "tac8.example.toml")
    with pytest.raises(ConfigError, match=r"outside its checkout .*`pip install -e .`"):
        load_config(tmp_path / "tac8.toml")
