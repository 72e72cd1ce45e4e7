"""tac8's open pull requests after they are opened: reviews, review comments, CI, the end.

The fetcher names each PR it opens or finds (``track``); at start the PR markers naming an
open PR are picked up. Each poll costs the open pulls listing (shared with ``find_prs``), the
repo-wide review comments since the last one seen, both ETag'd, and per PR only what changed:
its reviews when its ``updated_at`` moved, its head's check runs and combined status while
their verdict is pending or unknown, ``GET /pulls/{n}`` once it left the listing. A trusted
person's (``shared.issues.trusted``; never tac8's own) review requesting changes, with its
line comments, a ``/tac8 …`` review comment and a head's failing checks become feedback items
(``shared.feedback``, keyed so each is added once); untrusted ones are counted. A CI verdict
shows on the task's line and as an event; a merged or closed PR updates its marker, emits an
event and is no longer followed. What was on a PR before tac8 first saw it (a marker picked
up at start) is not acted on. Effects are idempotent and the memory (a section of the
fetcher's) is saved after the poll: a crash repeats a handling, never doubles it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from services.fetcher.comments import (OWN_MARK, after_command, command_words, github_time,
                                       steer)
from shared import tasks
from shared.clock import parse_iso
from shared.config import Config
from shared.events import emit
from shared.feedback import CI, COMMAND, REVIEW, Item, add_item, drop_rework, update_feedback
from shared.github import PER_PAGE, GitHub, Listing, NotFound, NotModified
from shared.issues import trusted
from shared.locks import file_lock
from shared.records import write_record
from shared.runs import read_pr_marker

log = logging.getLogger("fetcher")

PENDING, NONE, PASSED, FAILED, UNDECIDED = "pending", "none", "passed", "failed", "undecided"
# Conclusions GitHub lets pass a required check; and those an agent's change can fix
# (cancelled, action_required, stale ask a person, not the code: no verdict, no rework).
PASSING = {"success", "neutral", "skipped"}
FAILING = {"failure", "timed_out"}
FAILING_STATUSES = {"failure", "error"}
CHECKS_REGISTER_WAIT = 600.0  # seconds after a new head during which "no checks" is re-read
CHECKS_RECHECK = 60.0  # seconds before the first re-read of a head that had no checks yet
SINCE_MARGIN = 60  # seconds the review comments cursor stays behind the newest one seen
HANDLED_KEPT = 1000  # review comment ids remembered (those within the margin suffice)
PIECE_LIMIT = 2000  # characters of one line comment or check output kept in an item
NOTE_NAMES = 80  # characters of failing checks' names on a task's line


def command_request(body: str, word: str) -> str | None:
    """The text after the command word of a comment that starts with it, else None (the
    rule of conversation comments, ``comments.command_words``)."""
    return after_command(body, word) if command_words(body, word) else None


def _cut(text: Any, limit: int = PIECE_LIMIT) -> str:
    text = str(text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _login(thing: dict) -> str:
    return str((thing.get("user") or {}).get("login") or "")


class PullRequests:
    """The open PRs tac8 made, in ``memory`` (the fetcher's section ``pulls``): ``prs``
    (number → what is known of it), ``comments`` (the review comments cursor) and
    ``ignored`` (requests by people who are not trusted)."""

    def __init__(self, cfg: Config, gh: GitHub, memory: dict):
        self.cfg, self.gh, self.memory = cfg, gh, memory
        self.prs: dict[str, dict] = memory.setdefault("prs", {})
        self.comments: dict = memory.setdefault("comments", {})
        memory.setdefault("ignored", 0)
        self.repo_path = f"repos/{gh.repo}"
        self.pick_up_markers()

    # --- which PRs ---
    def pick_up_markers(self) -> None:
        """Follow the PRs the markers in ``state/prs/`` name that memory does not know (a
        first start, a lost memory); what was said on them before is left alone."""
        for path in sorted(self.cfg.prs_dir.glob("*.md")):
            meta = read_pr_marker(self.cfg, path.stem) or {}
            number = meta.get("number")
            if (isinstance(number, int) and not isinstance(number, bool)
                    and not meta.get("pr_state") and str(number) not in self.prs):
                self.prs[str(number)] = {"task": path.stem, "url": str(meta.get("url") or ""),
                                         "head": "", "updated_at": None, "pickup": True}
                log.info("%s: following PR #%d (its marker)", path.stem, number)

    def track(self, task: str, number: int, head_sha: str, url: str = "") -> None:
        """Follow PR ``number`` of ``task`` (opened or found by the fetcher)."""
        rec = self.prs.setdefault(str(number), {"head": "", "updated_at": None,
                                                "pickup": False})
        rec["task"] = task
        rec["url"] = url or rec.get("url") or ""
        self.new_head(rec, head_sha)

    def task_of(self, pr_number: int) -> str | None:
        """The task whose open PR is ``pr_number``; None if tac8 follows no such PR."""
        rec = self.prs.get(str(pr_number))
        return rec["task"] if rec else None

    @staticmethod
    def new_head(rec: dict, sha: str) -> None:
        """A new head commit: its checks are still to be read."""
        if sha and sha != rec.get("head"):
            rec.update(head=sha, head_at=time.time(), ci=None, ci_note=None, ci_etags={},
                       ci_parts={})

    # --- each poll ---
    def poll(self, open_pulls: Callable[[], Listing]) -> None:
        """One look at every followed PR; ``open_pulls`` gives this poll's open pulls
        listing (fetched once a poll for whoever needs it first)."""
        if not self.prs:
            self.comments.clear()  # a cursor kept through an idle month would page it all in
            return
        listing = open_pulls()
        if listing.changed:  # a review comment moves its PR's updated_at: the listing changes
            self.memory["comments_due"] = True
        current = {int(pr["number"]): pr for pr in listing.items}
        for key, rec in list(self.prs.items()):
            pr = current.get(int(key))
            if pr is None:
                self.settle(int(key), rec)
            else:
                self.follow(int(key), rec, pr)
        if self.prs and self.memory.get("comments_due", True):
            self.read_review_comments()
            self.memory["comments_due"] = False
        self.show_ci()

    def follow(self, number: int, rec: dict, pr: dict) -> None:
        if "created_at" not in rec:  # first sight
            rec["created_at"] = pr.get("created_at")
            if rec.get("pickup"):
                rec["quiet_until"], rec["quiet_head"] = pr.get("updated_at"), pr.get("sha")
        self.new_head(rec, str(pr.get("sha") or ""))
        if pr.get("updated_at") != rec.get("updated_at"):
            self.read_reviews(number, rec)
            rec["updated_at"] = pr.get("updated_at")
        now = time.time()
        read_at = rec.get("ci_read_at", 0)
        if rec.get("ci") in (None, PENDING) or (  # no checks yet: again after 1, 3, 9 min
                rec.get("ci") == NONE and now - rec.get("head_at", 0) < CHECKS_REGISTER_WAIT
                and now - read_at >= max(CHECKS_RECHECK, 2 * (read_at - rec.get("head_at", 0)))):
            rec["ci_read_at"] = now
            self.read_ci(number, rec)

    def quiet(self, rec: dict, at: Any) -> bool:
        """Whether something said at ``at`` predates tac8's first look at a picked-up PR."""
        until = rec.get("quiet_until")
        return bool(until) and str(at or "") <= str(until)

    def allowed(self, thing: dict, what: str, number: int) -> bool:
        """Whether a request on PR ``number`` comes from a trusted person; tac8's own (its
        marker under its login, as for comments: a person may run tac8 under their own
        account) are dropped, others' counted."""
        login = _login(thing)
        if OWN_MARK in str(thing.get("body") or "") and login.lower() == self.gh.login().lower():
            return False
        if trusted(self.cfg, login, str(thing.get("author_association") or "")):
            return True
        self.memory["ignored"] += 1
        log.info("%s %s on PR #%d by %r ignored: not a trusted author", what,
                 thing.get("id"), number, login)
        return False

    # --- reviews ---
    def read_reviews(self, number: int, rec: dict) -> None:
        seen = {i.get("id") for page in rec.get("reviews") or [] for i in page["items"]}
        listing = self.gh.list_pages(f"{self.repo_path}/pulls/{number}/reviews",
                                     {"per_page": PER_PAGE}, cached=rec.get("reviews") or [],
                                     project=lambda review: {"id": review.get("id")})
        wanted = [r for r in listing.fresh
                  if r.get("id") not in seen and r.get("state") == "CHANGES_REQUESTED"
                  and not self.quiet(rec, r.get("submitted_at"))
                  and self.allowed(r, "review", number)]
        if wanted and self.cfg.github.rework_on_review:
            lines = self.gh.list_pages(f"{self.repo_path}/pulls/{number}/comments",
                                       {"per_page": PER_PAGE}).items
            for review in wanted:
                self.add_review(rec, review, [c for c in lines if c.get("pull_request_review_id")
                                              == review.get("id")])
        rec["reviews"] = listing.pages

    def add_review(self, rec: dict, review: dict, comments: list[dict]) -> None:
        parts = [_cut(review.get("body"), 4 * PIECE_LIMIT) or "(no summary)"]
        if comments:
            parts.append("Line comments:\n" + "\n".join(
                f"{_place(c)}: {_cut(c.get('body'))}" for c in comments))
        login = _login(review)
        if add_item(self.cfg, rec["task"], Item(
                key=f"review/{review['id']}", kind=REVIEW, text="\n\n".join(parts),
                source=f"review by {login}", url=str(review.get("html_url") or ""),
                at=str(review.get("submitted_at") or ""))):
            log.info("%s: %s requested changes (%d line comments)", rec["task"], login,
                     len(comments))

    # --- review comments, repo-wide ---
    def read_review_comments(self) -> None:
        """The review comments written since the cursor: a trusted ``/tac8 …`` on a
        followed PR is a request. The cursor trails the newest by ``SINCE_MARGIN`` (a
        comment GitHub shows late, or one a page boundary hid, is read next time); the ids
        handled keep that window from being handled twice."""
        memory = self.comments
        if not memory.get("since"):
            starts = [rec.get("quiet_until") if rec.get("pickup") else rec.get("created_at")
                      for rec in self.prs.values()]
            if not all(starts):
                return  # a PR not seen in the listing yet: its start is not known
            memory.update(since=min(starts), pages=[], handled=[])
        since = memory["since"]
        listing = self.gh.list_pages(
            f"{self.repo_path}/pulls/comments",
            {"since": since, "sort": "updated", "direction": "asc", "per_page": PER_PAGE},
            cached=memory.get("pages") or [],
            project=lambda c: {"id": c.get("id"), "updated_at": c.get("updated_at")})
        handled = set(memory["handled"])
        for comment in listing.fresh:
            if comment.get("id") in handled:
                continue
            if str(comment.get("created_at") or "") >= since:  # older ones were edited
                self.review_comment(comment)
            handled.add(comment.get("id"))
            memory["handled"] = [*memory["handled"], comment.get("id")][-HANDLED_KEPT:]
        memory["pages"] = listing.pages
        newest = parse_iso(max((str(c.get("updated_at") or "") for c in listing.items),
                               default=""))
        if newest is not None:
            cursor = github_time(newest.timestamp() - SINCE_MARGIN)
            if cursor > since:
                memory["since"] = cursor

    def review_comment(self, comment: dict) -> None:
        url = str(comment.get("pull_request_url") or "").rstrip("/")
        number = url.rsplit("/", 1)[-1]
        rec = self.prs.get(number)
        request = command_request(str(comment.get("body") or ""), self.cfg.github.command)
        if (rec is None or not request or self.quiet(rec, comment.get("created_at"))
                or not self.allowed(comment, "review comment", int(number))):
            return
        login = _login(comment)
        verb = request.split(maxsplit=1)[0].lower()
        done = steer(self.cfg, rec["task"], verb, login) if request.strip() == verb else None
        if done is not None:  # `/tac8 stop` or `/tac8 retry` on the diff, as on the issue
            log.info("%s: %s %s by %s on %s: %s", rec["task"], self.cfg.github.command, verb,
                     login, _place(comment), "done" if done else "not applicable")
            return
        if add_item(self.cfg, rec["task"], Item(
                key=f"review-comment/{comment['id']}", kind=COMMAND,
                text=f"On {_place(comment)}:\n{request}", source=f"request by {login}",
                url=str(comment.get("html_url") or ""), at=str(comment.get("created_at") or ""))):
            log.info("%s: %s asked on %s", rec["task"], login, _place(comment))

    # --- CI ---
    def read_ci(self, number: int, rec: dict) -> None:
        """The head's check runs and combined status (each ETag'd); a verdict once both
        are read and nothing is pending."""
        sha, etags = rec["head"], rec.setdefault("ci_etags", {})
        runs = self.get_pages(f"commits/{sha}/check-runs", etags.get("checks"), "check_runs")
        statuses = self.get_pages(f"commits/{sha}/status", etags.get("statuses"), "statuses")
        # kept only once both were read: a failure between them keeps no ETag whose answer
        # was not kept (the memory is saved after a failed read too)
        parts = rec.setdefault("ci_parts", {})
        if runs is not None:
            etags["checks"], parts["checks"] = runs[0], [_check(run) for run in runs[1]]
        if statuses is not None:
            etags["statuses"], parts["statuses"] = statuses[0], [_status(s) for s in statuses[1]]
        if runs is None and statuses is None and rec.get("ci") is not None:
            return  # both 304: nothing new
        every = parts.get("checks", []) + parts.get("statuses", [])
        verdicts = {part["verdict"] for part in every}
        verdict = (PENDING if PENDING in verdicts else NONE if not every
                   else FAILED if FAILED in verdicts else PASSED if verdicts == {PASSED}
                   else UNDECIDED)
        if verdict == rec.get("ci"):
            return
        if verdict == PASSED:
            emit(self.cfg.events_dir, "ci_passed", rec["task"], pr=number, sha=sha,
                 checks=len(every), key=f"pr/{number}/ci/{sha}/passed")
            rec["ci_note"] = f"passed ({len(every)} checks) at {sha[:7]}"
        elif verdict == FAILED:
            failing = [part for part in every if part["verdict"] == FAILED]
            if self.cfg.github.rework_on_ci and sha != rec.get("quiet_head"):
                self.add_failure(rec, failing)
            names = ", ".join(part["name"] for part in failing)
            emit(self.cfg.events_dir, "ci_failed", rec["task"], pr=number, sha=sha,
                 failing=names, key=f"pr/{number}/ci/{sha}/failed")
            rec["ci_note"] = f"failed ({_cut(names, NOTE_NAMES)}) at {sha[:7]}"
        log.info("%s: PR #%d checks at %s: %s", rec["task"], number, sha[:7], verdict)
        rec["ci"] = verdict
        if verdict in (PASSED, FAILED, UNDECIDED):
            rec.update(ci_etags={}, ci_parts={})  # settled: this head is not read again

    def get_pages(self, path: str, etag: str | None,
                  field: str) -> tuple[str | None, list[dict]] | None:
        """The first page's ETag and the ``field`` list of every page of ``path`` (an
        envelope, as the checks and status endpoints answer); None if the first page is
        unchanged since ``etag`` (304)."""
        url: str | None = f"{self.repo_path}/{path}?per_page={PER_PAGE}"
        try:
            resp = self.gh.request("GET", url, etag=etag)
        except NotModified:
            return None
        first = resp.etag
        items = list((resp.data or {}).get(field) or [])
        url = resp.next_url
        while url:  # over 100 checks on one commit: rare, read whole
            resp = self.gh.request("GET", url)
            items += (resp.data or {}).get(field) or []
            url = resp.next_url
        return first, items

    def add_failure(self, rec: dict, failing: list[dict]) -> None:
        text = "\n\n".join(part["text"] for part in failing)
        sha = rec["head"]
        if add_item(self.cfg, rec["task"], Item(
                key=f"ci/{sha}", kind=CI, text=text, url=rec.get("url") or "",
                source=f"failing checks on {sha[:7]}")):
            log.info("%s: checks failed at %s: a rework item", rec["task"], sha[:7])

    def show_ci(self) -> None:
        """The verdict on each followed task's line (``- CI: …``), unless it is Active (a
        run's end rewrites that line's details); level-triggered, as a save may undo it."""
        notes = {rec["task"]: rec["ci_note"] for rec in self.prs.values() if rec.get("ci_note")}
        if not notes:
            return

        def show(board: tasks.Board) -> list[str]:
            shown = []
            for task, note in notes.items():
                found = board.find(task)
                if found and found[0] != tasks.ACTIVE and found[1].detail("CI") != note:
                    found[1].set_detail("CI", note)
                    shown.append(task)
            return shown

        if show(tasks.read_board(self.cfg.tasks_file)):  # a dry run: no lock when unchanged
            tasks.edit_tasks(self.cfg, show)

    # --- merged or closed ---
    def settle(self, number: int, rec: dict) -> None:
        """A followed PR left the open listing: merged, or closed without."""
        try:
            pr = self.gh.request("GET", f"{self.repo_path}/pulls/{number}").data or {}
        except NotFound:
            log.warning("%s: PR #%d is gone (404): no longer followed", rec["task"], number)
            del self.prs[str(number)]
            return
        if pr.get("state") == "open":
            return  # the listing lags behind
        task, url = rec["task"], rec.get("url") or str(pr.get("html_url") or "")
        state, when = ("merged", pr.get("merged_at")) if pr.get("merged_at") \
            else ("closed", pr.get("closed_at"))
        self.mark_marker(task, number, state, str(when or ""))
        emit(self.cfg.events_dir, f"pr_{state}", task, pr=number, url=url,
             key=f"pr/{number}/{state}", **{f"{state}_at": when})
        dropped = update_feedback(self.cfg, task, drop_rework)
        if dropped:
            log.info("%s: PR #%d %s: its rework is dropped (%s)", task, number, state,
                     ", ".join(dropped))
        detail = f"{url} ({state if state == 'merged' else 'closed unmerged'})"

        def show(board: tasks.Board) -> None:
            found = board.find(task)
            if found:
                found[1].set_detail("PR", detail)

        tasks.edit_tasks(self.cfg, show)
        log.info("%s: PR #%d %s", task, number, state)
        del self.prs[str(number)]

    def mark_marker(self, task: str, number: int, state: str, when: str) -> None:
        """``pr_state`` and ``merged_at`` (or ``closed_at``) in the task's PR marker, if it
        still names this PR (a retired task has none). Under the run record's lock, which
        retirement takes, so a marker being retired is not written back; its mtime is kept
        (the observer dates a completion by it)."""
        path = self.cfg.pr_marker(task)
        if not path.exists():
            return
        with file_lock(self.cfg.run_record_lock(task)):
            meta = read_pr_marker(self.cfg, task)
            if meta is None or meta.get("number") != number or meta.get("pr_state") == state:
                return
            stat = path.stat()
            field = "merged_at" if state == "merged" else "closed_at"
            write_record(path, {**meta, "pr_state": state, field: when})
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _place(comment: dict) -> str:
    """``path:line`` of a line comment (an outdated one by its original line)."""
    line = comment.get("line") or comment.get("original_line")
    return f"{comment.get('path') or '?'}:{line}" if line else str(comment.get("path") or "?")


def _check(run: dict) -> dict:
    """A check run as a verdict, with what the agent reads of a failure."""
    conclusion = str(run.get("conclusion") or "")
    name = str(run.get("name") or "?")
    if run.get("status") != "completed":
        verdict = PENDING
    else:
        verdict = PASSED if conclusion in PASSING else FAILED if conclusion in FAILING \
            else UNDECIDED
    text = ""
    if verdict == FAILED:
        output = run.get("output") or {}
        text = "\n".join(piece for piece in (
            f"check '{name}': {conclusion} ({run.get('details_url') or run.get('html_url') or ''})",
            _cut(output.get("title"), 300), _cut(output.get("summary")),
            _cut(output.get("text"))) if piece)
    return {"name": name, "verdict": verdict, "text": text}


def _status(status: dict) -> dict:
    """A commit status (the latest of its context) as a verdict."""
    state, name = str(status.get("state") or ""), str(status.get("context") or "?")
    verdict = (PENDING if state == "pending" else PASSED if state == "success"
               else FAILED if state in FAILING_STATUSES else UNDECIDED)
    text = ""
    if verdict == FAILED:
        text = (f"status '{name}': {state}: {_cut(status.get('description'), 300)}"
                f" ({status.get('target_url') or ''})")
    return {"name": name, "verdict": verdict, "text": text}
