"""The provider's usage limit: the parser (shared/usage_limit.py), the pause it causes
(shared/pause.py), and real workers, observer and launcher: a limited run burns no attempt,
launching pauses until the reset and resumes by itself, and ``tac8 resume`` overrides."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared import runs
from shared.clock import parse_iso, stamp
from shared.config import CHECKOUT
from shared.pause import (LIMIT_BACKOFF, LIMIT_BACKOFF_MAX, lift_if_over, limit_passed, pause,
                          pause_for_limit, pause_end, read_pause)
from shared.tasks import COMPLETED, PENDING
from shared.usage_limit import limit_reached
from tests.agents import use_agent, wait_for
from tests.test_observer_support import add_task, events, launch, line_of, section_of
from tests.test_observer_with_launcher import services  # noqa: F401 (a fixture)

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 10, 14, 2, tzinfo=BERLIN)  # a Tuesday afternoon in Berlin


def result(text: str, is_error: bool = True, **fields) -> dict:
    return {"type": "result", "subtype": "success", "is_error": is_error, "result": text,
            **fields}


def reset(text: str) -> datetime | None:
    limit = limit_reached(result(text), NOW)
    assert limit is not None, text
    return None if limit.reset_at is None else datetime.fromtimestamp(limit.reset_at, BERLIN)


def at(day: int, hour: int, minute: int = 0, zone: str = "Europe/Berlin") -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(BERLIN)


# --- the parser ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Claude AI usage limit reached|1773151200", at(10, 15)),
    ("You've hit your limit · resets 3pm (Europe/Berlin)", at(10, 15)),
    ("You've hit your session limit · resets 8:30pm (Asia/Tokyo)", at(11, 20, 30, "Asia/Tokyo")),
    ("You've hit your weekly limit · resets 5pm (America/Detroit)",
     at(10, 17, 0, "America/Detroit")),
    ("Claude usage limit reached. Your limit will reset at 9am (America/Chicago).",
     at(10, 9, 0, "America/Chicago")),
    ("5-hour limit reached · resets 2pm (Pacific/Auckland) · /upgrade to Max 20x",
     at(11, 14, 0, "Pacific/Auckland")),
    ("Weekly limit reached · resets Mar 12, 7pm (Europe/Moscow) ·",
     at(12, 19, 0, "Europe/Moscow")),
    ("Opus weekly limit reached ∙ resets Mar 14, 9am", at(14, 9)),  # no zone: the local one
    ("You've hit your limit · resets 1pm (Europe/Berlin)", at(11, 13)),  # past: tomorrow's
])
def test_each_form_of_reset_time_is_its_next_occurrence(text, expected):
    assert reset(text) == expected


@pytest.mark.parametrize("text", [
    "You've hit your limit · resets 2pm (Europe/Berlin)",  # 2 minutes late: not tomorrow's
    "Claude AI usage limit reached|1700000000",  # an epoch gone by
    "Opus weekly limit reached ∙ resets Mar 10",  # today, at an hour not given
    "Weekly limit reached · resets Jan 2, 7pm (Europe/Moscow)",  # next year's: too far
    "You've hit your limit · resets 3pm (Mars/Olympus_Mons)",  # a zone nobody knows
    'API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"later"}}',
    "Request failed with status code 429",
])
def test_a_limit_without_a_usable_reset_time_is_still_a_limit(text):
    assert reset(text) is None


def test_the_limit_may_be_in_the_errors_of_an_error_subtype():
    message = result("", subtype="error_during_execution",
                     errors=["Claude AI usage limit reached|1773151200"])
    assert limit_reached(message, NOW).reset_at == at(10, 15).timestamp()


@pytest.mark.parametrize("message", [
    result("Claude AI usage limit reached|1773151200", is_error=False),  # it succeeded
    result("API Error: overloaded"), result("fixed 1429 tests"), result("Error: 4290"),
    result("the rate limit module is tidy now"),
    {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "text", "text": "You've hit your limit · resets 3pm (Europe/Berlin)"}]}},
    {"type": "result", "is_error": True, "result": ["usage limit reached"]},
    None,
])
def test_anything_but_an_error_result_saying_so_is_no_limit(message):
    assert limit_reached(message, NOW) is None


# --- the pause -----------------------------------------------------------------------------

def test_without_a_reset_time_the_pause_grows_with_limits_in_a_row_until_one_passes(sandbox):
    cfg = sandbox.cfg
    now = datetime.now().astimezone().replace(microsecond=0)
    waits = []
    for _ in range(6):  # each limit met as soon as the launcher lifted the last pause
        hit, until = now, pause_for_limit(cfg, None, now)
        waits.append((until - hit).total_seconds())
        assert read_pause(cfg)["by"] == "worker" and pause_end(read_pause(cfg)) == until
        assert lift_if_over(cfg, "launcher", until - timedelta(seconds=1)) is None
        assert lift_if_over(cfg, "launcher", until)["until"]
        assert read_pause(cfg) is None
        now = until
    assert waits == [LIMIT_BACKOFF * 2 ** k for k in range(4)] + [LIMIT_BACKOFF_MAX] * 2
    assert not limit_passed(cfg, hit - timedelta(seconds=1))  # it ran when the limit was met
    assert limit_passed(cfg, hit + timedelta(seconds=1))  # it began after, and passed
    assert pause_for_limit(cfg, None, now) == now + timedelta(seconds=LIMIT_BACKOFF)
    assert "(no reset time given; 1 in a row: waiting 15 min)" in read_pause(cfg)["reason"]


def test_limits_met_together_count_once_and_a_persons_pause_is_left_alone(sandbox):
    cfg = sandbox.cfg
    now = datetime.now().astimezone().replace(microsecond=0)
    first = pause_for_limit(cfg, None, now)
    later = (now + timedelta(hours=2)).timestamp()
    assert pause_for_limit(cfg, None, now) == first  # a second worker: not a second in a row
    assert pause_end(read_pause(cfg)) == first
    assert pause_for_limit(cfg, later, now).timestamp() == later  # a later reset extends it
    assert pause_end(read_pause(cfg)).timestamp() == later
    assert read_pause(cfg)["reason"] == "auto: usage limit reached"

    pause(cfg, "cli", "deploy window")
    pause_for_limit(cfg, None, now)
    assert read_pause(cfg)["reason"] == "deploy window" and "until" not in read_pause(cfg)
    assert lift_if_over(cfg, "launcher", now + timedelta(days=9)) is None  # only `tac8 resume`


# --- real workers --------------------------------------------------------------------------

def test_a_limited_run_is_recorded_as_such_and_pauses_launching(sandbox):
    cfg = use_agent(sandbox, "usage-limit", "+3600")
    task = add_task(cfg, "Hit the limit")
    assert launch(cfg, task).wait() == 0
    meta = runs.read_run(cfg, task).meta
    paused = read_pause(cfg)
    assert meta["outcome"] == runs.FAILED and meta["usage_limit"] is True
    assert meta["error"].startswith("the agent hit the provider's usage limit: "
                                    "Claude AI usage limit reached|")
    assert paused["by"] == "worker" and paused["reason"] == "auto: usage limit reached"
    assert paused["until"] == meta["limit_resets"]
    reset_at = int(meta["error"].rsplit("|", 1)[1])
    assert parse_iso(meta["limit_resets"]).timestamp() == reset_at
    [finished] = events(cfg, "run_finished")
    assert finished["usage_limit"] is True
    assert [e["until"] for e in events(cfg, "paused")] == [meta["limit_resets"]]


def test_the_same_result_from_an_agent_that_is_not_stream_json_is_no_limit(sandbox):
    cfg = use_agent(sandbox, "usage-limit", "+3600", stream_json=False)
    task = add_task(cfg, "Plain output")
    assert launch(cfg, task).wait() == 0
    meta = runs.read_run(cfg, task).meta
    assert meta["outcome"] == runs.FAILED and "usage_limit" not in meta
    assert meta["error"] == "the agent exited with code 1"
    assert read_pause(cfg) is None


def tac8(*args: str) -> subprocess.CompletedProcess:
    """The CLI (TAC8_CONFIG names the sandbox's config)."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=60)


def test_a_limited_run_burns_no_attempt_and_a_persons_resume_overrides(sandbox, services):
    use_agent(sandbox, "usage-limit", "+3600")
    cfg = sandbox.write_config(launcher={"max_attempts": 1})  # a burnt attempt would fail it
    task = add_task(cfg, "Hit the limit")
    services()

    wait_for(lambda: section_of(cfg, task) == PENDING and line_of(cfg, task).detail("Retry"),
             timeout=60, what="the limited run back in Pending")
    until = pause_end(read_pause(cfg))
    assert until is not None and until > datetime.now().astimezone() + timedelta(minutes=50)
    assert line_of(cfg, task).detail("Retry") == f"attempt 1/1 not before {stamp(until)}"
    [retry] = events(cfg, "task_retry")
    assert (retry["attempt"], retry["reason"]) == (1, "usage_limit")
    assert parse_iso(retry["not_before"]) == until
    status = tac8("status").stdout
    assert f"PAUSED until {until:%H:%M}" in status or f"PAUSED until {until:%Y-%m-%d %H:%M}" \
        in status
    assert "auto: usage limit reached (by worker" in status

    use_agent(sandbox, "commit")
    other = add_task(cfg, "Runs once a person resumes")
    assert tac8("resume").stdout.strip() == "resumed"
    wait_for(lambda: section_of(cfg, other) == COMPLETED, timeout=60, what="the other task")
    assert section_of(cfg, task) == PENDING  # its own wait for the reset stands
    assert [(e["task"], e["attempt"]) for e in events(cfg, "worker_launched")] == \
        [(task, 1), (other, 1)]


def test_launching_resumes_by_itself_when_the_limit_resets(sandbox, services):
    use_agent(sandbox, "usage-limit", "+4")
    cfg = sandbox.write_config(launcher={"max_attempts": 1})
    task = add_task(cfg, "Hit the limit, then work")
    services()

    paused = wait_for(lambda: read_pause(cfg), timeout=60, what="the worker's pause")
    use_agent(sandbox, "commit")  # the attempt after the reset succeeds
    wait_for(lambda: section_of(cfg, task) == COMPLETED, timeout=60,
             what="the same attempt to run again after the reset, and complete")
    assert read_pause(cfg) is None
    [resumed] = events(cfg, "resumed")
    assert resumed["by"] == "launcher" and "usage limit reached" in resumed["reason"]
    [retry] = events(cfg, "task_retry")
    assert retry["not_before"] == paused["until"] and retry["reason"] == "usage_limit"
    assert [e["attempt"] for e in events(cfg, "worker_launched")] == [1, 1]
    relaunched = parse_iso(runs.read_run(cfg, task).meta["started"])
    assert relaunched >= pause_end(paused)
