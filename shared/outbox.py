"""The outbox: GitHub writes the other programs queue and the fetcher makes (docs/PROTOCOL.md).

``queue_comment`` publishes one item into the ``state/outbox`` maildir: frontmatter ``kind:
issue_comment``, ``issue``, ``task``, ``key``, and the comment's Markdown as body;
``queue_pr`` one pull request to open for a pushed branch (``kind: open_pr``, ``task``,
``worker_id``, ``head``, ``base``, ``title``, ``commit``, ``key``; the PR's text as body),
which the fetcher finds or opens, then writes the task's PR marker. The key
makes it idempotent: one comment per key, ever. A sent comment ends with
``comment_marker(key)``, an HTML comment that GitHub does not render, so after a crash the
fetcher can recognise a send among the issue's comments: only among those of tac8's own
login, since anyone can write a marker.

The consumer's side is here too: ``read_item`` (the one parser of an item), ``claim``
(``new/`` → ``cur/`` before a send: an item found in ``cur/`` may have been sent) and
``set_aside`` (→ ``bad/``, for a person to look at).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from shared.fsio import fsync_dir, pending, publish
from shared.records import RecordError, parse_record, render_record

ISSUE_COMMENT, OPEN_PR = "issue_comment", "open_pr"
_SAFE_KEY = re.compile(r"[A-Za-z0-9._:/@+=-]{1,200}")


@dataclass(frozen=True)
class Item:
    kind: str
    issue: int | None  # an issue comment's issue
    task: str | None
    key: str  # as it appears in a comment's marker (``marker_key``)
    body: str
    meta: dict  # the rest of the frontmatter (a PR's head, base, title, commit, worker_id)


class MalformedItem(ValueError):
    """An outbox file that is not an item this version can send."""


def queue_comment(cfg, issue: int, task: str, key: str, body: str) -> Path:
    """Queue one issue comment; the same ``key`` queued twice is still posted once."""
    meta = {"kind": ISSUE_COMMENT, "issue": int(issue), "task": task, "key": str(key)}
    return publish(cfg.outbox_dir, render_record(meta, body))


def queue_pr(cfg, task: str, worker_id: str, head: str, base: str, title: str, commit: str,
             body: str) -> Path:
    """Queue the pull request of a run's pushed branch (found if it is open already)."""
    meta = {"kind": OPEN_PR, "task": task, "worker_id": worker_id, "head": head, "base": base,
            "title": title, "commit": commit, "key": f"{task}/{worker_id}/open_pr"}
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


def read_item(path: Path) -> Item:
    """The item in ``path``; ``MalformedItem`` if it is not one (``FileNotFoundError`` if
    it is gone)."""
    try:
        record = parse_record(path.read_text(encoding="utf-8"), str(path))
        meta = record.meta
        kind = meta.get("kind")
        if kind == ISSUE_COMMENT:
            issue = int(meta["issue"])
        elif kind == OPEN_PR:
            issue = None
            for name in ("task", "worker_id", "head", "base", "title"):
                if not isinstance(meta.get(name), str) or not meta[name]:
                    raise ValueError(f"no {name}")
        else:
            raise ValueError(f"unknown kind {kind!r}")
        return Item(kind, issue, meta.get("task"), marker_key(meta.get("key") or path.name),
                    record.body, meta)
    except (RecordError, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise MalformedItem(str(exc)) from None


def claimed(cfg) -> list[Path]:
    """Items claimed for a send (``cur/``), oldest first: each may have been sent."""
    return pending(cfg.outbox_dir, "cur")


def waiting(cfg) -> list[Path]:
    """Items not claimed yet (``new/``), oldest first."""
    return pending(cfg.outbox_dir)


def claim(cfg, item: Path) -> Path:
    """Move ``item`` from ``new/`` to ``cur/`` (durably) before it is sent."""
    return _move(item, cfg.outbox_dir / "cur")


def set_aside(cfg, item: Path) -> Path:
    """Move ``item`` to ``bad/``: it will not be sent."""
    return _move(item, cfg.outbox_dir / "bad")


def _move(item: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / item.name
    os.replace(item, target)
    fsync_dir(folder)
    return target
