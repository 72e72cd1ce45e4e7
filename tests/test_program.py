"""The one wait loop every program runs (shared/program.py), in a probe process whose loop
has no timer: only a wake-up can end its wait, so a test that passes proves the wake-up."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from shared.config import CHECKOUT
from shared.program import read_cycles
from tests.agents import wait_for

PROBE = """
import sys
import shared.program as program

program.HEARTBEAT_EVERY = 10**6  # the loop's longest sleep: no timer turns it in a test
with program.Program.from_argv("probe", sys.argv[1:]) as prog:
    prog.watch(prog.cfg.state_dir / "probe")
    prog.run(lambda: None, interval=10**6)
"""


@pytest.fixture
def probe(sandbox):
    proc = subprocess.Popen([sys.executable, "-c", PROBE, "--config", str(sandbox.config_path)],
                            cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, umask=0o022)  # a permissive parent: the program's own counts
    cfg = sandbox.cfg
    wait_for(lambda: read_cycles(cfg.heartbeat("probe")) >= 1 or proc.poll() is not None,
             what="the probe's first cycle")
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_a_stop_signal_ends_the_wait_at_once(sandbox, probe):
    probe.send_signal(signal.SIGTERM)
    out, _ = probe.communicate(timeout=60)  # liveness only: without the wake-up, 11 days
    assert probe.returncode == 0, out
    assert "probe INFO stopped\n" in out and "(cold)" not in out


def test_a_file_event_in_a_watched_folder_runs_a_cycle(sandbox, probe):
    cfg = sandbox.cfg
    before = read_cycles(cfg.heartbeat("probe"))
    (cfg.state_dir / "probe" / "hint").write_text("")
    wait_for(lambda: read_cycles(cfg.heartbeat("probe")) > before,
             what="a cycle after the file event")  # liveness only: no timer would turn it
    assert probe.poll() is None


def test_what_a_program_creates_is_private_to_its_user(sandbox, probe):
    """Started with umask 022, a program still makes its folders and files with no group or
    other permission (umask 077: the launcher's workers and their agents inherit it)."""
    cfg = sandbox.cfg
    made = [cfg.state_dir, cfg.heartbeats_dir, cfg.heartbeat("probe"), cfg.locks_dir,
            cfg.program_lock("probe"), cfg.state_dir / "probe"]
    modes = {str(path): oct(path.stat().st_mode & 0o777) for path in made}
    assert [path for path, mode in modes.items() if int(mode, 8) & 0o077] == [], modes
