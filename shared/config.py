"""Settings from ``conf/tac8.toml`` (the key names are a user interface: keep them).

Which file: ``--config PATH``, else ``$TAC8_CONFIG``, else the checkout's ``conf/tac8.toml``
(the programs under supervisord find it the same way). That file, the prompt template a person
writes and ``tasks.md`` are theirs and never tracked by git, so an upgrade (``git pull``) never
touches them; the checkout tracks ``conf/tac8.example.toml`` (every key, documented: ``tac8
init`` copies it) and ``conf/worker_template.default.md`` (the prompt used unless
``[worker] template`` names another).
Every key has a default, so a missing file section or key is fine; an unknown key or a value
of the wrong type is a ``ConfigError`` whose one-line message names the file and the key.
Relative paths resolve against the directory of the config file, never the working directory.

``Config`` also names every file of the protocol (docs/PROTOCOL.md), so no program spells a
state path by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = CHECKOUT / "conf" / "tac8.toml"  # a person's, never tracked: `tac8 init`
EXAMPLE_CONFIG = CHECKOUT / "conf" / "tac8.example.toml"  # tracked: every key, documented
DEFAULT_TEMPLATE = CHECKOUT / "conf" / "worker_template.default.md"  # tracked; upgrades update it




@dataclass(frozen=True)
class PathsSection:
    tasks: Path = Path("../tasks.md")
    state: Path = Path("../state")
    logs: Path = Path("../logs")
    metrics: Path = Path("../metrics.json")
    keep_days: int = 14  # a task's files are kept this long after it left tasks.md


@dataclass(frozen=True)
class RepoSection:
    path: Path = Path("..")
    trees: Path = Path("trees")  # relative to repo.path
    base_branch: str = "main"
    remote: str = "origin"
    branch_prefix: str = "auto/"


@dataclass(frozen=True)
class GithubSection:
    repo: str = ""  # "owner/name"; empty: no GitHub, tasks.md only, branches pushed
    host: str = "github.com"
    label: str = "agent"
    allowed_authors: list[str] = field(default_factory=list)
    trusted_associations: list[str] = field(
        default_factory=lambda: ["OWNER", "MEMBER", "COLLABORATOR"]
    )
    poll_interval: float = 30
    # Seconds one GitHub call may take. A write whose answer did not come in time may still
    # land: it is looked for among tac8's own comments after twice this, never just re-sent.
    timeout: float = 30
    # The conversation after a run (README, "After the pull request"): a comment starting with
    # this word is a command to tac8; reviews asking for changes and failing checks start a
    # rework round unless switched off.
    command: str = "/tac8"
    rework_on_review: bool = True
    rework_on_ci: bool = True


@dataclass(frozen=True)
class LauncherSection:
    max_workers: int = 2
    max_attempts: int = 3
    retry_backoff: float = 60
    retry_backoff_max: float = 1800
    min_free_memory_mb: int = 300
    max_rework_rounds: int = 3  # rounds started by reviews, checks and PR commands, per task


@dataclass(frozen=True)
class WorkerSection:
    template: Path = DEFAULT_TEMPLATE  # a person's own: a path relative to the config
    max_runtime: float = 7200
    stall_timeout: float = 900
    stop_grace: float = 30
    sandbox: str = "auto"  # "auto" (bwrap when it works here), "bwrap" or "none"
    # What the agent's private HOME keeps of the real one (read-write), e.g. its login.
    sandbox_binds: list[str] = field(default_factory=lambda: ["~/.claude", "~/.claude.json"])
    allow_root: bool = False  # run the agent as uid 0 (only in a throwaway container)
    max_leftover_file_kb: int = 1024  # larger new files the agent left are not committed


@dataclass(frozen=True)
class MetricsSection:
    min_write_interval: float = 5
    history: int = 100
    prometheus_file: str = ""


@dataclass(frozen=True)
class NotifySection:
    url: str = ""  # where a notification is POSTed (http or https); empty: none are sent
    # "json", "ntfy" (plain text and ntfy's headers), or "auto": ntfy when the URL's host is
    # ntfy.sh or has "ntfy" in its name
    format: str = "auto"


# keys with a closed set of values
CHOICES = {"worker": {"sandbox": ("auto", "bwrap", "none")},
           "notify": {"format": ("auto", "json", "ntfy")}}

_SECTIONS = {
    "paths": PathsSection,
    "repo": RepoSection,
    "github": GithubSection,
    "launcher": LauncherSection,
    "worker": WorkerSection,
    "metrics": MetricsSection,
    "notify": NotifySection,
}


@dataclass(frozen=True)
class Config:
    file: Path
    paths: PathsSection
    repo: RepoSection
    github: GithubSection
    launcher: LauncherSection
    worker: WorkerSection
    metrics: MetricsSection
    notify: NotifySection

    # --- the files of the protocol (docs/PROTOCOL.md) ---
    @property
    def tasks_file(self) -> Path:
        return self.paths.tasks

    @property
    def status_page(self) -> Path:
        """The status page the metrics program renders beside metrics.json."""
        return self.paths.metrics.with_name("status.html")

    @property
    def state_dir(self) -> Path:
        return self.paths.state

    @property
    def locks_dir(self) -> Path:
        return self.paths.state / "locks"

    @property
    def tasks_lock(self) -> Path:
        return self.locks_dir / "tasks.md.lock"

    @property
    def issues_dir(self) -> Path:
        return self.paths.state / "issues"

    @property
    def runs_dir(self) -> Path:
        return self.paths.state / "runs"

    @property
    def live_dir(self) -> Path:
        """The liveness locks: one per live (or crashed) worker, so probing them is O(live)."""
        return self.paths.state / "live"

    @property
    def prs_dir(self) -> Path:
        return self.paths.state / "prs"

    @property
    def outbox_dir(self) -> Path:
        return self.paths.state / "outbox"

    @property
    def events_dir(self) -> Path:
        return self.paths.state / "events"

    @property
    def heartbeats_dir(self) -> Path:
        return self.paths.state / "heartbeats"

    @property
    def archive_dir(self) -> Path:
        return self.paths.state / "archive"

    @property
    def notify_dir(self) -> Path:
        return self.paths.state / "notify"

    @property
    def pause_file(self) -> Path:
        return self.paths.state / "PAUSE"

    @property
    def usage_limit_file(self) -> Path:
        """The usage limits met in a row (``shared.pause.pause_for_limit``)."""
        return self.paths.state / "usage_limit.md"

    @property
    def trees_dir(self) -> Path:
        return self.repo.trees

    def tree(self, task: str) -> Path:
        return self.repo.trees / task

    def branch(self, task: str) -> str:
        return f"{self.repo.branch_prefix}{task}"

    def run_record(self, task: str) -> Path:
        return self.runs_dir / f"{task}.md"

    def run_record_lock(self, task: str) -> Path:
        """Guards read-modify-write of the run record (the liveness lock is separate)."""
        return self.locks_dir / f"run-{task}.lock"

    def liveness_lock(self, task: str) -> Path:
        return self.live_dir / f"{task}.lock"

    def feedback_file(self, task: str) -> Path:
        return self.paths.state / "feedback" / f"{task}.md"

    def pr_marker(self, task: str) -> Path:
        return self.prs_dir / f"{task}.md"

    def issue_snapshot(self, number: int) -> Path:
        return self.issues_dir / f"gh-{int(number)}.md"

    def agent_log(self, task: str) -> Path:
        return self.paths.logs / f"{task}.jsonl"

    def heartbeat(self, program: str) -> Path:
        return self.heartbeats_dir / program

    def program_lock(self, program: str) -> Path:
        return self.locks_dir / f"{program}.lock"


def _type_name(annotation: Any) -> str:
    return {
        "Path": "a path (string)",
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "list[str]": "a list of strings",
        "bool": "true or false",
    }[str(annotation)]


def _convert(value: Any, annotation: str, where: str) -> Any:
    ok = {
        "Path": isinstance(value, str),
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "bool": isinstance(value, bool),
    }[annotation]
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")
    if annotation == "Path":
        return Path(value)
    if annotation == "float":
        return float(value)
    return value


def _section(cls: type, values: dict[str, Any], file: Path, name: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"{file}: [{name}] {key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
        kwargs[key] = _convert(value, str(fields[key].type), where)
        if fields[key].type in ("int", "float") and kwargs[key] < 0:
            raise ConfigError(f"{where}: must not be negative, got {value!r}")
        if key in CHOICES.get(name, {}) and value not in CHOICES[name][key]:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, CHOICES[name][key]))}, "
                              f"got {value!r}")
    return cls(**kwargs)


def _web_url(text: str) -> bool:
    try:
        url = urlsplit(text)
    except ValueError:  # e.g. a bracketed host that is no IPv6 address
        return False
    return url.scheme in ("http", "https") and bool(url.hostname) \
        and not any(c.isspace() or not c.isprintable() for c in text)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("TAC8_CONFIG"):
        return Path(os.environ["TAC8_CONFIG"])
    return DEFAULT_CONFIG


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Load and validate the config; see the module docstring for which file."""
    file = config_path(explicit).expanduser().absolute()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not EXAMPLE_CONFIG.exists():  # `pip install .` copied the code away from conf/
            raise ConfigError(f"{file}: config file not found, and tac8 runs outside its "
                              f"checkout ({CHECKOUT}): install it from a clone with "
                              "`pip install -e .` (make venv), or pass --config") from None
        raise ConfigError(f"{file}: config file not found: `tac8 init` makes one from "
                          f"{EXAMPLE_CONFIG.name}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{file}: [{name}]: unknown section (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{file}: {name}: expected a [{name}] section")
    for name, cls in _SECTIONS.items():
        sections[name] = _section(cls, raw.get(name, {}), file, name)

    base = file.parent
    paths = sections["paths"]
    sections["paths"] = dataclasses.replace(paths, **{
        f.name: _resolve(base, getattr(paths, f.name))
        for f in dataclasses.fields(paths) if isinstance(getattr(paths, f.name), Path)})
    repo = sections["repo"]
    repo_path = _resolve(base, repo.path)
    sections["repo"] = dataclasses.replace(
        repo, path=repo_path, trees=_resolve(repo_path, repo.trees)
    )
    worker = sections["worker"]
    sections["worker"] = dataclasses.replace(worker, template=_resolve(base, worker.template))
    metrics = sections["metrics"]
    if metrics.prometheus_file:
        sections["metrics"] = dataclasses.replace(
            metrics, prometheus_file=str(_resolve(base, Path(metrics.prometheus_file)))
        )
    if sections["notify"].url and not _web_url(sections["notify"].url):
        raise ConfigError(f"{file}: [notify] url: expected an http or https URL, "
                          f"got {sections['notify'].url!r}")
    if sections["github"].repo and sections["github"].repo.count("/") != 1:
        raise ConfigError(f"{file}: [github] repo: expected \"owner/name\", got {sections['github'].repo!r}")
    return Config(file=file, **sections)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="tac8.toml to use (default: $TAC8_CONFIG, else the checkout's conf/tac8.toml)",
    )
