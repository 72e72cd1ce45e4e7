from __future__ import annotations

import os

import pytest

from tests.fakegithub import fake_github  # noqa: F401  (the fixture, for every test module)
from tests.sandbox import GIT_IDENTITY, Sandbox

# Every program the tests start rewrites its heartbeat (its cycle count) after each cycle, so
# a test waits for cycles (tests.agents.wait_cycles), never for an amount of time.
os.environ["TAC8_HEARTBEAT_EVERY"] = "0"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh tac8 installation with a real repository and origin; TAC8_CONFIG points at it."""
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    box = Sandbox(tmp_path / "tac8")
    monkeypatch.setenv("TAC8_CONFIG", str(box.config_path))
    return box
