"""The fetcher: the one tac8 program that talks to GitHub (files and keys: docs/PROTOCOL.md).

``python -m services.fetcher [--config PATH]``. Each poll turns the open issues that carry the
trigger label and have a trusted author (``author_association``, or ``allowed_authors``) into
issue snapshots and Pending ``gh-N`` lines (priority from a ``priority:P0``…``P3`` label),
removes the Pending line of an issue closed or unlabelled (an Active one gets ``STOP``), and
writes the PR marker of an Active task whose branch heads an open PR of this repository; it
follows tac8's open PRs (``pulls``: reviews, CI, merges) and the comments (``comments``), and
starts rounds (``rounds``). Then it sends the outbox. With ``[github] repo`` empty it only keeps
its heartbeat.

A poll costs O(1) requests whatever the number of tasks, plus O(PRs that changed): the
label's issue pages, the PR pages (once, while a task is Active or a PR is followed), the
comments, each sent with its last ETag, so an unchanged poll gets only 304s (no rate limit
spent). A rate limit stops every call until its reset (at most an hour: a Pi's clock may be
wrong); a failed poll backs off exponentially with jitter up to ``BACKOFF_CAP``. The memory
(``state/fetcher.md``) is saved only after a poll's effects, so a failed or killed poll loses
nothing. The outbox has a backoff of its own (``send_outbox``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Callable

from watchdog.events import FileCreatedEvent, FileMovedEvent

from services.fetcher.comments import Comments
from services.fetcher.memory import Memory
from services.fetcher.pulls import PullRequests
from services.fetcher.rounds import start_rounds
from shared import outbox, tasks
from shared.clock import iso_at
from shared.events import emit, run_key
from shared.feedback import carried_rework
from shared.fsio import atomic_write, sweep_tmp
from shared.github import (AuthError, GitHub, GitHubError, Listing, NotFound, RateLimited,
                           Rejected, Unavailable)
from shared.issues import read_issue, trusted, withdrawn
from shared.program import Program
from shared.records import Record, render_record
from shared.runs import read_pr_marker, read_run, write_pr_marker

log = logging.getLogger("fetcher")

BACKOFF_CAP = 600.0  # seconds between attempts during an outage, at most
RATE_WAIT_CAP = 3600.0  # the primary limit resets within an hour; a Pi's clock may be off
SEND_ATTEMPTS = 5  # failed sends of one outbox item before it is set aside in bad/
POSTED_BODY_LIMIT = 65000  # characters of an outbox item posted; GitHub rejects over 65536
# A send whose outcome is unknown (a timeout, a 5xx, a reset connection, a crash) may still
# land: GitHub has been seen to write a comment after its client gave up. Before such an item
# is sent again, this many [github] timeouts pass, then tac8 looks among its own comments.
SETTLE_TIMEOUTS = 2
_PRIORITY_LABEL = re.compile(r"priority:\s*p([0-3])", re.I)


def issue_summary(issue: dict) -> dict:
    """The snapshot's frontmatter: what tac8 keeps of an issue besides its body."""
    return {
        "number": int(issue["number"]),
        "title": str(issue.get("title") or ""),
        "url": str(issue.get("html_url") or ""),
        "author": str((issue.get("user") or {}).get("login") or ""),
        "author_association": str(issue.get("author_association") or ""),
        "labels": [str(label["name"] if isinstance(label, dict) else label)
                   for label in issue.get("labels") or []],
        "state": str(issue.get("state") or ""),
        "updated_at": str(issue.get("updated_at") or ""),
    }


def pr_summary(pr: dict) -> dict:
    head = pr.get("head") or {}
    return {"number": pr.get("number"), "url": pr.get("html_url") or "",
            "ref": head.get("ref") or "", "label": head.get("label") or "",
            "sha": head.get("sha") or "", "created_at": pr.get("created_at") or "",
            "updated_at": pr.get("updated_at") or ""}


def priority_of(labels: list[str]) -> int:
    found = [int(m.group(1)) for name in labels if (m := _PRIORITY_LABEL.fullmatch(name.strip()))]
    return min(found, default=tasks.DEFAULT_PRIORITY)


class Fetcher:
    def __init__(self, cfg, gh: GitHub | None, stopping: Callable[[], bool] = lambda: False):
        self.cfg = cfg
        self.gh = gh
        self.stopping = stopping
        self.memory = Memory(cfg.state_dir / "fetcher.md")
        self.owner = (cfg.github.repo.split("/")[0] if cfg.github.repo else "").lower()
        self.next_poll = 0.0  # monotonic
        self.not_before = 0.0  # monotonic: no GitHub call before this (a rate limit)
        self.failures = 0
        self.outbox_failures = 0  # consecutive outbox passes in which a send failed
        self.failing_parts: set[str] = set()  # follow_up reads failing since their last success
        self.outbox_retry_at = 0.0  # monotonic: no retry of a failed item before this
        self.outbox_blocked = False  # the last failure fails every call: nothing is sent
        self.last_rate_bucket: int | None = None
        # outbox item name → monotonic time after which a maybe-sent item may be checked
        self.settling: dict[str, float] = {}
        self.settle = SETTLE_TIMEOUTS * cfg.github.timeout
        self._archive_key: tuple | None = None
        self._archive_ids: set[str] = set()
        self._open_pulls: Listing | None = None  # this poll's listing (see open_pulls)
        self.pulls = PullRequests(cfg, gh, self.memory.section("pulls")) \
            if gh is not None else None
        self.comments = Comments(cfg, gh, self.memory.section("comments"), self.pulls.task_of) \
            if gh is not None else None

    def seconds_until_due(self) -> float:
        """How long the loop may sleep before a poll or the end of a wait is due."""
        if self.gh is None:
            return float("inf")  # nothing to poll: only the heartbeat wakes the loop
        due = self.next_poll
        if self.outbox_blocked or self.memory.attempts:
            due = min(due, self.outbox_retry_at)
        if self.settling:
            due = min(due, *self.settling.values())
        return max(due, self.not_before) - time.monotonic()

    # --- the loop body ---
    def step(self) -> None:
        """One turn of the loop: poll when due, then send the outbox; never raises
        ``GitHubError`` (it turns into a wait)."""
        if self.gh is None or time.monotonic() < self.not_before:
            return
        try:
            try:
                if time.monotonic() >= self.next_poll:
                    self.poll_or_back_off()
            finally:
                # The outbox goes out even when the poll failed (a bug, a lock timeout
                # included): its failures are its own (it raises only RateLimited), and a PR
                # or comment waits for no listing.
                self.send_outbox()
        except RateLimited as exc:
            wait = min(RATE_WAIT_CAP, max(1.0, exc.reset_at - time.time()))
            self.not_before = time.monotonic() + wait
            log.warning("rate limited (%s): waiting %.0fs", exc, wait)
            emit(self.cfg.events_dir, "rate_limit", remaining=exc.remaining,
                 reset=iso_at(exc.reset_at))
            self.last_rate_bucket = 0
        else:
            self._note_rate()

    def poll_or_back_off(self) -> None:
        """A poll; a failed one (not a rate limit) is retried after a backoff of its own.
        A failure that is not GitHub's (a lock held too long, a damaged file, a bug) is
        backed off too, then raised for the loop to log."""
        try:
            self.poll()
        except RateLimited:
            raise
        except Exception as exc:
            if not isinstance(exc, GitHubError):
                self.failures += 1
                self.next_poll = time.monotonic() + self.backoff(self.failures)
                raise
            if self.stopped():
                return  # a call cut short by SIGTERM is not an error
            self.failures += 1
            wait = self.backoff(self.failures)
            self.next_poll = time.monotonic() + wait
            log.warning("GitHub call failed (%s): attempt %d, next in %.1fs",
                        exc, self.failures, wait)
            emit(self.cfg.events_dir, "github_api_error", error=str(exc)[:300],
                 status=exc.status)
        else:
            self.next_poll = time.monotonic() + self.cfg.github.poll_interval
            self.failures = 0

    def stopped(self) -> bool:
        return self.stopping()

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row: doubling from
        ``poll_interval``, capped at ``BACKOFF_CAP``, with jitter within [½, 1]."""
        ceiling = min(BACKOFF_CAP, max(self.cfg.github.poll_interval, 0.1)
                      * 2.0 ** min(failures - 1, 32))
        return random.uniform(ceiling / 2, ceiling)

    def _note_rate(self) -> None:
        """A ``rate_limit`` event when the remaining budget moves by a tenth of the limit
        (not one per poll: events are files, and an SD card wears out)."""
        rate = self.gh.rate
        if rate is None or not rate.limit:
            return
        bucket = min(10, rate.remaining * 10 // rate.limit)
        if bucket != self.last_rate_bucket:
            self.last_rate_bucket = bucket
            emit(self.cfg.events_dir, "rate_limit", remaining=rate.remaining,
                 reset=iso_at(rate.reset) if rate.reset else None)

    # --- polling ---
    def poll(self) -> None:
        cfg = self.cfg
        self._open_pulls = None
        listing = self.gh.list_issues(cfg.github.label, cached=self._revalidatable(),
                                      project=issue_summary)
        current = {item["number"]: item for item in listing.items}
        eligible = {n: item for n, item in current.items() if self.trusted(item)}
        for raw in listing.fresh:
            if int(raw["number"]) in eligible:
                self.write_snapshot(issue_summary(raw), raw.get("body") or "")
        self.refresh_vanished(current, listing.changed)
        self.retire_tasks(current)
        self.add_tasks(eligible)
        self.note_ignored(current, eligible)
        self.memory.issues = listing.pages
        try:
            self.follow_up("PRs", lambda: (self.find_prs(), self.pulls.poll(self.open_pulls)))
            pulls_changed = self._open_pulls is not None and self._open_pulls.changed
            self.follow_up("comments",
                           lambda: self.comments.poll(listing.changed or pulls_changed))
            start_rounds(cfg)
        finally:  # each part keeps what it has done in its memory, so a failure saves it too
            self.memory.save()

    def follow_up(self, part: str, read: Callable[[], object]) -> None:
        """One of the poll's reads after the issues (tac8's PRs, the comments): a failure
        there (not a rate limit) is its own, retried at the next poll, and neither stops the
        others nor backs the poll off: with GitHub answering, a stray 502 on one of a
        poll's dozen calls must not hold back the issues, PRs and comments. It is logged,
        and an event sent, once per streak."""
        try:
            read()
        except RateLimited:
            raise
        except GitHubError as exc:
            if self.stopped():
                return
            if part not in self.failing_parts:
                self.failing_parts.add(part)
                log.warning("reading %s failed (%s): again at the next poll", part, exc)
                emit(self.cfg.events_dir, "github_api_error", error=str(exc)[:300],
                     status=exc.status, during=part)
        else:
            self.failing_parts.discard(part)

    def trusted(self, issue: dict) -> bool:
        return trusted(self.cfg, issue["author"], issue["author_association"])

    def _revalidatable(self) -> list[dict]:
        """The cached issue pages; a page holding an eligible issue whose snapshot is
        missing is refetched in full (its ETag dropped) so the snapshot can be written."""
        pages = []
        for page in self.memory.issues:
            if any(self.trusted(i) and not self.cfg.issue_snapshot(i["number"]).exists()
                   for i in page.get("items", [])):
                page = {**page, "etag": None}
            pages.append(page)
        return pages

    def read_snapshot(self, number: int) -> Record | None:
        return read_issue(self.cfg, number)

    def write_snapshot(self, summary: dict, body: str) -> None:
        path = self.cfg.issue_snapshot(summary["number"])
        text = render_record(summary, body)
        try:
            if path.read_text(encoding="utf-8") == text:
                return  # unchanged: spare the SD card
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        atomic_write(path, text)

    def refresh_vanished(self, current: dict[int, dict], changed: bool) -> None:
        """Fetch each issue whose snapshot says open and labelled but that is no longer in
        the list (one request per such issue, once: its snapshot is then updated)."""
        board = tasks.read_board(self.cfg.tasks_file)
        candidates = {n for t in board.tasks() if (n := tasks.issue_number(t.id)) is not None}
        if changed:
            candidates |= {i["number"] for page in self.memory.issues for i in page["items"]}
        for number in sorted(candidates - set(current)):
            snapshot = self.read_snapshot(number)
            if snapshot is None or withdrawn(self.cfg, snapshot.meta):
                continue
            try:
                issue = self.gh.get_issue(number)
            except NotFound:
                self.write_snapshot({**snapshot.meta, "state": "deleted"}, snapshot.body)
                continue
            self.write_snapshot(issue_summary(issue), issue.get("body") or "")

    def retire_tasks(self, current: dict[int, dict]) -> None:
        """Remove Pending tasks and stop Active ones whose issue was closed or unlabelled."""
        board = tasks.read_board(self.cfg.tasks_file)
        reasons: dict[str, str] = {}
        for section in (tasks.PENDING, tasks.ACTIVE):
            for task in board.tasks(section):
                number = tasks.issue_number(task.id)
                if number is None or number in current:
                    continue
                snapshot = self.read_snapshot(number)
                reason = withdrawn(self.cfg, snapshot.meta) if snapshot else None
                if reason:
                    reasons[task.id] = reason

        def remove(board: tasks.Board) -> list[str]:
            gone = [t for t in board.tasks(tasks.PENDING) if t.id in reasons]
            for task in gone:
                board.remove(task)
            return [t.id for t in gone]

        removed = tasks.edit_tasks(self.cfg, remove) if any(
            t.id in reasons for t in board.tasks(tasks.PENDING)) else []
        for task_id in removed:
            log.info("%s: issue %s, task removed", task_id, reasons[task_id])
            emit(self.cfg.events_dir, "task_removed", task=task_id,
                 issue=tasks.issue_number(task_id), reason=reasons[task_id], was="pending")
        for task in board.tasks(tasks.ACTIVE):
            if task.id not in reasons:
                continue
            tree = self.cfg.tree(task.id)
            stop = tree / "STOP"
            if tree.is_dir() and not stop.exists():
                atomic_write(stop, f"issue {reasons[task.id]} (tac8 fetcher)\n")
                log.info("%s: issue %s, STOP written", task.id, reasons[task.id])
                emit(self.cfg.events_dir, "task_removed", task=task.id,
                     issue=tasks.issue_number(task.id), reason=reasons[task.id], was="active")

    def archived(self) -> set[str]:
        """Task ids in the archive, re-read only when an archive file changed."""
        directory = self.cfg.archive_dir
        try:
            key = tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                               for e in os.scandir(directory) if e.name.endswith(".md")))
        except FileNotFoundError:
            key = ()
        if key != self._archive_key:
            self._archive_ids = tasks.archived_ids(directory)
            self._archive_key = key
        return self._archive_ids

    def add_tasks(self, eligible: dict[int, dict]) -> None:
        board = tasks.read_board(self.cfg.tasks_file)
        known = board.ids() | self.archived()
        new = [eligible[n] for n in sorted(eligible) if tasks.issue_task(n) not in known]
        if not new:
            return

        def add(board: tasks.Board) -> list[tasks.Task]:
            taken = board.ids() | self.archived()
            return [board.add(issue["title"], task_id=tasks.issue_task(issue['number']),
                              priority=priority_of(issue["labels"]))
                    for issue in new if tasks.issue_task(issue['number']) not in taken]

        for task in tasks.edit_tasks(self.cfg, add):
            log.info("%s: added to Pending", task.id)
            emit(self.cfg.events_dir, "task_added", task=task.id,
                 issue=tasks.issue_number(task.id), title=task.title)

    def note_ignored(self, current: dict[int, dict], eligible: dict[int, dict]) -> None:
        ignored = {n for n in current if n not in eligible}
        for number in sorted(ignored - self.memory.ignored):
            issue = current[number]
            log.info("issue #%d ignored: author %r (%s) is not trusted", number,
                     issue["author"], issue["author_association"])
            emit(self.cfg.events_dir, "issue_ignored", issue=number, author=issue["author"],
                 association=issue["author_association"])
        self.memory.ignored = ignored

    def find_prs(self) -> None:
        """PR markers for Active tasks whose branch heads an open PR of this repository, each
        naming the worker on the Active line (the run it completes); no request for it while
        nothing is Active."""
        active = {t.id: t.worker for t in tasks.read_board(self.cfg.tasks_file).tasks(tasks.ACTIVE)
                  if t.id and t.worker}
        if not active:
            return
        heads = {pr["label"].lower(): pr for pr in self.open_pulls().items}
        for task_id, worker in active.items():
            pr = heads.get(f"{self.owner}:{self.cfg.branch(task_id)}".lower())
            if pr is None or self.cfg.pr_marker(task_id).exists():
                continue
            write_pr_marker(self.cfg, task_id, worker_id=worker, url=pr["url"],
                            number=pr["number"], head=pr["ref"], commit=pr["sha"],
                            found_by="fetcher")
            self.pulls.track(task_id, pr["number"], pr["sha"], pr["url"])
            log.info("%s: PR #%s found, marker written", task_id, pr["number"])

    def open_pulls(self) -> Listing:
        """The open PRs of the repository, listed once a poll for whoever asks first
        (``find_prs``, ``pulls``). Pages cached before the listing kept ``updated_at`` are
        fetched in full once."""
        if self._open_pulls is None:
            cached = self.memory.pulls
            if any("updated_at" not in item for page in cached for item in page["items"]):
                cached = []
            self._open_pulls = self.gh.list_pulls(cached=cached, project=pr_summary)
            self.memory.pulls = self._open_pulls.pages
        return self._open_pulls

    # --- outbox ---
    def send_outbox(self) -> None:
        """One pass over ``cur/`` then ``new/``, oldest first; raises only ``RateLimited``.

        A failure never delays a poll. One that would fail any call alike
        (``fails_every_call``) ends the pass and the whole outbox waits for its backoff; any
        other (a 403 may be about that one item) only holds back the failed items, and new
        items go out at once. Each failure counts against its item (``SEND_ATTEMPTS``, then
        ``bad/``); the outbox emits one ``github_api_error`` when it starts failing, not one
        per attempt (that would make health critical and pause launching over a comment)."""
        retrying = time.monotonic() >= self.outbox_retry_at
        if self.outbox_blocked and not retrying:
            return
        claimed = outbox.claimed(self.cfg)
        self._forget_attempts_of_gone({p.name for p in claimed})
        suspects = {p.name for p in claimed}
        now = time.monotonic()
        for name in suspects - set(self.settling):  # claimed before this process started
            self.settling[name] = now + self.settle
        self.settling = {n: t for n, t in self.settling.items() if n in suspects}
        failure: GitHubError | None = None
        for item in claimed + outbox.waiting(self.cfg):
            if self.stopped():
                return
            if item.name in self.memory.attempts and not retrying:
                continue  # failed before: waits for the retry time
            if self.settling.get(item.name, 0.0) > now:
                continue  # may still land: looked for once it has had time to
            if item.name not in suspects:
                item = outbox.claim(self.cfg, item)
            try:
                self.send_item(item, maybe_sent=item.name in suspects)
            except RateLimited:
                raise
            except GitHubError as exc:
                if self.stopped():
                    return
                failure = exc
                if fails_every_call(exc):
                    break
        self.end_pass(failure)

    def _forget_attempts_of_gone(self, present: set[str]) -> None:
        """Drop the failure counts of items no longer in ``cur/`` (a person moved them)."""
        if set(self.memory.attempts) - present:
            self.memory.attempts = {n: c for n, c in self.memory.attempts.items()
                                    if n in present}
            self.memory.save()

    def count_failure(self, item: Path, exc: GitHubError, sending: outbox.Item) -> None:
        attempts = self.memory.attempts.pop(item.name, 0) + 1
        if attempts >= SEND_ATTEMPTS:
            self.set_aside(item, f"{attempts} sends failed, the last: {exc}", sending)
        else:
            self.memory.attempts[item.name] = attempts
            log.warning("outbox item %s: send failed (%s), attempt %d of %d",
                        item.name, exc, attempts, SEND_ATTEMPTS)
        self.memory.save()

    def end_pass(self, failure: GitHubError | None) -> None:
        """Schedule the retry of failed items, or end a failing streak."""
        if failure is None:
            if not self.memory.attempts and self.outbox_failures:
                log.info("outbox: sending again after %d failed passes", self.outbox_failures)
                self.outbox_failures = 0
                self.outbox_blocked = False
            return
        self.outbox_failures += 1
        wait = self.backoff(self.outbox_failures)
        self.outbox_retry_at = time.monotonic() + wait
        self.outbox_blocked = fails_every_call(failure)
        log.warning("outbox: a send failed (%s); %s retried in %.1fs", failure,
                    "the outbox is" if self.outbox_blocked else "failed items are", wait)
        if self.outbox_failures == 1:
            emit(self.cfg.events_dir, "github_api_error", error=str(failure)[:300],
                 status=failure.status, during="outbox")

    def send_item(self, item: Path, maybe_sent: bool) -> None:
        """Make the GitHub write of one claimed item; an unsendable one goes to ``bad/``.
        Raises the ``GitHubError`` of a send that may work later. Only a refusal (401, 403)
        counts against the item: a rate limit, a call SIGTERM cut short, or GitHub out of
        reach (5xx, a timeout) does not, and the item waits as long as GitHub is down."""
        try:
            sending = outbox.read_item(item)
        except outbox.MalformedItem as exc:
            return self.set_aside(item, f"malformed: {exc}")
        if sending.key in self.memory.sent:
            item.unlink()
            return
        try:
            if sending.kind == outbox.OPEN_PR:
                self.open_pr(sending)
            else:
                self.post_comment(sending, maybe_sent)
        except (NotFound, Rejected) as exc:
            return self.set_aside(item, f"{sending.kind}: {exc}", sending)
        except RateLimited:
            raise
        except GitHubError as exc:
            if isinstance(exc, Unavailable):  # it may have been written all the same
                self.settling[item.name] = time.monotonic() + self.settle
            if not self.stopped() and not isinstance(exc, Unavailable):
                self.count_failure(item, exc, sending)  # refused: after a few, set aside
            raise
        self.settling.pop(item.name, None)
        self.memory.remember_sent(sending.key)
        self.memory.attempts.pop(item.name, None)
        self.memory.save()
        item.unlink()

    def post_comment(self, sending: outbox.Item, maybe_sent: bool) -> None:
        issue, key = sending.issue, sending.key
        marker = outbox.comment_marker(key)
        if maybe_sent and self.posted_before(issue, marker):
            log.info("outbox %s: already on issue #%d", key, issue)
        else:
            body = sending.body[:POSTED_BODY_LIMIT].rstrip("\n")
            self.gh.post_comment(issue, f"{body}\n\n{marker}\n")
            log.info("outbox %s: comment posted on issue #%d", key, issue)
        emit(self.cfg.events_dir, "comment_sent", task=sending.task, issue=issue,
             comment=key, key=f"{key}/sent")  # its own key: the comment's is the observer's event's

    def open_pr(self, sending: outbox.Item) -> None:
        """The pushed branch's PR: the open one for its head, else a new one (so a retry
        after a timeout never opens a second); then the task's PR marker."""
        pr, meta = self.gh.find_open_pr(sending.meta["head"]), sending.meta
        created = pr is None
        if created and self.reworked_an_ended_pr(sending):
            # its PR was merged or closed while the round ran: a person decided; the round's
            # commits stay on the branch, and the run completes as pushed, without a new PR
            write_pr_marker(self.cfg, sending.task, worker_id=meta["worker_id"], url="",
                            number=None, head=meta["head"], commit=str(meta.get("commit") or ""),
                            found_by="fetcher")
            log.info("%s: its PR ended during a rework round: pushed, no new PR", sending.task)
            return
        if created:
            pr = self.gh.create_pr(meta["head"], meta["base"], meta["title"],
                                   sending.body[:POSTED_BODY_LIMIT])
        url, number = str(pr.get("html_url") or pr.get("url") or ""), pr.get("number")
        write_pr_marker(self.cfg, sending.task, worker_id=meta["worker_id"], url=url,
                        number=number, head=meta["head"], commit=str(meta.get("commit") or ""),
                        found_by="fetcher")
        self.pulls.track(sending.task, number, str((pr.get("head") or {}).get("sha")
                                                   or meta.get("commit") or ""), url)
        log.info("%s: PR #%s %s", sending.task, number, "opened" if created else "found open")
        if created:
            emit(self.cfg.events_dir, "pr_created", sending.task, url=url, number=number,
                 worker_id=meta["worker_id"],
                 key=run_key(sending.task, meta["worker_id"], "pr_created"))

    def reworked_an_ended_pr(self, sending: outbox.Item) -> bool:
        """Whether the queued PR is a rework round's whose PR was merged or closed since."""
        marker = read_pr_marker(self.cfg, sending.task) or {}
        record = read_run(self.cfg, sending.task)
        keys = (record.meta.get("feedback") or []) if record and \
            record.meta.get("worker_id") == sending.meta.get("worker_id") else []
        return marker.get("pr_state") in ("merged", "closed") \
            and carried_rework(self.cfg, sending.task, keys)

    def posted_before(self, issue: int, marker: str) -> bool:
        """Whether a comment on ``issue`` written by tac8's own login carries ``marker``
        (anyone may write a marker: an agent's quoted text, a visitor)."""
        ours = self.gh.login().lower()
        return any(marker in (c.get("body") or "")
                   and str((c.get("user") or {}).get("login") or "").lower() == ours
                   for c in self.gh.list_comments(issue))

    def set_aside(self, item: Path, why: str, sending: outbox.Item | None = None) -> None:
        """Move an item that will not be sent to ``outbox/bad/``. A PR GitHub refused to
        open fails its run: the PR marker says so, and the observer retries or fails it."""
        log.error("outbox item %s set aside in bad/: %s", item.name, why)
        outbox.set_aside(self.cfg, item)
        self.memory.attempts.pop(item.name, None)
        self.memory.save()
        if sending is not None and sending.kind == outbox.OPEN_PR:
            meta = sending.meta
            write_pr_marker(self.cfg, sending.task, worker_id=meta["worker_id"], url="",
                            number=None, head=meta["head"], commit=str(meta.get("commit") or ""),
                            found_by="fetcher", error=f"GitHub did not open the PR: {why}"[:300])
            emit(self.cfg.events_dir, "pr_refused", sending.task, reason=why[:300],
                 worker_id=meta["worker_id"])
            return
        emit(self.cfg.events_dir, "comment_set_aside", item=item.name,
             issue=sending.issue if sending else None, comment=sending.key if sending else None,
             reason=why[:300])


def fails_every_call(exc: GitHubError) -> bool:
    """Whether ``exc`` says GitHub cannot be reached or will not take any call from us
    (5xx, network, timeout, bad credentials, gh not logged in) rather than refusing one
    request (a 403 may be a token without the right to comment, or a locked issue)."""
    return isinstance(exc, Unavailable) or (isinstance(exc, AuthError)
                                            and exc.status in (None, 401))


def main(argv: list[str] | None = None) -> int:
    with Program.from_argv("fetcher", argv) as prog:
        gh = GitHub.from_config(prog.cfg)
        if gh is None:
            prog.log.info("[github] repo is empty: nothing to fetch, keeping the heartbeat")
        fetcher = Fetcher(prog.cfg, gh, lambda: prog.stopping)
        sweep_tmp(prog.cfg.outbox_dir)  # items a crashed producer never finished staging
        # A comment queued by the observer wakes the loop; otherwise it sleeps until a poll
        # (or the end of a backoff) is due: an idle Pi should not pay for a ticking loop.
        prog.watch(prog.cfg.outbox_dir / "new", event_filter=[FileCreatedEvent, FileMovedEvent])
        prog.run(fetcher.step, interval=fetcher.seconds_until_due)
    return 0

