"""The systemd unit that runs tac8, as ``tac8 doctor --as-service`` reads it: the user it runs
as and the environment systemd gives that user (``User=``, ``Environment=``,
``EnvironmentFile=`` of ``[Service]``). The installed unit if there is one, else the
checkout's ``conf/tac8.service`` filled in the way ``conf/install.sh`` fills it.

Only what doctor needs of systemd's syntax: comments, ``\\`` continuations, quoted
assignments, the ``%h``/``%u``/``%%`` specifiers and an optional (``-``) environment file.
"""

from __future__ import annotations

import os
import pwd
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import CHECKOUT

INSTALLED = Path("/etc/systemd/system/tac8.service")
TEMPLATE = CHECKOUT / "conf" / "tac8.service"
ENVIRONMENT_FILE = "/etc/default/tac8"  # the unit's optional EnvironmentFile (GH_TOKEN=…)
# What systemd gives a system service that sets no PATH of its own.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UnitError(Exception):
    """The unit cannot be read or names what this machine does not have."""


@dataclass(frozen=True)
class Unit:
    path: Path
    installed: bool  # False: the checkout's template, filled in as make install would
    user: str
    home: str
    environment: dict[str, str] = field(default_factory=dict)  # Environment= lines, in order
    environment_files: list[tuple[Path, bool]] = field(default_factory=list)  # (file, required)

    def service_env(self) -> dict[str, str]:
        """The environment the unit's programs start with: what systemd sets for ``User=``,
        ``Environment=``, then the environment files (which override it, as in systemd).
        ``UnitError`` when a required file cannot be read (it is root's: run as root)."""
        env = {"HOME": self.home, "USER": self.user, "LOGNAME": self.user, "PATH": SYSTEMD_PATH,
               "LANG": os.environ.get("LANG", "C.UTF-8"), **self.environment}
        for file, required in self.environment_files:
            try:
                env.update(_environment_file(file.read_text(encoding="utf-8")))
            except FileNotFoundError:
                if required:
                    raise UnitError(f"{self.path}: EnvironmentFile {file} does not exist") from None
            except OSError as exc:
                raise UnitError(f"{self.path}: EnvironmentFile {file}: {exc.strerror}") from None
        return env

    def path_fix(self, directory: str) -> str:
        """A command that puts ``directory`` first on the unit's PATH (and applies it)."""
        if "PATH" in self.environment:
            # PATH= wherever it is on its Environment= line (quoted, beside others)
            edit = f"s|^\\(Environment=.*\\)\\bPATH=|\\1PATH={directory}:|"
        else:
            edit = f"/^\\[Service\\]/a Environment=PATH={directory}:{SYSTEMD_PATH}"
        sed = f"sed -i {shlex.quote(edit)} {shlex.quote(str(self.path))}"
        if not self.installed:  # the checkout's template: make install installs it
            return f"{sed} && sudo make -C {shlex.quote(str(CHECKOUT))} install"
        if self.path == INSTALLED:
            return f"sudo {sed} && sudo systemctl daemon-reload && sudo systemctl restart tac8"
        return sed


def find_unit(explicit: str | None = None) -> Unit:
    """``explicit``, else the installed unit, else the checkout's template filled in."""
    if explicit:
        return read_unit(Path(explicit).absolute(), installed=True)
    if INSTALLED.exists():
        return read_unit(INSTALLED, installed=True)
    user = os.environ.get("TAC8_USER") or os.environ.get("SUDO_USER") or pwd.getpwuid(os.geteuid()).pw_name
    filled = {"@CHECKOUT@": str(CHECKOUT), "@USER@": user, "@HOME@": _home(user, TEMPLATE)}
    return read_unit(TEMPLATE, installed=False, fill=filled)


def read_unit(path: Path, installed: bool, fill: dict[str, str] | None = None) -> Unit:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UnitError(f"{path}: {exc.strerror}") from None
    for placeholder, value in (fill or {}).items():
        text = text.replace(placeholder, value)
    service = _service_section(text)
    user = service.get("User", [""])[-1] or "root"  # no User=: systemd runs it as root
    home = _home(user, path)

    def specifiers(value: str) -> str:
        return value.replace("%%", "\0").replace("%h", home).replace("%u", user).replace("\0", "%")

    environment: dict[str, str] = {}
    for line in service.get("Environment", []):
        try:
            words = shlex.split(specifiers(line))
        except ValueError as exc:
            raise UnitError(f"{path}: Environment={line}: {exc}") from None
        environment.update(word.split("=", 1) for word in words if "=" in word)
    files = [(Path(specifiers(value.removeprefix("-"))), not value.startswith("-"))
             for value in service.get("EnvironmentFile", [])]
    return Unit(path=path, installed=installed, user=user, home=home,
                environment=environment, environment_files=files)


def _home(user: str, unit: Path) -> str:
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        raise UnitError(f"{unit}: User={user}: no such user on this machine") from None


def _service_section(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of ``[Service]``, each key's values in order."""
    values: dict[str, list[str]] = {}
    section, pending = "", ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):  # continued on the next line
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def _environment_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an EnvironmentFile (quotes around a value removed)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env
