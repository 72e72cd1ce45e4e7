"""The status page: its renderer (others' text stays text), the metrics program's writes of it,
``tac8 serve``, and a real headless Chromium showing it."""

from __future__ import annotations

import html
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.metrics import Metrics
from shared.config import CHECKOUT
from shared.events import emit
from shared.locks import hold
from shared.pause import pause
from shared.proc import run
from shared.runs import question_file
from shared.statuspage import Extras, render
from shared.tasks import parse
from tests.agents import wait_for

TAC8 = Path(sys.executable).parent / "tac8"  # the console script pyproject.toml declares
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"
# What a page may contain: anything else (a script, an image, a handler) came from the text.
TAGS = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "b",
        "ul", "li", "table", "tr", "th", "td", "span", "code"}
ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "name", "class", "id", "style"}

QUEUE = f"""# Tasks

## Active
[🟡 w-aaa111] gh-1: {HOSTILE} {{p1}}
- Started: 2026-11-24 10:15:02 · attempt 1/3 · trees/gh-1 · auto/gh-1
[🟡 w-bbb222] t-2: Write the CONTRIBUTING guide

## Pending
[] gh-3: Add a changelog {{p0}}
- Retry: attempt 2/3 not before 2026-11-24 10:20:00
[] t-4: Tidy the README

## Blocked
[⏰ w-ccc333] gh-5: Migrate CI
- Blocked: Which Python versions should CI cover? {HOSTILE}
[⏰ w-ddd444] gh-6: Rename the package

## Failed
[❌ w-9f8e7d] gh-7: Refactor parser
- Error: exited without changes

## Completed Today
[✅ cbffe52, w-ee4608] gh-8: Add a license
- Completed: 2026-11-24 17:38:45
"""
TITLES = (HOSTILE, "Write the CONTRIBUTING guide", "Add a changelog", "Tidy the README",
          "Migrate CI", "Rename the package", "Refactor parser", "Add a license")


class Page(HTMLParser):
    """A page's tags, attribute names and text (character references resolved)."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.parts: list[str] = []
        self.feed(page)
        self.close()
        self.text = "".join(self.parts)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data):
        self.parts.append(data)


def _harmless(page: str) -> Page:
    parsed = Page(page)
    assert parsed.tags <= TAGS, parsed.tags - TAGS
    assert parsed.attributes <= ATTRIBUTES, parsed.attributes - ATTRIBUTES
    return parsed


def _snapshot(**fields) -> dict:
    return {"health": "warning", "health_reasons": [f"launcher: no heartbeat {HOSTILE}"],
            "last_update": "2026-11-24T10:16:00+01:00", "cost_usd_today": 1.25,
            "tokens_today": 12345, "heartbeats": {"launcher": {"age_seconds": None, "stale": True}},
            "history": [{"timestamp": "2026-11-24T10:15:02+01:00", "type": "task_added",
                         "details": {"task": "gh-1", "title": HOSTILE, "program": "fetcher"}}],
            "tasks_problems": 1,
            "tasks_problem_lines": [{"line": 3, "text": HOSTILE, "problem": "not understood"}],
            **fields}


def _stream(*texts: str) -> str:
    return "".join(json.dumps({"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "text", "text": text}]}}) + "\n" for text in texts)


def test_hostile_text_stays_text_wherever_it_appears():
    extras = Extras(last_output={"gh-1": f"→ Bash: echo '{HOSTILE}'"},
                    questions={"gh-6": f"{HOSTILE}\nand more"}, alive=frozenset({"gh-1"}),
                    paused={"by": "cli", "at": "2026-11-24T10:00:00+01:00", "reason": HOSTILE})
    page = render(_snapshot(), parse(QUEUE), extras)
    parsed = _harmless(page)
    # a title and a Blocked line (each twice: among the workers or questions, and in the
    # queue), a question file, the agent's output, an event, a health reason, the pause and a
    # tasks.md problem: each shown as text
    assert parsed.text.count(HOSTILE) == 10
    assert html.escape(HOSTILE) in page
    assert "<script" not in page and "<img" not in page
    for title in TITLES:
        assert title in parsed.text


def test_control_characters_and_bytes_that_are_not_utf8_are_dropped(tmp_path):
    board = parse("## Pending\n[] t-1: clear \x1b[2J the \x9b1mscreen \udcff here\n")
    page = render(_snapshot(), board, Extras(last_output={"t-1": "\x07bell"}))
    page.encode("utf-8")  # no lone surrogate left: the page can be written
    assert "\x1b" not in page and "\x9b" not in page and "\x07" not in page
    assert "clear  the screen \ufffd here" in Page(page).text


def test_the_metrics_program_writes_the_page_beside_metrics_json(sandbox):
    cfg = sandbox.cfg
    assert cfg.status_page == cfg.paths.metrics.parent / "status.html"
    (sandbox.root / "tasks.md").write_text(QUEUE)
    cfg.agent_log("gh-1").parent.mkdir(parents=True, exist_ok=True)
    cfg.agent_log("gh-1").write_text(_stream("Reading the parser", "Running pytest now"))
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    question_file(cfg, "gh-6").write_text("Should the old name stay as an alias?\n")
    emit(cfg.events_dir, "run_finished", task="gh-8", worker_id="w-ee4608", outcome="pr",
         cost_usd=0.75, tokens=4321)
    emit(cfg.events_dir, "pr_created", task="gh-8", worker_id="w-ee4608", url="https://x/pull/9")
    pause(cfg, by="cli", reason="lunch")
    cfg.liveness_lock("gh-1").parent.mkdir(parents=True, exist_ok=True)
    with hold(cfg.liveness_lock("gh-1")):
        metrics = Metrics(cfg)
        metrics.fold_pending()
        assert metrics.publish()
    page = cfg.status_page.read_text()
    text = _harmless(page).text
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "Running workers (2)" in text and "Running pytest now" in text  # its last line
    assert "(no live worker)" in text  # t-2 holds no liveness lock; gh-1 does
    assert text.count("(no live worker)") == 1
    assert "Which Python versions should CI cover?" in text  # the Blocked line
    assert "Should the old name stay as an alias?" in text  # no Blocked line: the question file
    assert "pending 2" in text and "Pending (2)" in text and "Completed Today (1)" in text
    assert "Retry: attempt 2/3 not before 2026-11-24 10:20:00" in text
    assert "$0.75 (4,321 tokens)" in text  # cost today
    assert "paused" in text and "lunch" in text
    events = text.split("Recent events", 1)[1]
    assert events.index("paused") < events.index("pr_created") < events.index("run_finished")
    for title in TITLES:
        assert title in text


def test_the_page_is_rewritten_only_when_what_it_shows_changed(sandbox):
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(QUEUE)
    log = cfg.agent_log("gh-1")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(_stream("first step"))
    metrics = Metrics(cfg)
    assert metrics.publish(now=1_800_000_000)
    inode = cfg.status_page.stat().st_ino
    # the clock alone (and heartbeat ages, metrics' uptime) is not worth a write
    assert not metrics.publish(now=1_800_000_100)
    assert not Metrics(cfg).publish(now=1_800_000_200)  # nor is a restart
    assert cfg.status_page.stat().st_ino == inode
    with open(log, "a") as f:  # the agent's new line is
        f.write(_stream("second step"))
    assert metrics.publish(now=1_800_000_300)
    assert cfg.status_page.stat().st_ino != inode
    assert "second step" in Page(cfg.status_page.read_text()).text


# --- tac8 serve ------------------------------------------------------------------------------

class Served:
    """A running ``tac8 serve --port 0`` and its address."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([str(TAC8), "serve", "--port", "0", *args], cwd=CHECKOUT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()  # "serving the status page at http://HOST:PORT/ …"
        assert "http://" in first, (first, self.proc.stderr.read())
        self.url = first.split("http://", 1)[1].split()[0].rstrip("/")
        self.host, port = self.url.rsplit(":", 1)
        self.port = int(port)
        self.url = f"http://{self.url}/"

    def request(self, method: str, path: str) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # (SIGINT: ignored when the suite runs in the background)
        assert self.proc.wait(timeout=30) == 0
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def served(sandbox):
    (sandbox.root / "tasks.md").write_text(QUEUE)
    Metrics(sandbox.cfg).publish()
    server = Served()
    yield server
    server.stop()


def _secured(response: http.client.HTTPResponse) -> None:
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    policy = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in policy and "style-src 'unsafe-inline'" in policy
    assert "script-src" not in policy


def test_serve_answers_the_page_and_metrics_json_read_only(sandbox, served):
    cfg = sandbox.cfg
    assert served.host == "127.0.0.1"  # the default: this machine only
    for path in ("/", "/status.html", "/?refresh=1"):
        response, body = served.request("GET", path)
        assert response.status == 200, path
        assert response.getheader("Content-Type") == "text/html; charset=utf-8"
        assert body == cfg.status_page.read_bytes()
        _secured(response)
    response, body = served.request("GET", "/metrics.json")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json; charset=utf-8"
    assert json.loads(body) == json.loads(cfg.paths.metrics.read_text())
    _secured(response)
    response, body = served.request("HEAD", "/")
    assert response.status == 200 and body == b""
    assert int(response.getheader("Content-Length")) == cfg.status_page.stat().st_size


def test_serve_answers_nothing_else(sandbox, served):
    secret = (sandbox.conf_dir / "tac8.toml").read_bytes()
    for path in ("/../conf/tac8.toml", "/conf/tac8.toml", "/%2e%2e/conf/tac8.toml",
                 "//etc/passwd", "/tasks.md", "/state/", "/status.html/", "/metrics.json/..",
                 "/.status.html.tmp", "/index.html", "/favicon.ico", "*"):
        response, body = served.request("GET", path)
        assert response.status == 404, path
        assert secret not in body and b"[paths]" not in body
        _secured(response)
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"):
        response, body = served.request(method, "/")
        assert response.status == 405, method
        assert response.getheader("Allow") == "GET, HEAD"
        _secured(response)


def test_serve_before_the_metrics_program_wrote_anything(sandbox):
    server = Served()
    try:
        response, body = server.request("GET", "/")
        assert response.status == 503
        assert b"status.html is not written yet" in body
    finally:
        server.stop()


def test_serve_on_a_port_taken_says_so_in_one_line(sandbox):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(TAC8), "serve", "--port", str(port)], cwd=CHECKOUT,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tac8 serve: cannot listen on 127.0.0.1:{port}: the port is taken "
        "(another tac8 serve? choose another with --port)"]


# --- a real browser --------------------------------------------------------------------------

def _chromium(tmp_path: Path, *args: str) -> str:
    """Headless Chromium with a profile of its own; its stdout."""
    binary = shutil.which("chromium")
    if binary is None:  # a missing browser is a failure: this test is the page's only proof
        pytest.fail("chromium is not installed (apt-get install chromium)")
    # --no-sandbox: the tests run as root (CI does), where Chromium's own sandbox cannot start
    result = run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                 env={**os.environ, "HOME": str(tmp_path)}, timeout=180)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


def test_chromium_shows_the_titles_as_text(sandbox, tmp_path):
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text(QUEUE)
    cfg.agent_log("gh-1").parent.mkdir(parents=True, exist_ok=True)
    cfg.agent_log("gh-1").write_text(_stream(f"About to print {HOSTILE}"))
    emit(cfg.events_dir, "task_added", task="gh-1", title=HOSTILE)
    metrics = subprocess.Popen([sys.executable, "-m", "services.metrics", "--config",
                                str(sandbox.config_path)], cwd=CHECKOUT)
    try:
        wait_for(lambda: cfg.status_page.exists() and "task_added" in cfg.status_page.read_text(),
                 60, what="the metrics program to render status.html")
    finally:
        metrics.send_signal(signal.SIGTERM)
        assert metrics.wait(timeout=60) == 0
    server = Served()
    try:
        dom = _chromium(tmp_path, "--dump-dom", server.url)
        shot = tmp_path / "status.png"
        _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,800", server.url)
    finally:
        server.stop()
    parsed = Page(dom)
    assert "Running workers (2)" in parsed.text
    for title in TITLES:
        assert title in parsed.text, title
    assert parsed.text.count(HOSTILE) >= 4  # a title, a Blocked line, its output, its event
    assert html.escape(HOSTILE) in dom  # serialised as text, not parsed into elements
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not any(name.startswith("on") for name in parsed.attributes)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1000, 800)  # IHDR: width, height


def test_a_pause_that_ends_by_itself_says_until_when():
    extras = Extras(paused={"by": "worker", "at": "2026-11-30T10:00:00+00:00",
                            "reason": "auto: usage limit reached",
                            "until": "2026-11-30T15:00:00+00:00"})
    page = render(_snapshot(), parse(QUEUE), extras)
    until = datetime.fromisoformat("2026-11-30T15:00:00+00:00").astimezone()  # the box's time
    assert f"Launching is <b>paused</b> until {until:%Y-%m-%d %H:%M:%S}: auto: usage limit" in page
