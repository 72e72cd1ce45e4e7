"""The outbox: GitHub writes the observer queues and the fetcher sends (DESIGN.md §2, §5).

``state/outbox/`` is a maildir. One item is a frontmatter record::

    ---
    kind: issue_comment
    issue: 472            # the issue to comment on
    task: gh-472          # the task it is about
    key: gh-472/run-3/pr  # idempotency key: one comment per key, ever
    ---
    The comment's Markdown.

Producers call ``queue_comment`` (``tmp/`` → ``new/``). The fetcher is the only consumer:
it moves an item to ``cur/`` before sending it and deletes it after the send is recorded
(its docstring describes the exactly-once protocol; items it cannot ever send go to
``bad/``). A sent comment ends with ``comment_marker(key)``, an HTML comment that GitHub
does not render, so a send can be recognised later among the issue's comments.

A task ``gh-<n>`` is about issue ``n`` (``shared.tasks.issue_number``): its comments go there.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shared.fsio import publish
from shared.records import render_record

ISSUE_COMMENT = "issue_comment"
_SAFE_KEY = re.compile(r"[A-Za-z0-9._:/@+=-]{1,200}")


def queue_comment(cfg, issue: int, task: str, key: str, body: str) -> Path:
    """Queue one issue comment; the same ``key`` queued twice is still posted once."""
    meta = {"kind": ISSUE_COMMENT, "issue": int(issue), "task": task, "key": str(key)}
    return publish(cfg.outbox_dir, render_record(meta, body))


def marker_key(key: str) -> str:
    """``key`` as it may appear inside an HTML comment (hashed if it could break out)."""
    key = str(key)
    if _SAFE_KEY.fullmatch(key):
        return key
    return "sha256-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def comment_marker(key: str) -> str:
    return f"<!-- tac8:{marker_key(key)} -->"
