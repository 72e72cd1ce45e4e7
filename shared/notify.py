"""Notifications: a small POST to ``[notify] url`` when a task needs a person's eyes.

What is news: a task completed, blocked, failed or stopped (the observer's events), and the
launcher pausing itself, or a worker at the usage limit (``paused`` by ``launcher`` or
``worker`` with a reason ``auto: …``); a person's
``tac8 pause`` or SIGUSR1 is not. The metrics program, which counts every event once by its
key, stages one notification per such event in the maildir ``state/notify/`` (the file named
after the event's key) before it writes the tally that counted the event: a crash repeats a
notification, never loses one, and the body carries the ``key`` so a receiver can drop a repeat.

It sends them from its loop (``Notifier.send_due``): a few per cycle, ``SEND_TIMEOUT`` each,
stopping at the first failure; a failed one stays in ``new/`` with its next attempt time
(backoff ``RETRY_FIRST`` doubling to ``RETRY_MAX``) and goes to ``bad/`` after
``GIVE_UP_AFTER`` or ``MAX_TRIES``. Formats (pure functions, apart from the sending):
``json`` (``payload``), ``ntfy`` (plain text, headers ``Title``, ``Tags``, ``Click``) and
``auto`` (ntfy when the host is ntfy.sh or has "ntfy" in its name).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from email.header import Header
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.clock import iso_at, parse_iso
from shared.config import Config, NotifySection
from shared.errors import describe
from shared.fsio import atomic_write, pending, publish
from shared.runs import read_run
from shared.tasks import read_board
from shared.text import encodable, printable

log = logging.getLogger("notify")

# event type → the state a notification reports
STATES = {"task_completed": "completed", "task_blocked": "blocked", "task_failed": "failed",
          "task_stopped": "stopped", "paused": "paused"}
AUTO_PAUSE = "auto:"  # how tac8's reason for a pause of its own begins
# ntfy shows these tags as emoji: those of the markers in tasks.md
TAGS = {"completed": "white_check_mark", "blocked": "alarm_clock", "failed": "x",
        "stopped": "stop_button", "paused": "pause_button"}
TITLE_CHARS = 200  # a task title is cut beyond this
TEXT_CHARS = 1000  # a question, error or reason is cut beyond this
SEND_TIMEOUT = 5.0  # seconds one POST may take
SENDS_PER_CYCLE = 3  # attempts per loop cycle, so sending never holds up folding for long
RETRY_FIRST = 30.0  # seconds before the first retry; doubles per try...
RETRY_MAX = 3600.0  # ...up to this
GIVE_UP_AFTER = 24 * 3600.0  # seconds after staging a notification is set aside in bad/
MAX_TRIES = 40  # ...or after this many tries (the wall clock of a Pi may jump)


# --- what a notification says (pure) ---

def state_of(meta: dict[str, Any]) -> str | None:
    """The state a notification about the event ``meta`` reports; None if it is no news."""
    state = STATES.get(str(meta.get("type")))
    if state == "paused" and not (meta.get("by") in ("launcher", "worker")
                                  and str(meta.get("reason") or "").startswith(AUTO_PAUSE)):
        return None  # a person paused: they know
    return state


def _text(value: Any, limit: int) -> str | None:
    """Text from an event or a record, as valid UTF-8 and at most ``limit`` characters."""
    if value is None or value == "":
        return None
    text = encodable(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


FIELDS = {"key", "state", "task", "title", "pr_url", "question", "error", "reason", "at"}


def payload(key: str, meta: dict[str, Any], state: str, title: str | None) -> dict[str, Any]:
    """The notification as the JSON format sends it. Every field is always there (null when
    it does not apply): ``question`` for blocked, ``error`` for failed, ``reason`` for
    stopped (``request``, or what happened to the issue) and paused."""
    at = meta.get("at")
    if not isinstance(at, str):  # YAML may have read the time as a datetime
        moment = parse_iso(at)
        at = iso_at(moment.timestamp()) if moment else None
    return {
        "key": key,
        "state": state,
        "task": _text(meta.get("task"), TITLE_CHARS),
        "title": _text(title, TITLE_CHARS),
        "pr_url": _text(meta.get("pr"), TEXT_CHARS),
        "question": _text(meta.get("question"), TEXT_CHARS),
        "error": _text(meta.get("error"), TEXT_CHARS),
        "reason": _text(meta.get("reason"), TEXT_CHARS),
        "at": _text(at, TITLE_CHARS),
    }


def is_ntfy(notify: NotifySection) -> bool:
    if notify.format != "auto":
        return notify.format == "ntfy"
    host = (urlsplit(notify.url).hostname or "").lower()
    return host == "ntfy.sh" or "ntfy" in host


def headline(note: dict[str, Any]) -> str:
    """One line: what happened to which task."""
    if note["state"] == "paused":
        return "tac8 paused launching"
    what = f"{note['task']} {note['state']}"
    return f"{what}: {note['title']}" if note["title"] else what


def message(note: dict[str, Any]) -> str:
    """The plain-text body: the question, error, reason or PR (never empty: ntfy would
    replace an empty body with a text of its own)."""
    state = note["state"]
    if state == "completed":
        text = f"Pull request: {note['pr_url']}" if note["pr_url"] else "Completed (branch pushed)"
    elif state == "blocked":
        text = f"The agent asks: {note['question'] or '(no question)'}"
    elif state == "failed":
        text = f"Failed: {note['error'] or '(no error recorded)'}"
    elif state == "stopped":
        text = f"Stopped ({note['reason'] or 'request'})"
    else:
        text = f"Launching is paused: {note['reason']}"
    return f"{text}\n{note['at'] or ''}".strip()


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: one printable line; text beyond ASCII as RFC 2047
    encoded words (a header is latin-1 on the wire; ntfy decodes them), and so is text
    that would read as one (``=?``), so that it arrives as written."""
    line = " ".join(printable(text).split())
    if line.isascii() and "=?" not in line:
        return line
    return Header(line, "utf-8").encode(linesep=" ")


def _web_link(url: str | None) -> str | None:
    """``url`` if it can be a header value and is a web address (ntfy's ``Click``)."""
    if not (url and url.isascii() and url.isprintable() and " " not in url):
        return None
    try:
        return url if urlsplit(url).scheme in ("http", "https") else None
    except ValueError:
        return None


def request_parts(note: dict[str, Any], ntfy: bool) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the POST for ``note``."""
    if not ntfy:
        return (json.dumps(note).encode("ascii"),  # ASCII: every other character escaped
                {"Content-Type": "application/json"})
    headers = {"Content-Type": "text/plain; charset=utf-8",
               "Title": header_value(encodable(headline(note))), "Tags": TAGS[note["state"]]}
    link = _web_link(note["pr_url"])
    if link:
        headers["Click"] = link
    return printable(encodable(message(note))).encode("utf-8"), headers


# --- staging and sending ---

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: urllib would follow it as a GET without the body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)  # proxies from the environment still apply


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = SEND_TIMEOUT) -> str | None:
    """POST ``body``; None if the server took it (2xx), else why not."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"User-Agent": "tac8", **headers})
    try:
        with _OPENER.open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:  # its reason may be an OSError
        return describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"{type(exc).__name__}: {describe(exc)}"


def item_name(key: str) -> str:
    """The file of an event's notification: the same for a repeat (it replaces a staged
    one still waiting), and a safe name whatever the key holds."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def retry_delay(tries: int) -> float:
    return min(RETRY_FIRST * 2 ** max(tries - 1, 0), RETRY_MAX)


class Notifier:
    """The metrics program's notifications: ``stage`` while folding, ``send_due`` per cycle."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.url = cfg.notify.url
        self.ntfy = is_ntfy(cfg.notify) if self.url else False
        self.dir = cfg.notify_dir
        self._next = 0.0 if self.url else math.inf  # monotonic time a try is due
        if self.url:
            self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """What a kill left of a staging or a rewrite: the metrics program is the only writer
        here (single instance), so any such file is dead."""
        for stale in [*self.dir.glob("tmp/*"), *self.dir.glob("tmp/.*"), *self.dir.glob("new/.*")]:
            stale.unlink(missing_ok=True)

    def stage(self, key: str, meta: dict[str, Any]) -> Path | None:
        """Stage the notification about the event ``meta`` (keyed ``key``), if it is news;
        returns its file. Call it before the tally that counts the event is written."""
        state = state_of(meta) if self.url else None
        if state is None:
            return None
        note = payload(key, meta, state, self.title(meta.get("task")))
        item = {"note": note, "staged_at": time.time(), "tries": 0, "next_at": 0.0, "error": None}
        self._next = 0.0
        return publish(self.dir, json.dumps(item), name=item_name(key))

    def title(self, task: Any) -> str | None:
        """The task's title: its run record's (what the agent was given), else tasks.md's."""
        if not task:
            return None
        run = read_run(self.cfg, str(task))
        if run is not None and run.meta.get("title"):
            return str(run.meta["title"])
        found = read_board(self.cfg.tasks_file).get(str(task))
        return found.title if found else None

    def due_in(self) -> float:
        """Seconds until a retry is due (``math.inf`` when none waits)."""
        return max(0.0, self._next - time.monotonic())

    def send_due(self, limit: int = SENDS_PER_CYCLE) -> int:
        """Try up to ``limit`` of the notifications whose time has come, those waiting longest
        for a try first, and stop at a failure; returns how many were delivered."""
        if not self.url:
            return 0
        now = time.time()
        due, waits = [], []
        for path, item in self._items():
            # a clock set back must not hold a retry for longer than the longest backoff
            wait = min(item["next_at"] - now, RETRY_MAX)
            if wait > 0:
                waits.append(wait)
            else:
                due.append((path, item))
        due.sort(key=lambda pair: (pair[1]["next_at"], pair[1]["staged_at"]))
        delivered, failed = 0, False
        for path, item in due[:limit]:
            error = post(self.url, *request_parts(item["note"], self.ntfy))
            if error is not None:
                waits.append(self._failed(path, item, error))
                failed = True
                break
            path.unlink(missing_ok=True)  # a crash before this sends it again: it has its key
            delivered += 1
            if item["tries"]:
                log.info("notification %s (%s) sent after %d failed tries",
                         item["note"]["key"], item["note"]["state"], item["tries"])
        if len(due) > delivered + failed:
            # more are due: at once, or after a pause when the receiver has just failed (the
            # one that failed goes last next time, so one it rejects holds up no other)
            waits.append(RETRY_FIRST if failed else 0.0)
        self._next = time.monotonic() + min(waits, default=math.inf)
        return delivered

    def _items(self) -> list[tuple[Path, dict[str, Any]]]:
        items = []
        for path in pending(self.dir):
            try:
                items.append((path, _read_item(path)))
            except FileNotFoundError:
                continue
            except ValueError as exc:  # written atomically: only a person can have broken it
                self._set_aside(path, f"unreadable: {exc}")
        return items

    def _failed(self, path: Path, item: dict[str, Any], error: str) -> float:
        """Record a failed try; returns the seconds until the next one (inf: given up)."""
        tries = int(item["tries"]) + 1
        if tries >= MAX_TRIES or time.time() - item["staged_at"] >= GIVE_UP_AFTER:
            self._set_aside(path, f"{item['note']['key']} ({item['note']['state']}) given up "
                                  f"after {tries} tries: {error}")
            return math.inf
        if tries == 1:  # later failures of the same one would only repeat this
            log.warning("notification %s (%s) not sent: %s; retrying with backoff",
                        item["note"]["key"], item["note"]["state"], error)
        delay = retry_delay(tries)
        atomic_write(path, json.dumps({**item, "tries": tries, "error": error,
                                       "next_at": time.time() + delay}))
        return delay

    def _set_aside(self, path: Path, why: str) -> None:
        (self.dir / "bad").mkdir(parents=True, exist_ok=True)
        os.replace(path, self.dir / "bad" / path.name)
        log.error("notification %s moved to %s/bad: %s", path.name, self.dir, why)  # once


def _read_item(path: Path) -> dict[str, Any]:
    """A staged notification; ``ValueError`` if it is not one."""
    item = json.loads(path.read_text(encoding="utf-8"))
    note = item.get("note") if isinstance(item, dict) else None
    if not (isinstance(note, dict) and FIELDS <= set(note) and note["state"] in TAGS
            and all(isinstance(item.get(k), (int, float)) for k in ("staged_at", "next_at", "tries"))):
        raise ValueError("not a staged notification")
    return item
