from __future__ import annotations

import pytest

from tests.fakegithub import fake_github  # noqa: F401  (the fixture, for every test module)
from tests.sandbox import GIT_IDENTITY, Sandbox


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh tac8 installation with a real repository and origin; TAC8_CONFIG points at it."""
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    box = Sandbox(tmp_path / "tac8")
    monkeypatch.setenv("TAC8_CONFIG", str(box.config_path))
    return box
