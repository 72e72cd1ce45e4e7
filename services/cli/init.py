"""``tac8 init``: a person's settings and queue, made from what the checkout ships.

It copies ``conf/tac8.example.toml`` to the config's path (``conf/tac8.toml``, or ``--config``
/ ``$TAC8_CONFIG``) and creates the queue file that config names (``tasks.md``, with its
sections) and its ``state/`` and ``logs/`` folders (the service user's alone), each only if it
does not exist: it never overwrites, so it is safe to run again
(``make install`` does). Neither file is tracked by git, so ``git pull`` never touches them.
A config made outside the checkout gets the example's relative paths made absolute (they
point into the checkout). The prompt stays the shipped ``conf/worker_template.default.md``
until ``[worker] template`` names a copy of the person's.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from shared.config import CHECKOUT, EXAMPLE_CONFIG, config_path, load_config
from shared.fsio import atomic_write
from shared.tasks import SECTIONS

EMPTY_QUEUE = "# Tasks\n\n" + "\n".join(f"## {section}\n" for section in SECTIONS)
_RELATIVE = re.compile(r'^(\w+\s*=\s*)"\.\.(/[^"]*)?"', re.M)  # the example's `key = "../x"`


def example_for(file: Path) -> str:
    """The example config, as a file at ``file`` should hold it."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    if file.parent == EXAMPLE_CONFIG.parent:
        return text
    return _RELATIVE.sub(lambda m: f'{m.group(1)}"{CHECKOUT}{m.group(2) or ""}"', text)


def init(explicit: str | None) -> list[Path]:
    """Make what is missing; the files made."""
    file = config_path(explicit).expanduser().absolute()
    made = []
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, example_for(file))
        made.append(file)
    cfg = load_config(file)
    for folder in (cfg.paths.state, cfg.paths.logs):  # (supervisord logs beside the programs)
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True)
            made.append(folder)
    tasks = cfg.tasks_file
    if not tasks.exists():
        tasks.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(tasks, EMPTY_QUEUE)
        made.append(tasks)
    return made


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def command(args: argparse.Namespace) -> int:
    made = init(getattr(args, "config", None))
    for path in made:
        print(f"made {path}")
    if not made:
        print("nothing to do: the config and the queue exist")
    print("next: edit the config ([repo], [github]), then `tac8 doctor`")
    return 0
