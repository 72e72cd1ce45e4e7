"""supervisord as ``conf/supervisord.conf`` describes it, for ``tac8 doctor``: its unix socket
(and how long a path it can bind), the folders it writes into, the commands that run it, and
its programs' states, asked over the socket with supervisor's own XML-RPC client (the one
``supervisorctl`` uses).
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import socket
import sys
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

SUN_PATH = 108  # bytes of sockaddr_un.sun_path on Linux, the terminating NUL included
# A stopped supervisord (SIGSTOP) accepts the connection and never answers.
TIMEOUT = 5  # seconds


def _parser(conf: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(conf)
    return parser


def _expand(conf: Path, value: str) -> str:
    """A value with supervisord's own expansions (``%(here)s``, ``%(ENV_X)s``)."""
    value = value.replace("%(here)s", str(conf.parent))
    return re.sub(r"%\(ENV_(\w+)\)s", lambda m: os.environ.get(m.group(1), ""), value)


def _path(conf: Path, value: str) -> str:
    """A path value, absolute (tac8's conf has only absolute ones, through ``%(here)s``)."""
    path = Path(_expand(conf, value.strip()))
    return os.path.normpath(path if path.is_absolute() else conf.parent / path)


def supervisor_socket(conf: Path) -> tuple[str, str, str] | None:
    """(socket path, username, password) from ``[unix_http_server]``, or None."""
    parser = _parser(conf)
    if not parser.has_option("unix_http_server", "file"):
        return None
    section = dict(parser.items("unix_http_server"))
    return (_path(conf, section["file"]),
            _expand(conf, section.get("username", "")), _expand(conf, section.get("password", "")))


def socket_limit() -> int:
    """The longest socket path supervisord can bind here: it binds ``<path>.<its pid>``
    first, then links it to the path, so the pid's digits count too."""
    try:
        digits = len(str(int(Path("/proc/sys/kernel/pid_max").read_text()) - 1))
    except (OSError, ValueError):
        digits = 7  # pid_max is at most 2**22
    return SUN_PATH - 1 - len(".") - digits


def supervisord_dirs(conf: Path) -> list[str]:
    """The folders supervisord writes into: its log, pid file, socket, child logs and the
    programs' logs. It creates none of them."""
    parser = _parser(conf)
    dirs = []
    for section in parser.sections():
        for key, value in parser.items(section):
            if "%(" in _expand(conf, value):  # %(program_name)s…: not a fixed path
                continue
            if key == "childlogdir" and section == "supervisord":
                dirs.append(_path(conf, value))
            elif (section, key) in (("supervisord", "logfile"), ("supervisord", "pidfile"),
                                    ("unix_http_server", "file")) \
                    or (section.startswith("program:") and key.endswith("_logfile")
                        and value.strip().upper() not in ("AUTO", "NONE", "SYSLOG")):
                dirs.append(os.path.dirname(_path(conf, value)))
    return sorted(set(dirs))


def supervisor_command(program: str) -> str:
    """How to run ``supervisord`` or ``supervisorctl``: the script beside this Python (the
    venv's), else through this Python itself."""
    script = Path(sys.executable).parent / program
    return shlex.quote(str(script)) if script.exists() \
        else shlex.join([sys.executable, "-m", f"supervisor.{program}"])


def process_info(path: str, user: str, password: str) -> list[dict]:
    """supervisord's ``getAllProcessInfo``, asked over its unix socket."""
    transport = SupervisorTransport(user or None, password, f"unix://{path}")
    # supervisor's client ignores the URL given to ServerProxy: the transport knows the socket
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
    # its connection takes no timeout, so the socket gets the process-wide default
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT)
    try:
        return proxy.supervisor.getAllProcessInfo()
    finally:
        socket.setdefaulttimeout(previous)
        transport.close()
