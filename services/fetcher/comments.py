"""The conversation: comments people write on tasks' issues and on tac8's pull requests.

One repo-wide listing per poll (``GET /repos/{o}/{r}/issues/comments?since=…``, ETag'd, so
an unchanged poll costs one 304) covers issue and PR conversation comments. A comment by a
trusted author (the rule that gates issues), never one of tac8's own (its login and its
marker: a person may run tac8 under their own account), that is

* on the issue of a Blocked task and newer than tac8's question there: the answer, a
  feedback item (``rounds`` sends the task back to Pending with it);
* ``/tac8 stop`` (``[github] command``) on a task's issue or PR: ``STOP`` in its tree, if it runs;
* ``/tac8 retry``: a Stopped, Failed or Blocked task back to Pending;
* ``/tac8 <anything else>`` on tac8's PR: a rework request, a feedback item;

is acted on, and a command gets a reaction: 👍 carried out, 😕 not (unknown, or the task
is not where the command applies). Comments by others are counted and otherwise ignored.
A comment is handled once: its id is remembered (the last ``HANDLED_KEPT``) and every effect
is idempotent, so a crash before the fetcher's memory is saved only repeats a handling.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from shared import tasks
from shared.clock import parse_iso
from shared.config import Config
from shared.feedback import ANSWER, COMMAND, Item, add_item
from shared.fsio import atomic_write
from shared.github import AuthError, GitHub, NotFound, Rejected
from shared.issues import trusted
from shared.runs import read_run

log = logging.getLogger("fetcher")

HANDLED_KEPT = 2000
FIRST_LOOK_BACK = 3600.0  # seconds of comments read when the fetcher has never looked
SINCE_MARGIN = 60  # seconds the listing's cursor stays behind the newest comment seen
OWN_MARK = "<!-- tac8:"  # every comment tac8 posts ends with one (shared.outbox.comment_marker)
_QUESTION_MARK = re.compile(r"<!-- tac8:(gh-\d+)/(w-[0-9a-zA-Z]+)/blocked -->")
RETRYABLE = (tasks.STOPPED, tasks.FAILED, tasks.BLOCKED)


def github_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _summary(comment: dict) -> dict:
    """What the listing cache keeps of a comment (the ETag does the rest)."""
    return {"id": comment.get("id"), "updated_at": comment.get("updated_at")}


class Comments:
    def __init__(self, cfg: Config, gh: GitHub, memory: dict,
                 task_of_pr: Callable[[int], str | None]):
        self.cfg, self.gh, self.memory = cfg, gh, memory
        self.task_of_pr = task_of_pr
        memory.setdefault("since", github_time(time.time() - FIRST_LOOK_BACK))
        memory.setdefault("handled", [])
        # issue number → tac8's question comment there: its id and the worker that asked
        memory.setdefault("asked", {})
        memory.setdefault("ignored", 0)  # comments by untrusted authors about a task

    def poll(self, changed: bool = True) -> None:
        """Read the comments if anything they could be on changed: a comment moves its
        issue's or PR's ``updated_at``, so the issue and pulls listings the poll made change
        too (an idle poll then costs no request here). ``due`` holds a change until a read
        succeeds."""
        memory = self.memory
        if changed:
            memory["due"] = True
        if not memory.get("due", True) and memory.get("pages"):
            return
        listing = self.gh.list_repo_comments(memory["since"], cached=memory.get("pages") or [],
                                             project=_summary)
        handled = set(memory["handled"])
        for comment in listing.fresh:  # tac8's questions first: what came after them answers
            question = _QUESTION_MARK.search(str(comment.get("body") or ""))
            if question and self.ours(comment) and "/pull/" not in str(comment.get("html_url")):
                memory["asked"][str(_issue_number(comment))] = {"id": comment.get("id"),
                                                                "worker": question.group(2)}
        for comment in listing.fresh:
            if comment.get("id") in handled:
                continue
            self.handle(comment)
            memory["handled"] = [*memory["handled"], comment.get("id")][-HANDLED_KEPT:]
            handled.add(comment.get("id"))
        memory["pages"] = listing.pages
        newest = parse_iso(max((str(c.get("updated_at") or "") for c in listing.items),
                               default="") or None)
        if newest is not None:
            # the next listing starts a little before the newest comment seen: one GitHub
            # lists late is still read (the handled ids skip the rest)
            cursor = github_time(newest.timestamp() - SINCE_MARGIN)
            if cursor > memory["since"]:
                memory["since"] = cursor
        self.forget_questions()
        memory["due"] = False

    def forget_questions(self) -> None:
        """Keep tac8's questions only for the issues of tasks that are Blocked now."""
        blocked = {str(tasks.issue_number(t.id)) for t in
                   tasks.read_board(self.cfg.tasks_file).tasks(tasks.BLOCKED) if t.id}
        asked = self.memory["asked"]
        for issue in [n for n in asked if n not in blocked]:
            del asked[issue]

    # --- one comment ---
    def handle(self, comment: dict) -> None:
        body = str(comment.get("body") or "")
        login = str((comment.get("user") or {}).get("login") or "")
        number = _issue_number(comment)
        if number is None:
            return
        on_pr = "/pull/" in str(comment.get("html_url") or "")
        task = self.task_of_pr(number) if on_pr else tasks.issue_task(number)
        if self.ours(comment):
            return
        if task is None:
            return
        if not trusted(self.cfg, login, str(comment.get("author_association") or "")):
            self.memory["ignored"] += 1
            log.info("comment %s on #%d by %r ignored: not a trusted author", comment.get("id"),
                     number, login)
            return
        words = command_words(body, self.cfg.github.command)
        if words is not None:
            self.command(comment, task, words, on_pr, login)
        elif not on_pr and self.section(task) == tasks.BLOCKED and self.answers(comment, task):
            if add_item(self.cfg, task, Item(
                    key=f"comment/{comment['id']}", kind=ANSWER, text=body,
                    source=f"answer by {login}", url=str(comment.get("html_url") or ""),
                    at=str(comment.get("created_at") or ""))):
                log.info("%s: answered by %s in a comment", task, login)

    def ours(self, comment: dict) -> bool:
        """tac8's own comment: its marker, under its login (a person may run tac8 under their
        own account: their comments have no marker)."""
        login = str((comment.get("user") or {}).get("login") or "")
        return OWN_MARK in str(comment.get("body") or "") and login.lower() == self.gh.login().lower()

    def answers(self, comment: dict, task: str) -> bool:
        """Whether the comment came after tac8 asked: after the blocked run's question comment
        (ids grow with time; GitHub's times are whole seconds and this box's clock may be off),
        else after the run ended."""
        record = read_run(self.cfg, task)
        meta = record.meta if record else {}
        question = self.memory["asked"].get(str(_issue_number(comment)))
        if isinstance(question, dict) and question.get("worker") == meta.get("worker_id"):
            return int(comment.get("id") or 0) > int(question.get("id") or 0)
        # this run's question is not out yet (or was never seen): what people said before the
        # run ended is no answer to it (by the clocks, GitHub's and this box's)
        ended = parse_iso(meta.get("finished"))
        written = parse_iso(str(comment.get("created_at") or ""))
        return written is not None and (ended is None or written >= ended.replace(microsecond=0))

    def section(self, task: str) -> str | None:
        found = tasks.read_board(self.cfg.tasks_file).find(task)
        return found[0] if found else None

    # --- commands ---
    def command(self, comment: dict, task: str, words: list[str], on_pr: bool,
                login: str) -> None:
        verb = words[0].lower() if words else ""
        done = steer(self.cfg, task, verb, login)
        if done is None and on_pr and words:
            done = True
            add_item(self.cfg, task, Item(
                key=f"comment/{comment['id']}", kind=COMMAND,
                text=after_command(str(comment.get("body")), self.cfg.github.command),
                source=f"request by {login}", url=str(comment.get("html_url") or ""),
                at=str(comment.get("created_at") or "")))
        log.info("%s: %s %s by %s: %s", task, self.cfg.github.command, verb or "(nothing)",
                 login, "done" if done else "not applicable")
        self.react(comment, "+1" if done else "confused")


    def react(self, comment: dict, content: str) -> None:
        try:
            self.gh.react(int(comment["id"]), content)
        except (Rejected, NotFound, AuthError) as exc:  # a locked issue, a token without
            log.warning("could not react to comment %s: %s", comment.get("id"), exc)  # the right


def steer(cfg: Config, task: str, verb: str, login: str) -> bool | None:
    """``stop`` or ``retry`` carried out for ``task`` (from a comment or a review comment):
    whether it applied; None for any other verb."""
    if verb == "stop":
        tree = cfg.tree(task)
        found = tasks.read_board(cfg.tasks_file).find(task)
        if not found or found[0] != tasks.ACTIVE or not tree.is_dir():
            return False
        if not (tree / "STOP").exists():
            atomic_write(tree / "STOP", f"{cfg.github.command} stop by {login} (tac8 fetcher)\n")
        return True
    if verb == "retry":
        return tasks.edit_tasks(cfg, lambda board: _retry(board, task, login))
    return None


def _issue_number(comment: dict) -> int | None:
    url = str(comment.get("issue_url") or "")
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def command_words(body: str, word: str) -> list[str] | None:
    """The words after the command word on the comment's first line; None if it is none."""
    first = body.strip().split("\n", 1)[0].strip()
    if not word or not first.lower().startswith(word.lower()):
        return None
    rest = first[len(word):]
    if rest and not rest[0].isspace():
        return None  # "/tac8x" is not "/tac8"
    return rest.split()


def after_command(body: str, word: str) -> str:
    """A rework request's text: the comment without its command word."""
    return body.strip()[len(word):].strip()


def _retry(board: tasks.Board, task: str, login: str) -> bool:
    """Pure change: a Stopped, Failed or Blocked task back to Pending, as a person's move
    would (its marker still names its last run's worker)."""
    found = board.find(task)
    if found is None or found[0] not in RETRYABLE:
        return False
    board.move(found[1], tasks.PENDING, marker=found[1].marker,
               details=[("Requeued", f"retry asked by {login} on GitHub")])
    return True
