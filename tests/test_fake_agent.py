"""The fake agent's usage-limit ending has the shape of Claude Code's (tests/agents)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.agents import FAKE_AGENT


def run_agent(*args: str) -> tuple[list[dict], int]:
    done = subprocess.run([sys.executable, str(FAKE_AGENT), *args,
                           "--output-format", "stream-json", "--verbose"],
                          input=b"the prompt", capture_output=True, timeout=30)
    return [json.loads(line) for line in done.stdout.splitlines()], done.returncode


@pytest.mark.parametrize("args, subtype, text", [
    ((), "success", "Claude AI usage limit reached|1767225600"),
    (("1767225600", "error_during_execution"), "error_during_execution",
     "Claude AI usage limit reached|1767225600"),
    (("clock",), "success", "You've hit your limit · resets 3pm (Europe/Berlin)"),
])
def test_usage_limit_ends_in_an_error_result_and_exit_1(args, subtype, text):
    messages, code = run_agent("usage-limit", *args)

    final = messages[-1]
    assert code == 1 and final["type"] == "result"
    assert (final["is_error"], final["subtype"], final["result"]) == (True, subtype, text)
    assert messages[-2]["message"]["content"][0]["text"] == text


def test_usage_limit_reset_can_be_relative():
    before = int(time.time())
    messages, _ = run_agent("usage-limit", "+3600")
    epoch = int(messages[-1]["result"].rpartition("|")[2])
    assert before + 3600 <= epoch <= int(time.time()) + 3600
