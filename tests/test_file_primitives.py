"""Atomic writes, maildirs, lockfiles, liveness locks, frontmatter records."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from shared import fsio, locks, records

HOLD_FOREVER = "import sys, time; from shared.locks import hold; h = hold(sys.argv[1]); print('ok', flush=True); time.sleep(60)"


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    fsio.atomic_write(target, "one")
    inode = target.stat().st_ino
    fsio.atomic_write(target, b"two")
    assert target.read_text() == "two" and target.stat().st_ino != inode
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_maildir_names_sort_by_time_and_never_collide(tmp_path):
    box = tmp_path / "events"
    paths = [fsio.publish(box, f"item {n}") for n in range(200)]
    assert fsio.pending(box) == paths
    assert [p.read_text() for p in fsio.pending(box)][:2] == ["item 0", "item 1"]
    assert list((box / "tmp").iterdir()) == []


def test_sweep_tmp_removes_only_old_staged_files(tmp_path):
    box = tmp_path / "outbox"
    (box / "tmp").mkdir(parents=True)
    old, fresh = box / "tmp" / "old", box / "tmp" / "fresh"
    old.write_text("x")
    fresh.write_text("y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert fsio.sweep_tmp(box) == 1
    assert not old.exists() and fresh.exists()


def test_liveness_lock_is_seen_without_blocking_and_dies_with_its_process(tmp_path):
    lock = tmp_path / "runs" / "t-1.lock"
    assert not locks.is_held(lock) and not lock.exists()
    proc = subprocess.Popen([sys.executable, "-c", HOLD_FOREVER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        assert locks.is_held(lock)
        with pytest.raises(locks.AlreadyHeld, match=f"pid={proc.pid}"):
            locks.hold(lock, wait=0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not locks.is_held(lock)
    with locks.hold(lock):
        assert locks.is_held(lock)


def test_lock_descriptors_are_not_inherited_by_children(tmp_path):
    lock = tmp_path / "w.lock"
    held = locks.hold(lock)
    child = subprocess.Popen(["sleep", "30"])  # an agent outliving its worker
    try:
        held.release()
        assert not locks.is_held(lock)
    finally:
        child.kill()
        child.wait()


def test_record_round_trip_keeps_key_order_and_body_bytes(tmp_path):
    path = tmp_path / "r.md"
    meta = {"task": "gh-1", "attempt": 2, "outcome": None, "title": "colon: and 'quotes' ✅"}
    body = "line one\n\n  indented\ntrailing newline kept\n\n"
    records.write_record(path, meta, body)
    got = records.read_record(path)
    assert list(got.meta) == ["task", "attempt", "outcome", "title"]
    assert got.meta == meta and got.body == body


def test_record_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("no header here\n")
    with pytest.raises(records.RecordError, match="bad.md: no frontmatter"):
        records.read_record(bad)
    bad.write_text("---\n- a list\n---\n")
    with pytest.raises(records.RecordError, match="not a mapping"):
        records.read_record(bad)


def test_update_record_writes_only_on_change(tmp_path):
    path, lock = tmp_path / "r.md", tmp_path / "r.lock"
    records.update_record(path, lock, lambda r: r.meta.update(n=1))
    mtime = path.stat().st_mtime_ns
    assert records.update_record(path, lock, lambda r: r.meta["n"]) == 1
    assert path.stat().st_mtime_ns == mtime
