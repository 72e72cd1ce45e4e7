"""Notifications: formats, a local receiver, retries, which pauses are news, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

from services import metrics as metrics_module
from services.metrics import Metrics
from shared import notify
from shared.config import CHECKOUT, EXAMPLE_CONFIG, ConfigError, NotifySection, load_config
from shared.events import emit, run_key
from shared.fsio import pending
from shared.health import read_metrics
from shared.pause import pause, resume, toggle
from shared.records import write_record
from shared.text import printable
from tests.agents import wait_cycles, wait_for

# The real metrics program, with retries 0.2 s apart instead of 30 s: nothing else changed.
FAST_RETRY_METRICS = ("import sys, shared.notify; shared.notify.RETRY_FIRST = 0.2; "
                      "from services.metrics import main; sys.exit(main(sys.argv[1:]))")
HOSTILE_TITLE = ("Fix \x1b]0;pwned\x07the parser\r\nX-Injected: yes \x1b[2J— ünïcødé 🎉 "
                 "\"quoted\" <b>bold</b> \\ =?utf-8?q?not_mine?=")


class Received(NamedTuple):
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers ``answers`` in turn,
    then ``status``."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.status = 200
        self.requests: list[Received] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    status = receiver.answers.pop(0) if receiver.answers else receiver.status
                    receiver.requests.append(Received(self.path, dict(self.headers), body, status))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/my-tac8-topic"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy in the environment must not take it
    box = Receiver()
    yield box
    box.close()


def _blocked(cfg, task="gh-7", worker="w-1", question="Which database?"):
    """The observer's event for a blocked run, and its key."""
    key = run_key(task, worker, "blocked")
    emit(cfg.events_dir, "task_blocked", task, worker_id=worker, key=key, question=question)
    return key


def _title(received: Received) -> str:
    return str(make_header(decode_header(received.headers["Title"])))


# --- formats, in process ---

def test_a_completed_task_is_posted_as_json_with_its_title_and_key(sandbox, receiver):
    cfg = sandbox.write_config(notify={"url": receiver.url})
    write_record(cfg.run_record("gh-7"), {"task": "gh-7", "worker_id": "w-1", "title": HOSTILE_TITLE})
    key = run_key("gh-7", "w-1", "completed")
    emit(cfg.events_dir, "task_completed", "gh-7", worker_id="w-1", key=key,
         pr="https://github.com/o/r/pull/9", commit="abc1234")
    m = Metrics(cfg)
    assert m.fold_pending() == 1
    assert len(pending(cfg.notify_dir)) == 1
    assert m.notifier.send_due() == 1
    [got] = receiver.requests
    assert got.path == "/my-tac8-topic" and got.headers["Content-Type"] == "application/json"
    note = json.loads(got.body)
    assert set(note) == notify.FIELDS
    assert note["title"] == HOSTILE_TITLE  # hostile text arrives as text, every byte of it
    assert (note["key"], note["state"], note["task"], note["pr_url"]) == (
        key, "completed", "gh-7", "https://github.com/o/r/pull/9")
    assert note["question"] is None and note["error"] is None and note["at"]
    assert pending(cfg.notify_dir) == []


def test_an_ntfy_topic_gets_plain_text_and_ntfy_headers(sandbox, receiver):
    cfg = sandbox.write_config(notify={"url": receiver.url, "format": "ntfy"})
    (sandbox.root / "tasks.md").write_text("## Active\n[🟡 w-1] gh-7: Fix the parser ünïcødé\n")
    _blocked(cfg, question="Which database?\x1b[2J\x07 Postgres or SQLite?")
    emit(cfg.events_dir, "task_completed", "gh-8", worker_id="w-2",
         key=run_key("gh-8", "w-2", "completed"), pr="https://github.com/o/r/pull/9")
    write_record(cfg.run_record("gh-8"), {"task": "gh-8", "worker_id": "w-2", "title": HOSTILE_TITLE})
    m = Metrics(cfg)
    m.fold_pending()
    assert m.notifier.send_due() == 2
    blocked, completed = receiver.requests
    # the title comes from tasks.md when there is no run record; RFC 2047 carries UTF-8
    assert _title(blocked) == "gh-7 blocked: Fix the parser ünïcødé"
    assert blocked.headers["Title"].isascii() and blocked.headers["Tags"] == "alarm_clock"
    assert blocked.headers["Content-Type"].startswith("text/plain")
    assert "Click" not in blocked.headers
    assert blocked.body.decode().startswith("The agent asks: Which database? Postgres or SQLite?\n")
    # a hostile title is one printable header line: no header of its own, no escape sequence
    assert _title(completed) == "gh-8 completed: " + " ".join(printable(HOSTILE_TITLE).split())
    assert "X-Injected" not in completed.headers and "\x1b" not in _title(completed)
    assert completed.headers["Click"] == "https://github.com/o/r/pull/9"
    assert completed.headers["Tags"] == "white_check_mark"
    assert b"Pull request: https://github.com/o/r/pull/9" in completed.body


@pytest.mark.parametrize("url, format, ntfy", [
    ("https://ntfy.sh/my-tac8-topic", "auto", True),
    ("https://ntfy.example.org/alerts", "auto", True),
    ("https://hooks.example.org/tac8", "auto", False),
    ("https://ntfy.sh/my-tac8-topic", "json", False),
    ("http://127.0.0.1:8080/alerts", "ntfy", True),
])
def test_which_urls_get_the_ntfy_format(url, format, ntfy):
    assert notify.is_ntfy(NotifySection(url=url, format=format)) is ntfy


@pytest.mark.parametrize("text, message", [
    ('[notify]\nurl = "ftp://example.org/x"\n', "[notify] url: expected an http or https URL"),
    ('[notify]\nurl = "https://"\n', "[notify] url: expected an http or https URL"),
    ('[notify]\nurl = "https://ntfy.sh/a b"\n', "[notify] url: expected an http or https URL"),
    ('[notify]\nurl = "http://[::1/x"\n', "[notify] url: expected an http or https URL"),
    ('[notify]\nformat = "xml"\n', "[notify] format: must be one of 'auto', 'json', 'ntfy'"),
])
def test_a_bad_notify_setting_is_a_config_error(tmp_path, text, message):
    conf = tmp_path / "tac8.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(conf)


def test_the_shipped_config_sends_no_notification():
    assert load_config(EXAMPLE_CONFIG).notify == NotifySection()


def test_a_failed_send_is_retried_with_backoff_and_delivered_once(sandbox, receiver, monkeypatch):
    monkeypatch.setattr(notify, "RETRY_FIRST", 0.05)
    cfg = sandbox.write_config(notify={"url": receiver.url})
    receiver.answers = [500, 503]
    key = _blocked(cfg)
    m = Metrics(cfg)
    m.fold_pending()
    assert m.notifier.send_due() == 0
    [item] = pending(cfg.notify_dir)
    staged = json.loads(item.read_text())
    assert staged["tries"] == 1 and staged["error"] == "HTTP 500 Internal Server Error"
    assert m.notifier.due_in() <= 0.05
    wait_for(lambda: m.notifier.send_due(), what="the retries to get through")
    assert [r.status for r in receiver.requests] == [500, 503, 200]
    assert len({r.body for r in receiver.requests}) == 1
    assert json.loads(receiver.requests[-1].body)["key"] == key
    assert pending(cfg.notify_dir) == [] and m.notifier.due_in() == float("inf")


def test_a_redirect_is_a_failure_not_followed(sandbox, receiver):
    cfg = sandbox.write_config(notify={"url": receiver.url})
    receiver.answers = [302]
    _blocked(cfg)
    m = Metrics(cfg)
    m.fold_pending()
    assert m.notifier.send_due() == 0
    assert [(r.path, r.status) for r in receiver.requests] == [("/my-tac8-topic", 302)]
    [item] = pending(cfg.notify_dir)
    assert json.loads(item.read_text())["error"] == "HTTP 302 Found"


def test_a_notification_nobody_takes_is_set_aside_after_the_last_try(sandbox, receiver, monkeypatch):
    monkeypatch.setattr(notify, "RETRY_FIRST", 0.0)
    monkeypatch.setattr(notify, "MAX_TRIES", 3)
    cfg = sandbox.write_config(notify={"url": receiver.url})
    receiver.status = 404
    _blocked(cfg)
    m = Metrics(cfg)
    m.fold_pending()
    wait_for(lambda: m.notifier.send_due() == 0 and not pending(cfg.notify_dir),
             what="the notification to be given up")
    assert len(receiver.requests) == 3
    [aside] = pending(cfg.notify_dir, "bad")
    assert json.loads(aside.read_text())["note"]["state"] == "blocked"
    assert m.notifier.due_in() == float("inf")


def test_a_crash_before_the_tally_is_written_repeats_the_notification_never_loses_it(
        sandbox, receiver, monkeypatch):
    cfg = sandbox.write_config(notify={"url": receiver.url})
    key = _blocked(cfg)

    def killed(path, data, **kwargs):
        raise KeyboardInterrupt("killed before the tally was written")
    with monkeypatch.context() as patch:
        patch.setattr(metrics_module, "atomic_write", killed)
        with pytest.raises(KeyboardInterrupt):
            Metrics(cfg).fold_pending()
    assert len(pending(cfg.notify_dir)) == 1 and len(pending(cfg.events_dir)) == 1
    again = Metrics(cfg)  # the restart folds the event again: the same notification, once
    assert again.fold_pending() == 1
    assert len(pending(cfg.notify_dir)) == 1
    assert again.notifier.send_due() == 1
    assert [json.loads(r.body)["key"] for r in receiver.requests] == [key]


def test_no_url_no_notification(sandbox):
    cfg = sandbox.cfg
    _blocked(cfg)
    m = Metrics(cfg)
    assert m.fold_pending() == 1
    assert not cfg.notify_dir.exists()
    assert m.notifier.send_due() == 0 and m.notifier.due_in() == float("inf")


# --- the real metrics program ---

def _program_config(sandbox, url: str):
    """Notifications to ``url``; metrics written at every pass, so cycles come quickly."""
    return sandbox.write_config(notify={"url": url}, metrics={"min_write_interval": 0})


def _metrics(sandbox, log: Path) -> subprocess.Popen:
    heartbeat = sandbox.cfg.heartbeat("metrics")
    heartbeat.unlink(missing_ok=True)
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", FAST_RETRY_METRICS, "--config",
                                 str(sandbox.config_path)], cwd=CHECKOUT, stderr=err)
    wait_for(lambda: heartbeat.exists() or proc.poll() is not None, 15, what="metrics to start")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_the_program_notifies_an_auto_pause_but_not_a_persons_pause(sandbox, receiver, tmp_path):
    cfg = _program_config(sandbox, receiver.url)
    log = tmp_path / "metrics.log"
    proc = _metrics(sandbox, log)
    try:
        pause(cfg, "cli", "tac8 pause")  # a person's, in the order they come
        resume(cfg)
        assert toggle(cfg, "launcher", "by SIGUSR1")  # a person's signal
        resume(cfg)
        pause(cfg, "launcher", "auto: health critical")
        wait_for(receiver.delivered, what="the auto-pause's notification")
        # the person's pauses were folded first: had they been news, they would be here first
        wait_for(lambda: not pending(cfg.events_dir) and not pending(cfg.notify_dir))
        [got] = receiver.requests
        note = json.loads(got.body)
        assert (note["state"], note["reason"], note["task"]) == ("paused", "auto: health critical", None)
        wait_for(lambda: (read_metrics(cfg) or {}).get("events") == {"paused": 3, "resumed": 2})
        _stop(proc)
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-2000:]


def test_the_program_wakes_for_a_retry_and_delivers_once(sandbox, receiver, tmp_path):
    cfg = _program_config(sandbox, receiver.url)
    receiver.answers = [500]
    proc = _metrics(sandbox, tmp_path / "metrics.log")
    try:
        key = run_key("gh-3", "w-9", "failed")
        emit(cfg.events_dir, "task_failed", "gh-3", worker_id="w-9", key=key,
             error="exited without changes", attempt=3)
        # nothing else wakes the loop: only the retry's own timer (the slow one is 30 s)
        wait_for(receiver.delivered, what="the retry", timeout=20)
        wait_for(lambda: not pending(cfg.notify_dir), what="the delivered one to be deleted")
        wait_cycles(cfg, "metrics", 2, nudge=lambda: emit(cfg.events_dir, "task_added"))
        assert [r.status for r in receiver.requests] == [500, 200]
        note = json.loads(receiver.requests[1].body)
        assert (note["key"], note["state"], note["error"]) == (key, "failed", "exited without changes")
        _stop(proc)
    finally:
        proc.kill()
        proc.wait()


def test_a_staged_notification_survives_kill_9(sandbox, receiver, tmp_path):
    cfg = _program_config(sandbox, receiver.url)
    receiver.status = 502  # down: the notification waits in new/
    log = tmp_path / "metrics.log"
    proc = _metrics(sandbox, log)
    try:
        key = _blocked(cfg)
        wait_for(lambda: len(receiver.requests) >= 2, what="a failed send and a retry")
        proc.kill()
        proc.wait()
        assert len(pending(cfg.notify_dir)) == 1
        receiver.status = 200
        proc = _metrics(sandbox, log)
        wait_for(receiver.delivered, what="the notification after the restart")
        wait_for(lambda: not pending(cfg.notify_dir) and not pending(cfg.events_dir))
        wait_cycles(cfg, "metrics", 2, nudge=lambda: emit(cfg.events_dir, "task_added"))
        [got] = receiver.delivered()
        assert json.loads(got.body)["key"] == key
        assert read_metrics(cfg)["events"]["task_blocked"] == 1
        assert os.listdir(cfg.notify_dir / "new") == []  # no leftover of a rewrite either
        _stop(proc)
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-2000:]


@pytest.mark.parametrize("text", ["plain ascii", "tab\tand\nnewline\r\n twice", "=?utf-8?q?forged?=",
                                  "ünïcødé 🎉 " * 30, "\x1b[31mred\x1b[0m \x9b2J"])
def test_a_header_value_is_one_printable_latin1_line_that_decodes_to_the_text(text):
    value = notify.header_value(text)
    assert value.isascii() and value.isprintable()
    assert str(make_header(decode_header(value))) == " ".join(printable(text).split())


@pytest.mark.parametrize("by, reason, news", [
    ("launcher", "auto: health critical", True),
    ("worker", "auto: usage limit reached (resets 15:00)", True),  # the provider's limit
    ("launcher", "paused by SIGUSR1", False),  # a person, through a signal
    ("cli", "auto: looks like tac8's", False),  # a person's words
])
def test_only_tac8_s_own_pauses_are_news(by, reason, news):
    assert (notify.state_of({"type": "paused", "by": by, "reason": reason}) == "paused") is news
