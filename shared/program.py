"""What every long-running tac8 program shares (DESIGN.md §2 rules 5 and 6).

* ``--config`` handling: a bad config is one line on stderr and exit status 2.
* Single instance: the program holds ``state/locks/<program>.lock`` while it runs.
* Heartbeat: the mtime of ``state/heartbeats/<program>``, touched at most once a minute.
* SIGTERM / SIGINT: ``stopping`` is set and the loop ends within a fraction of a second.
* Wake-ups: watchdog events on the watched paths only *wake* the loop, which then rescans
  (events are hints: a missed or duplicated one changes nothing); the loop also runs on a
  slow timer.

Usage::

    with Program.from_argv("observer", argv) as prog:
        prog.watch(prog.cfg.trees_dir, recursive=True)
        prog.run(cycle, interval=10)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from shared.config import Config, ConfigError, add_config_argument, load_config
from shared.locks import AlreadyHeld, hold

HEARTBEAT_EVERY = 60.0  # seconds; an SD card does not need more


class _WakeOnEvent(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None], wanted: Callable[[Any], bool] | None = None):
        self._wake = wake
        self._wanted = wanted

    def on_any_event(self, event: Any) -> None:
        if self._wanted is None or self._wanted(event):
            self._wake()


class Program:
    def __init__(self, name: str, cfg: Config, args: argparse.Namespace | None = None):
        os.environ["TAC8_PROGRAM"] = name
        self.name = name
        self.cfg = cfg
        self.args = args
        self.log = logging.getLogger(name)
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._observer: Any = None
        self._lock = None
        self._last_beat = -HEARTBEAT_EVERY

    @classmethod
    def from_argv(cls, name: str, argv: list[str] | None = None,
                  parser: argparse.ArgumentParser | None = None) -> "Program":
        parser = parser or argparse.ArgumentParser(prog=f"python -m services.{name}")
        add_config_argument(parser)
        args = parser.parse_args(argv)
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return cls(name, cfg, args)

    def __enter__(self) -> "Program":
        logging.basicConfig(
            level=os.environ.get("TAC8_LOG_LEVEL", "INFO"),
            format=f"%(asctime)s {self.name} %(levelname)s %(message)s",
            stream=sys.stderr,
        )
        try:
            self._lock = hold(self.cfg.program_lock(self.name), wait=0.5)
        except AlreadyHeld as exc:
            print(f"{self.name}: another instance is running ({exc})", file=sys.stderr)
            raise SystemExit(1) from None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        self.heartbeat()
        self.log.info("started (pid %d, config %s)", os.getpid(), self.cfg.file)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=1.0)
        if self._lock is not None:
            self._lock.release()
        self.log.info("stopped")

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self.stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def watch(self, path: Path, recursive: bool = False, *,
              wanted: Callable[[Any], bool] | None = None, create: bool = True,
              event_filter: list[type] | None = None) -> Any:
        """Wake the loop on filesystem events under ``path`` (created if missing, unless
        ``create`` is false: then a missing ``path`` raises ``FileNotFoundError``).

        ``wanted(event)``, if given, picks the events that wake (e.g. not the program's own
        reads). ``event_filter`` (watchdog event classes) narrows what the kernel reports at
        all: cheaper than ``wanted`` in a folder whose files the program itself opens often.
        Returns a handle for ``unwatch``.
        """
        if create:
            Path(path).mkdir(parents=True, exist_ok=True)
        if self._observer is None:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        return self._observer.schedule(_WakeOnEvent(self.wake, wanted), str(path),
                                       recursive=recursive, event_filter=event_filter)

    def unwatch(self, handle: Any) -> None:
        """Stop watching what ``watch`` returned ``handle`` for (also after the watched
        directory was deleted)."""
        self._observer.unschedule(handle)

    def wait(self, timeout: float) -> None:
        """Sleep until woken, stopped, or ``timeout`` seconds pass."""
        self._wake.wait(timeout)
        self._wake.clear()

    def sleep(self, seconds: float) -> bool:
        """Sleep ignoring wake-ups; returns False if the program is stopping."""
        return not self.stopping.wait(seconds)

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat < HEARTBEAT_EVERY:
            return
        path = self.cfg.heartbeat(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path)
        self._last_beat = now

    def run(self, cycle: Callable[[], Any], interval: float | Callable[[], float]) -> None:
        """Call ``cycle`` on every wake-up and at least every ``interval`` seconds.

        ``interval`` may be a function, asked after each cycle (e.g. "until the next poll is
        due"); the loop still turns at least once a heartbeat period, so the heartbeat of a
        program that sleeps long stays fresh."""
        while not self.stopping.is_set():
            self._wake.clear()
            seconds = interval if not callable(interval) else None
            try:
                cycle()
            except Exception:  # a bad cycle must not end a 24/7 program; it is logged
                self.log.exception("cycle failed")
                self.sleep(5.0)
            self.heartbeat()
            if seconds is None:
                seconds = interval()
            if not self.stopping.is_set():
                self.wait(min(max(seconds, 0.0), HEARTBEAT_EVERY))
