"""The outbox: issue comments the observer queues and the fetcher sends (docs/PROTOCOL.md).

``queue_comment`` publishes one item into the ``state/outbox`` maildir: frontmatter ``kind:
issue_comment``, ``issue``, ``task``, ``key``, and the comment's Markdown as body. The key
makes it idempotent: one comment per key, ever. A sent comment ends with
``comment_marker(key)``, an HTML comment that GitHub does not render, so after a crash the
fetcher can recognise a send among the issue's comments.
"""

from __future__ import annotations

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
    import hashlib  # only for a key that needs it: hashlib loads OpenSSL (3.6 MB)

    return "sha256-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def comment_marker(key: str) -> str:
    return f"<!-- tac8:{marker_key(key)} -->"
