"""The ``tac8`` command line: argument parsing, the command table, and the small commands
that steer tac8 through its files.

* ``stop`` writes ``trees/<task>/STOP`` atomically (content ``now`` with ``--now``: the
  worker then gives the agent a 1 s grace instead of ``worker.stop_grace``); the observer
  does the rest.
* ``pause`` / ``resume`` write / remove ``state/PAUSE`` (``shared.pause``).
* ``add`` appends a Pending line to ``tasks.md`` in a ``tasks.md.lock`` transaction.
* ``status``, ``logs``, ``serve``, ``doctor`` and ``demo`` have a module each in this package.

``tac8 --version`` prints ``tac8 <version>``. A user's mistake is one line on stderr and a
non-zero exit, an ``OSError`` worded by ``shared.errors.describe`` ("Is a directory: /path").
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from services.cli import demo, doctor, init, logs, serve, status
from services.cli.common import UserError, section_of, task_id
from shared.config import CHECKOUT, ConfigError, add_config_argument, load_config
from shared.errors import describe
from shared.fsio import atomic_write
from shared.locks import LockTimeout
from shared.pause import pause, read_pause, resume
from shared.runs import worker_alive
from shared.tasks import ACTIVE, archived_ids, edit_tasks


# --- stop, pause, resume, add ----------------------------------------------------------------

def cmd_stop(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    task = task_id(args.task)
    section = section_of(cfg, task)
    if section is None:
        raise UserError(f"{task} is not in {cfg.tasks_file}")
    if section != ACTIVE:
        raise UserError(f"{task} is not running (it is in {section}); nothing to stop")
    tree = cfg.tree(task)
    if not tree.is_dir():
        raise UserError(f"{task} has no worktree yet at {tree}; try again in a moment")
    atomic_write(tree / "STOP", "now" if args.now else "")
    how = "now (1 s grace)" if args.now else f"gracefully ({cfg.worker.stop_grace:g} s grace)"
    alive = "" if worker_alive(cfg, task) else " (no live worker: the observer will settle it)"
    print(f"stop requested for {task}, {how}: wrote {tree / 'STOP'}{alive}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    current = read_pause(cfg)
    if current and not args.reason:
        print(f"already paused: {current.get('reason') or 'no reason given'} (by {current.get('by', '?')})")
        return 0
    reason = args.reason or f"paused by {os.environ.get('USER') or 'a person'}"
    pause(cfg, by="cli", reason=reason)
    print(f"paused: {reason} (running workers go on; `tac8 resume` to launch again)")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print("resumed" if resume(cfg) else "not paused")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if not args.title.strip():
        raise UserError("the title is empty")
    taken = archived_ids(cfg.archive_dir)

    def change(board):  # a pure function of the board: transact may apply it twice
        task = board.add(args.title, priority=args.priority)
        board.assign_ids(taken)
        return f"{task.id}: {task.title} {{p{task.effective_priority}}}"

    print(f"added {edit_tasks(cfg, change)} to Pending in {cfg.tasks_file}")
    return 0


# --- the command table -------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not a usage block
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _priority(text: str) -> int:
    if text.lstrip("p") not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or 3 (p0 is the most urgent), got {text!r}")
    return int(text.lstrip("p"))


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="gh-N, t-N, or an issue number")
    p.add_argument("--now", action="store_true", help="give the agent 1 s instead of worker.stop_grace")


def _pause_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", help="why (shown by `tac8 status`)")


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("title", help="what the agent should do")
    p.add_argument("--priority", type=_priority, help="0 (most urgent) to 3; default 2")


# name → (help, arguments, handler)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "init": ("make conf/tac8.toml and tasks.md from the shipped examples, if missing",
             init.arguments, init.command),
    "status": ("the dashboard: health, counters, queue, workers, events", status.arguments, status.command),
    "stop": ("stop a running task (writes STOP in its worktree)", _stop_args, cmd_stop),
    "pause": ("launch no new workers until `tac8 resume`", _pause_args, cmd_pause),
    "resume": ("launch workers again", lambda p: None, cmd_resume),
    "add": ("add a task to tasks.md's Pending section", _add_args, cmd_add),
    "logs": ("the agent's log of a task, readable", logs.arguments, logs.command),
    "serve": ("serve the status page and metrics.json over HTTP, read-only", serve.arguments,
              serve.command),
    "doctor": ("check this machine and the install", doctor.arguments, doctor.command),
    "demo": ("run tac8 end to end in a sandbox: no GitHub account or AI key needed", demo.arguments, demo.command),
}


def version() -> str:
    """tac8's version: the installed distribution's, else (a checkout run as
    ``python -m services.cli``) the one its pyproject.toml declares."""
    # imported here: they cost every other command start-up time, on a Pi tens of ms
    import tomllib
    from importlib import metadata

    try:
        return metadata.version("tac8")
    except metadata.PackageNotFoundError:
        pass
    try:
        with open(CHECKOUT / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "unknown (not installed)"


class _Version(argparse.Action):
    """``--version``: prints ``tac8 <version>`` on stdout and exits."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print tac8's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"tac8 {version()}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="tac8", description="Look at and steer a running tac8.")
    top.add_argument("--version", action=_Version)
    add_config_argument(top)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, arguments, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        # `tac8 status --config X` as well as `tac8 --config X status`
        p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="as tac8 --config")
        arguments(p)
        p.set_defaults(handler=handler)
    return top


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(errors="replace")  # tasks.md may hold bytes that are not UTF-8
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # `tac8 status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (UserError, LockTimeout, OSError) as exc:
        print(f"tac8 {args.command}: {describe(exc)}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"tac8 {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
