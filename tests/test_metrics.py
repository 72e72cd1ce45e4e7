"""The metrics fold, in process: counters, history, health, the write rules, crash safety."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from services import metrics as metrics_module
from services.metrics import Metrics, prometheus_text, state_path
from shared.events import emit
from shared.fsio import pending, publish
from shared.health import HEARTBEAT_STALE, PROGRAMS, read_metrics
from shared.records import render_record


def _table_types() -> list[str]:
    """Every event type in the event table of docs/PROTOCOL.md (the contract with the
    emitters): the backquoted names in the first cell of each row."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    return [name for line in section.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])]


def _event(cfg, kind, at: datetime | None = None, task=None, **details):
    """Publish an event with a chosen time (emit() always stamps now)."""
    meta = {"type": kind, "at": (at or datetime.now().astimezone()).isoformat(timespec="seconds"),
            "program": "test"}
    if task:
        meta["task"] = task
    meta.update(details)
    return publish(cfg.events_dir, render_record(meta))


def _beat_all(cfg):
    for program in PROGRAMS:
        cfg.heartbeat(program).parent.mkdir(parents=True, exist_ok=True)
        cfg.heartbeat(program).touch()


def test_every_event_type_lands_in_the_right_counter_and_the_history(sandbox):
    cfg = sandbox.cfg
    types = _table_types()
    assert {"worker_launched", "run_finished", "pr_created", "worktree_error", "paused", "resumed"} <= set(types)
    details = {
        "run_finished": [dict(outcome="pr", cost_usd=0.25, tokens=1000, seconds=60),
                         dict(outcome="failed", cost_usd=0.5, tokens=2000, seconds=30),
                         dict(outcome="blocked", cost_usd=0.0, tokens=10, seconds=5),
                         dict(outcome="stopped", cost_usd=0.125, tokens=20, seconds=5)],
        "rate_limit": [dict(remaining=4321, reset="2026-11-24T11:00:00+00:00")],
    }
    emitted = []
    for kind in types:
        for extra in details.get(kind, [dict(error="boom", issue=7)]):
            emit(cfg.events_dir, kind, task="gh-7", **extra)
            emitted.append(kind)
    m = Metrics(cfg)
    assert m.fold_pending() == len(emitted)
    assert pending(cfg.events_dir) == []
    assert m.publish()
    data = read_metrics(cfg)
    assert data["workers_launched"] == 1
    assert (data["workers_completed"], data["workers_failed"], data["workers_blocked"],
            data["workers_stopped"]) == (1, 1, 1, 1)
    assert data["prs_created"] == 1 and data["worktree_errors"] == 1 and data["github_api_errors"] == 1
    assert data["launch_failures"] == 1
    assert data["github_rate_limit_remaining"] == 4321
    assert data["cost_usd_total"] == 0.875 and data["cost_usd_today"] == 0.875
    assert data["tokens_total"] == 3030 and data["tokens_today"] == 3030
    # one PR merged of one merged, one closed unmerged and one task failed
    assert (data["prs_merged"], data["prs_closed_unmerged"], data["success_rate"]) == (1, 1, 0.333)
    assert data["events"] == {kind: emitted.count(kind) for kind in set(emitted)}
    assert [h["type"] for h in data["history"]] == emitted
    first = data["history"][0]
    assert set(first) == {"timestamp", "type", "details"}
    assert first["details"]["task"] == "gh-7" and first["details"]["error"] == "boom"
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    for field in ("workers_launched", "workers_completed", "workers_failed", "workers_blocked",
                  "prs_created", "worktree_errors", "github_api_errors", "uptime_seconds",
                  "last_update", "health", "history"):
        assert field in data


def test_history_keeps_the_last_configured_number_of_events(sandbox):
    cfg = sandbox.write_config(metrics={"history": 7})
    for n in range(20):
        emit(cfg.events_dir, "task_added", task=f"gh-{n}", issue=n)
    m = Metrics(cfg)
    m.fold_pending()
    m.publish()
    history = read_metrics(cfg)["history"]
    assert [h["details"]["issue"] for h in history] == list(range(13, 20))


def test_launch_to_pr_median_active_workers_and_pending_count(sandbox):
    cfg = sandbox.cfg
    t0 = datetime.now().astimezone() - timedelta(minutes=30)
    for n, minutes in enumerate((10, 20, 4)):
        _event(cfg, "worker_launched", t0, task=f"gh-{n}")
        _event(cfg, "pr_created", t0 + timedelta(minutes=minutes), task=f"gh-{n}")
    (sandbox.root / "tasks.md").write_text("## Pending\n[] gh-1: one\n[] t-2: two\n\n## Active\n[🟡 w-1] gh-3: three\n")
    cfg.runs_dir.mkdir(parents=True)
    from shared.locks import hold
    with hold(cfg.liveness_lock("gh-3")):
        m = Metrics(cfg)
        m.fold_pending()
        data = m.snapshot()
    assert data["median_seconds_launch_to_pr"] == 600.0
    assert data["tasks_pending"] == 2
    assert data["workers_active"] == 1
    assert Metrics(cfg).snapshot()["workers_active"] == 0  # the lock died with its holder


def test_launch_to_pr_is_timed_per_run_whatever_comes_between(sandbox):
    """A run's run_finished may be folded between its launch and its pr_created; a task's
    earlier run that failed does not lend its launch time to the run that made the PR."""
    cfg = sandbox.cfg
    t0 = datetime.now().astimezone() - timedelta(hours=1)
    _event(cfg, "worker_launched", t0, task="gh-1", worker_id="w-1")
    _event(cfg, "run_finished", t0 + timedelta(minutes=5), task="gh-1", worker_id="w-1",
           outcome="failed")
    _event(cfg, "worker_launched", t0 + timedelta(minutes=10), task="gh-1", worker_id="w-2")
    _event(cfg, "run_finished", t0 + timedelta(minutes=20), task="gh-1", worker_id="w-2",
           outcome="pr")
    _event(cfg, "pr_created", t0 + timedelta(minutes=20, seconds=1), task="gh-1",
           worker_id="w-2")
    m = Metrics(cfg)
    m.fold_pending()
    assert m.snapshot()["median_seconds_launch_to_pr"] == 601.0
    assert m.tally.launched_at == {}  # both runs are over: nothing left to wait for


def test_success_rate_is_merged_over_finished_once_a_pr_was_merged_or_closed(sandbox):
    cfg = sandbox.cfg
    for n, outcome in enumerate(("pr", "pr", "pr", "failed")):
        emit(cfg.events_dir, "run_finished", task=f"gh-{n}", outcome=outcome)
    m = Metrics(cfg)
    m.fold_pending()
    m.publish()
    data = read_metrics(cfg)
    assert (data["success_rate"], data["prs_merged"], data["prs_closed_unmerged"]) == (0.75, 0, 0)

    for n, kind in ((1, "pr_merged"), (2, "pr_merged"), (1, "pr_merged"), (3, "pr_closed")):
        emit(cfg.events_dir, kind, task=f"gh-{n}", key=f"pr/{n}/{kind[3:]}")  # #1 twice: one
    emit(cfg.events_dir, "task_failed", task="gh-4")
    m.fold_pending()
    m.publish()
    data = read_metrics(cfg)
    assert (data["prs_merged"], data["prs_closed_unmerged"]) == (2, 1)
    assert data["success_rate"] == 0.5  # 2 merged of 2 + 1 closed + 1 task failed
    assert "tac8_prs_merged_total 2" in prometheus_text(data)


def test_tasks_md_problems_are_counted_and_listed(sandbox):
    cfg = sandbox.cfg
    (sandbox.root / "tasks.md").write_text("## Pendng\n[] t-1: lost\n\n## Pending\n"
                                          "[] t-2: urgent {p9}\n[] t-3: fine\n")
    data = Metrics(cfg).snapshot()
    assert data["tasks_problems"] == 2 and data["tasks_pending"] == 2
    assert [(p["line"], p["text"]) for p in data["tasks_problem_lines"]] == \
        [(1, "## Pendng"), (5, "[] t-2: urgent {p9}")]
    assert "did you mean '## Pending'?" in data["tasks_problem_lines"][0]["problem"]
    assert "tac8_tasks_problems 2\n" in prometheus_text(data)


def test_health_rises_with_errors_and_recovers_as_they_age_out(sandbox):
    cfg = sandbox.cfg
    _beat_all(cfg)
    window = 120.0  # injected: the default is an hour
    m = Metrics(cfg, window=window)
    now = time.time()
    start = datetime.fromtimestamp(int(now) - 60).astimezone()

    def health(at):
        return m.snapshot(now=at)["health"]

    assert health(now) == "ok"
    for n in range(6):  # errors at start+0 .. start+5
        _event(cfg, "worktree_error", start + timedelta(seconds=n), error="git worktree add failed")
    m.fold_pending()
    assert health(now) == "warning"
    for n in range(6, 11):
        _event(cfg, "worktree_error", start + timedelta(seconds=n))
    m.fold_pending()
    assert health(now) == "degraded"
    for n in range(11, 21):
        _event(cfg, "worktree_error", start + timedelta(seconds=n))
    m.fold_pending()
    assert health(now) == "critical"
    assert m.snapshot(now=now)["health_reasons"] == ["21 worktree errors in the window"]
    # Each error leaves the window 120 s after it happened; health steps back down.
    base = int(now) - 60 + window
    assert health(base + 0.5) == "degraded"  # start+0 is out: 20 left
    assert health(base + 9.5) == "degraded"  # 11 left
    assert health(base + 10.5) == "warning"  # 10 left
    assert health(base + 15.5) == "ok"  # 5 left
    assert health(base + 21) == "ok"
    assert m.snapshot(now=base + 21)["worktree_errors"] == 21  # the totals stay


def test_github_errors_and_failures_set_health(sandbox):
    cfg = sandbox.cfg
    _beat_all(cfg)
    m = Metrics(cfg, window=100.0)
    t0 = datetime.now().astimezone() - timedelta(seconds=90)
    later = t0.timestamp() + 101  # the errors at t0 have left the window
    for n in range(11):
        _event(cfg, "github_api_error", t0, error="HTTP 502", status=502)
    _event(cfg, "task_failed", t0, task="gh-1")
    m.fold_pending()
    assert m.snapshot()["health"] == "critical"
    assert m.snapshot(now=later)["health"] == "ok"
    _event(cfg, "task_failed", t0 + timedelta(seconds=60), task="gh-2")
    m.fold_pending()
    assert m.snapshot(now=later)["health"] == "degraded"  # 1 failure, 0 completions in the window
    assert m.snapshot(now=later)["health_reasons"] == \
        ["1 tasks failed vs 0 completed in the window"]
    _event(cfg, "task_completed", t0 + timedelta(seconds=70), task="gh-3")
    m.fold_pending()
    assert m.snapshot(now=later)["health"] == "ok"


def test_health_counts_a_task_that_failed_once_when_it_finally_fails(sandbox):
    """One task failing its three attempts beside two completed tasks: each failed attempt
    is a run_finished, but only the last is a failed task."""
    cfg = sandbox.cfg
    _beat_all(cfg)
    m = Metrics(cfg)
    t0 = datetime.now().astimezone() - timedelta(minutes=10)
    for n, task in enumerate(("gh-2", "gh-3")):
        _event(cfg, "run_finished", t0, task=task, worker_id=f"w-{n}", outcome="pr")
        _event(cfg, "task_completed", t0, task=task, worker_id=f"w-{n}")
    for attempt in (1, 2, 3):
        _event(cfg, "run_finished", t0 + timedelta(minutes=attempt), task="gh-1",
               worker_id=f"w-a{attempt}", outcome="failed")
        if attempt < 3:
            _event(cfg, "task_retry", t0 + timedelta(minutes=attempt), task="gh-1",
                   worker_id=f"w-a{attempt}", attempt=attempt + 1)
    m.fold_pending()
    assert m.snapshot()["health"] == "ok"  # three failed runs, but the task is retried
    assert m.snapshot()["recent"]["tasks_failed"] == 0
    _event(cfg, "task_failed", t0 + timedelta(minutes=3), task="gh-1", worker_id="w-a3")
    m.fold_pending()
    data = m.snapshot()
    assert (data["recent"]["tasks_failed"], data["recent"]["tasks_completed"]) == (1, 2)
    assert data["health"] == "ok" and data["workers_failed"] == 3  # the totals count runs


def test_an_event_stamped_in_the_future_still_ages_out(sandbox):
    cfg = sandbox.cfg
    _beat_all(cfg)
    m = Metrics(cfg, window=60.0)
    for n in range(11):
        _event(cfg, "github_api_error", datetime.now().astimezone() + timedelta(days=1))
    m.fold_pending()
    assert m.snapshot()["health"] == "critical"
    assert m.snapshot(now=time.time() + 61)["health"] == "ok"


def test_a_stale_or_missing_heartbeat_makes_health_at_least_warning(sandbox):
    cfg = sandbox.cfg
    _beat_all(cfg)
    m = Metrics(cfg)
    assert m.snapshot()["health"] == "ok"
    import os
    old = time.time() - HEARTBEAT_STALE - 5
    os.utime(cfg.heartbeat("observer"), (old, old))
    data = m.snapshot()
    assert data["health"] == "warning"
    assert data["heartbeats"]["observer"]["stale"] and not data["heartbeats"]["fetcher"]["stale"]
    assert data["heartbeats"]["observer"]["age_seconds"] >= HEARTBEAT_STALE
    assert any("observer" in r for r in data["health_reasons"])
    cfg.heartbeat("fetcher").unlink()
    assert m.snapshot()["heartbeats"]["fetcher"] == {"age_seconds": None, "stale": True}
    _beat_all(cfg)
    assert m.snapshot()["health"] == "ok"


def test_metrics_json_is_not_rewritten_when_only_the_clock_moved(sandbox):
    cfg = sandbox.cfg
    _beat_all(cfg)
    emit(cfg.events_dir, "worker_launched", task="gh-1")
    m = Metrics(cfg)
    m.fold_pending()
    assert m.publish()
    inode = cfg.paths.metrics.stat().st_ino
    before = read_metrics(cfg)
    m.started -= 60  # a minute later: uptime and last_update differ, nothing else does
    later = time.time() + 60
    moved = {k: m.snapshot(now=later)[k] for k in ("uptime_seconds", "last_update")}
    assert all(moved[k] != before[k] for k in moved), (moved, before)
    assert not m.publish(now=later)
    assert cfg.paths.metrics.stat().st_ino == inode
    # a restarted program does not rewrite an up-to-date file either
    assert not Metrics(cfg).publish()
    emit(cfg.events_dir, "worker_launched", task="gh-2")
    m.fold_pending()
    assert m.publish() and read_metrics(cfg)["workers_launched"] == 2


class _CountedClock:
    """The metrics loop's monotonic clock, moved only by the test and by the loop's sleeps."""

    def __init__(self, cfg):
        self.cfg = cfg  # also the part of Program that Service uses: cfg and sleep
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.now += seconds
        return True


def test_the_loop_writes_at_most_once_per_min_write_interval_however_many_events_arrive(
        sandbox, monkeypatch):
    cfg = sandbox.cfg
    interval = cfg.metrics.min_write_interval
    clock = _CountedClock(cfg)
    monkeypatch.setattr(metrics_module, "time", SimpleNamespace(monotonic=clock.monotonic,
                                                                time=time.time))
    service = metrics_module.Service(clock)
    writes = []  # the clock at each write of metrics.json
    publish = service.metrics.publish

    def counted_publish() -> bool:
        wrote = publish()
        if wrote:
            writes.append(clock.now)
        return wrote
    monkeypatch.setattr(service.metrics, "publish", counted_publish)
    for batch in range(10):  # 100 events every half second: each batch wakes the loop
        for n in range(100):
            emit(cfg.events_dir, "worker_launched", task=f"gh-{batch * 100 + n}")
        service.cycle()
        clock.now += 0.5
    assert len(writes) == 10 and read_metrics(cfg)["workers_launched"] == 1000
    assert all(b - a >= interval for a, b in zip(writes, writes[1:])), writes
    for _ in range(3):  # nothing new: no write, however often the loop turns
        service.cycle()
        clock.now += interval
    assert len(writes) == 10


def test_prometheus_textfile_is_written_with_metrics_json(sandbox):
    prom = sandbox.root / "textfile" / "tac8.prom"
    cfg = sandbox.write_config(metrics={"prometheus_file": str(prom)})
    emit(cfg.events_dir, "worker_launched", task="gh-1")
    emit(cfg.events_dir, "run_finished", task="gh-1", outcome="pr", cost_usd=1.5, tokens=10)
    m = Metrics(cfg)
    m.fold_pending()
    umask = os.umask(0o077)  # the metrics program's
    try:
        m.publish()
    finally:
        os.umask(umask)
    assert prom.stat().st_mode & 0o777 == 0o644  # node_exporter reads it as another user
    assert cfg.paths.metrics.stat().st_mode & 0o077 == 0
    text = prom.read_text()
    assert "tac8_workers_launched_total 1\n" in text
    assert "tac8_workers_completed_total 1\n" in text
    assert "tac8_cost_usd_total 1.5\n" in text
    assert 'tac8_health{level="warning"} 1\n' in text and 'tac8_health{level="ok"} 0\n' in text
    assert "# TYPE tac8_workers_active gauge" in text
    assert "success_ratio 1.0" in text
    # every sample line is `name{labels} number`
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r'tac8_\w+(\{\w+="\w+"\})? -?[\d.]+', line), line
    assert text == prometheus_text(read_metrics(cfg))


def test_a_crash_between_the_state_write_and_the_deletes_counts_nothing_twice(sandbox, monkeypatch):
    cfg = sandbox.cfg
    monkeypatch.setattr(metrics_module, "FOLD_BATCH", 10)
    for n in range(35):
        emit(cfg.events_dir, "worker_launched", task=f"gh-{n}")

    deleted = []
    real_unlink = type(cfg.events_dir).unlink

    def dying_unlink(path, missing_ok=False):
        if len(deleted) == 14:  # the second batch is durable, 4 of its 10 files are gone
            raise KeyboardInterrupt("killed")
        deleted.append(path)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(type(cfg.events_dir), "unlink", dying_unlink)
    with pytest.raises(KeyboardInterrupt):
        Metrics(cfg).fold_pending()
    monkeypatch.setattr(type(cfg.events_dir), "unlink", real_unlink)
    saved = json.loads(state_path(cfg).read_text())
    assert saved["counts"] == {"worker_launched": 20} and len(saved["seen"]) == 20
    assert len(pending(cfg.events_dir)) == 21

    m = Metrics(cfg)
    assert m.fold_pending() == 15  # the 6 left from the durable batch are seen, not counted
    assert m.snapshot()["workers_launched"] == 35
    assert pending(cfg.events_dir) == []


def test_the_deletes_of_a_batch_are_made_durable_before_the_next_state_write(
        sandbox, monkeypatch):
    """A later state write forgets old keys (SEEN_KEEP); if the deletes of the events those
    keys stood for were not yet durable, a power cut would bring the events back unremembered
    and they would be counted twice. So after each batch's deletes, events/new is fsync'd."""
    cfg = sandbox.cfg
    monkeypatch.setattr(metrics_module, "FOLD_BATCH", 10)
    for n in range(25):
        emit(cfg.events_dir, "worker_launched", task=f"gh-{n}")
    new_dir = os.path.realpath(cfg.events_dir / "new")
    journal: list[str] = []  # "unlink", "fsync new/", "state" in the order they happened
    real_unlink, real_fsync = type(cfg.events_dir).unlink, os.fsync
    real_write = metrics_module.atomic_write

    def unlink(path, missing_ok=False):
        if os.path.realpath(path.parent) == new_dir:
            journal.append("unlink")
        real_unlink(path, missing_ok=missing_ok)

    def fsync(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}") == new_dir:
            journal.append("fsync new/")
        real_fsync(fd)

    def write(path, data, **kwargs):
        if Path(path) == state_path(cfg):
            journal.append("state")
        real_write(path, data, **kwargs)

    monkeypatch.setattr(type(cfg.events_dir), "unlink", unlink)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(metrics_module, "atomic_write", write)
    assert Metrics(cfg).fold_pending() == 25
    assert journal.count("state") == 3 and journal.count("unlink") == 25
    for n, step in enumerate(journal):
        if step == "unlink":  # the next step after this batch's deletes is their fsync
            assert next((s for s in journal[n:] if s != "unlink"), None) == "fsync new/", journal
    assert journal[-1] == "fsync new/"


def test_an_event_repeated_under_its_key_is_counted_once_and_the_memory_is_bounded(
        sandbox, monkeypatch):
    cfg = sandbox.cfg
    monkeypatch.setattr(metrics_module, "SEEN_KEEP", 5)
    emit(cfg.events_dir, "run_finished", "t-1", outcome="pr", key="t-1/w-1/run_finished")
    m = Metrics(cfg)
    assert m.fold_pending() == 1
    # a producer that redid its step after a crash: the same key again, in a later batch
    emit(cfg.events_dir, "run_finished", "t-1", outcome="failed", key="t-1/w-1/run_finished")
    assert Metrics(cfg).fold_pending() == 0
    assert Metrics(cfg).snapshot()["workers_completed"] == 1
    assert Metrics(cfg).snapshot()["workers_failed"] == 0
    for n in range(7):
        emit(cfg.events_dir, "worker_launched", f"t-{n}")
    Metrics(cfg).fold_pending()
    assert len(json.loads(state_path(cfg).read_text())["seen"]) == 5


def test_unreadable_events_are_counted_and_dropped(sandbox):
    cfg = sandbox.cfg
    publish(cfg.events_dir, "not frontmatter at all")
    publish(cfg.events_dir, b"\xff\xfe binary")
    emit(cfg.events_dir, "task_added", task="gh-1")
    m = Metrics(cfg)
    assert m.fold_pending() == 3
    data = m.snapshot()
    assert data["events_unreadable"] == 2 and data["events"] == {"task_added": 1}
    assert pending(cfg.events_dir) == []


def test_cost_today_resets_on_a_new_day(sandbox):
    cfg = sandbox.cfg
    now = datetime.now().astimezone()
    _event(cfg, "run_finished", now - timedelta(days=1), task="gh-1", outcome="pr", cost_usd=2.0, tokens=100)
    _event(cfg, "run_finished", now, task="gh-2", outcome="pr", cost_usd=0.5, tokens=7)
    m = Metrics(cfg)
    m.fold_pending()
    data = m.snapshot()
    assert (data["cost_usd_today"], data["tokens_today"]) == (0.5, 7)
    assert (data["cost_usd_total"], data["tokens_total"]) == (2.5, 107)
    tomorrow = (now + timedelta(days=1)).timestamp()
    assert m.snapshot(now=tomorrow)["cost_usd_today"] == 0.0


def test_a_comment_sent_is_counted_beside_the_event_that_queued_it(sandbox):
    """The observer's event and the fetcher's comment_sent name the same comment key; each
    has a key of its own, so neither hides the other."""
    cfg = sandbox.cfg
    emit(cfg.events_dir, "task_completed", "gh-1", key="gh-1/w-1/completed")
    emit(cfg.events_dir, "comment_sent", "gh-1", comment="gh-1/w-1/completed",
         key="gh-1/w-1/completed/sent")
    metrics = Metrics(cfg)
    assert metrics.fold_pending() == 2
    assert metrics.tally.counts == {"task_completed": 1, "comment_sent": 1}
