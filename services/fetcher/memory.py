"""``state/fetcher.md``: what the fetcher remembers between polls (ETag'd listing pages,
untrusted issues seen, outbox keys sent, failed sends) and, under ``sections``, what each of
its parts keeps (the conversation on issues and PRs). Written only by the (single) fetcher,
so no lock; saved only when it changed, after a poll's effects, so a failed or killed poll
loses nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shared.clock import now_iso
from shared.fsio import atomic_write
from shared.records import RecordError, read_record, render_record

log = logging.getLogger("fetcher")

SENT_KEYS_KEPT = 2000


class Memory:
    """``state/fetcher.md``: written only by the (single) fetcher, so no lock."""

    def __init__(self, path: Path):
        self.path = path
        self.issues: list[dict] = []
        self.pulls: list[dict] = []
        self.ignored: set[int] = set()
        self.sent: list[str] = []
        self.attempts: dict[str, int] = {}  # outbox item name → failed sends so far
        self.sections: dict[str, dict] = {}  # a part's name → what it keeps (JSON)
        self._saved: str | None = None
        try:
            data = json.loads(read_record(path).body or "{}")
            self.issues = _pages(data.get("issues"))
            self.pulls = _pages(data.get("pulls"))
            self.ignored = {int(n) for n in data.get("ignored") or []}
            self.sent = [str(k) for k in data.get("sent") or []]
            self.attempts = {str(k): int(v) for k, v in (data.get("attempts") or {}).items()}
            self.sections = {str(k): v for k, v in (data.get("sections") or {}).items()
                             if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (RecordError, ValueError, TypeError, AttributeError) as exc:
            log.warning("%s unreadable (%s): starting without ETags", path, exc)

    def section(self, name: str) -> dict:
        """The part ``name``'s own memory (created empty), changed in place and saved with
        the rest."""
        return self.sections.setdefault(name, {})

    def remember_sent(self, key: str) -> None:
        self.sent = [*self.sent, key][-SENT_KEYS_KEPT:]

    def save(self) -> None:
        """Write the memory if it changed since the last save (an unchanged poll, the
        common case, writes nothing)."""
        body = json.dumps({"issues": self.issues, "pulls": self.pulls,
                           "ignored": sorted(self.ignored), "sent": self.sent,
                           "attempts": self.attempts, "sections": self.sections},
                          ensure_ascii=True, indent=0) + "\n"
        if body == self._saved:
            return
        meta = {"program": "fetcher", "pages": len(self.issues) + len(self.pulls),
                "saved": now_iso()}
        atomic_write(self.path, render_record(meta, body))
        self._saved = body


def _pages(value: Any) -> list[dict]:
    """Cached listing pages as saved, without any that a damaged file made unusable."""
    return [p for p in value or [] if isinstance(p, dict) and isinstance(p.get("url"), str)
            and isinstance(p.get("items"), list) and all(isinstance(i, dict) for i in p["items"])]
