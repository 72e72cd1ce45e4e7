"""What every long-running tac8 program shares: one wait loop (protocol: docs/PROTOCOL.md).

* ``--config``: a bad config is one line on stderr and exit status 2.
* Single instance: the program holds ``state/locks/<program>.lock`` while it runs.
* One wait loop: the loop sleeps in ``select`` on a self-pipe. Signal handlers only record
  (``signal.set_wakeup_fd`` writes to the pipe), watchdog threads and other threads write to
  it (``wake``); the loop then rescans (events are hints: a missed or duplicated one changes
  nothing), and also runs on a slow timer.
* Shutdown as rq's worker does it: the first SIGTERM/SIGINT is warm (the current cycle ends,
  then the program exits), a second one is cold (``ColdShutdown`` is raised at once).
* Heartbeat: ``state/heartbeats/<program>`` holds the number of cycles run and is rewritten
  at most every ``$TAC8_HEARTBEAT_EVERY`` seconds (default 60: an SD card needs no more);
  its mtime is the liveness others read. Tests set 0 to wait for cycles, not for time.
* Log: on stderr (supervisord keeps it in ``logs/<program>.log``): tac8's own records from
  ``$TAC8_LOG_LEVEL`` (INFO), a library's only from WARNING up; an ``OSError`` in a record's
  arguments is worded by ``shared.errors.describe``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from shared.config import Config, add_config_argument, load_config
from shared.errors import ConfigError, Tac8Error, describe
from shared.fsio import atomic_write
from shared.locks import AlreadyHeld, hold

HEARTBEAT_EVERY = 60.0  # seconds; the most a loop ever sleeps, so the heartbeat stays fresh
ERROR_PAUSE = 5.0  # seconds to wait after a cycle that failed, so a persistent fault cannot spin


class ColdShutdown(SystemExit):
    """A second stop signal: leave now, mid-cycle (every program recovers from its files)."""


def heartbeat_every() -> float:
    try:
        return max(0.0, float(os.environ.get("TAC8_HEARTBEAT_EVERY", HEARTBEAT_EVERY)))
    except ValueError:
        return HEARTBEAT_EVERY


def read_cycles(path: Path) -> int:
    """The cycle count a heartbeat file holds (0 if it is missing or unreadable)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class Program:
    def __init__(self, name: str, cfg: Config, args: argparse.Namespace | None = None):
        os.environ["TAC8_PROGRAM"] = name
        self.name = name
        self.cfg = cfg
        self.args = args
        self.log = logging.getLogger(name)
        self.stop_signals = 0
        self.cycles = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._observer: Any = None
        self._lock = None
        self._beat_every = heartbeat_every()
        self._last_beat = -float("inf")

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
        # state/, logs/ and what the worker and its agent create are the service user's alone.
        os.umask(0o077)
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.addFilter(_ForPeople())
        logging.basicConfig(
            level=os.environ.get("TAC8_LOG_LEVEL", "INFO"),
            format=f"%(asctime)s {self.name} %(levelname)s %(message)s",
            handlers=[to_stderr],
        )
        try:
            self._lock = hold(self.cfg.program_lock(self.name), wait=0.5)
        except AlreadyHeld as exc:
            print(f"{self.name}: another instance is running ({exc})", file=sys.stderr)
            raise SystemExit(1) from None
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        self.heartbeat()
        self.log.info("started (pid %d, config %s)", os.getpid(), self.cfg.file)
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=1.0)
        if self._lock is not None:
            self._lock.release()
        self.log.info("stopped%s", " (cold)" if exc_type is ColdShutdown else "")

    @property
    def stopping(self) -> bool:
        return self.stop_signals > 0

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self.stop_signals += 1
        if self.stop_signals > 1:
            raise ColdShutdown(128 + signum)

    def wake(self) -> None:
        """Wake the loop (safe from any thread)."""
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full: the loop is awake already
            pass

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
            from watchdog.observers import Observer  # only a program that watches needs it

            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        return self._observer.schedule(_WakeOnEvent(self.wake, wanted), str(path),
                                       recursive=recursive, event_filter=event_filter)

    def unwatch(self, handle: Any) -> None:
        """Stop watching what ``watch`` returned ``handle`` for (also after the watched
        directory was deleted)."""
        self._observer.unschedule(handle)

    def wait(self, timeout: float) -> bool:
        """Sleep until woken, stopped, or ``timeout`` seconds pass; True if woken."""
        if self.stopping:
            return True
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, timeout))
        self._drain()
        return bool(ready)

    def sleep(self, seconds: float) -> bool:
        """Sleep ignoring wake-ups; returns False if the program is stopping."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self.wait(deadline - time.monotonic())
        return not self.stopping

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat < self._beat_every:
            return
        atomic_write(self.cfg.heartbeat(self.name), f"{self.cycles}\n", fsync=False)
        self._last_beat = now

    def run(self, cycle: Callable[[], Any], interval: float | Callable[[], float]) -> None:
        """Call ``cycle`` on every wake-up and at least every ``interval`` seconds, until a
        stop signal; a cycle that is running when it comes is finished first (warm).

        ``interval`` may be a function, asked after each cycle (e.g. "until the next poll is
        due"); the loop still turns at least once a heartbeat period."""
        while not self.stopping:
            self._drain()
            try:
                cycle()
            except Tac8Error as exc:  # expected (a bad file, a lock, git or GitHub): one line
                self.log.error("cycle failed: %s", exc)
                self.sleep(ERROR_PAUSE)
            except Exception:  # a bug: a 24/7 program logs it whole and goes on
                self.log.exception("cycle failed")
                self.sleep(ERROR_PAUSE)
            self.cycles += 1
            self.heartbeat()
            seconds = interval() if callable(interval) else interval
            self.wait(min(max(seconds, 0.0), HEARTBEAT_EVERY))


# tac8's own code: a record logged from anywhere else is a library's
_TAC8_CODE = tuple(str(Path(__file__).resolve().parent.parent / package) + os.sep
                   for package in ("shared", "services"))


class _ForPeople(logging.Filter):
    """What a program's log shows. A library's records only from WARNING up, and named as
    the library's (watchdog alone logs every inotify event at DEBUG, which would read as the
    program's own lines); an ``OSError`` given as an argument as ``describe`` words it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_tac8_code(record.pathname):
            if record.levelno < logging.WARNING:
                return False
            record.msg = f"{record.name}: {record.msg}"
        if isinstance(record.args, tuple):
            record.args = tuple(describe(a) if isinstance(a, OSError) else a for a in record.args)
        return True


@functools.lru_cache(maxsize=256)
def _is_tac8_code(pathname: str) -> bool:
    return os.path.realpath(pathname).startswith(_TAC8_CODE)


class _WakeOnEvent:
    """A watchdog handler that only wakes the loop (for the events ``wanted`` picks)."""

    def __init__(self, wake: Callable[[], None], wanted: Callable[[Any], bool] | None = None):
        self._wake = wake
        self._wanted = wanted

    def dispatch(self, event: Any) -> None:
        if self._wanted is None or self._wanted(event):
            self._wake()
