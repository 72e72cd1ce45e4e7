"""What a program's log (logs/<program>.log under supervisord) holds: tac8's own lines, not a
library's chatter, and errors without Python's reprs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from shared.config import CHECKOUT
from shared.program import read_cycles
from tests.agents import wait_cycles, wait_for

# A program that watches a folder (watchdog logs every inotify event at DEBUG) and, in each
# cycle, has a library log an OSError at WARNING and chatter at INFO.
PROBE = """
import logging
import sys
from pathlib import Path
import shared.program as program

library = logging.getLogger("somelib.client")

def cycle():
    try:
        Path(sys.argv[1]).read_text()
    except OSError as exc:
        library.warning("cannot read %s", exc)
    library.info("connection #%d opened", 1)

with program.Program.from_argv("probe", sys.argv[2:]) as prog:
    prog.watch(prog.cfg.state_dir / "probe")
    prog.run(cycle, interval=3600)
"""


def test_a_program_logs_its_own_lines_and_a_librarys_warnings_only(sandbox, tmp_path):
    cfg = sandbox.cfg
    missing = tmp_path / "missing.toml"
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(missing), "--config", str(sandbox.config_path)],
        cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TAC8_LOG_LEVEL": "DEBUG"})
    try:
        wait_for(lambda: read_cycles(cfg.heartbeat("probe")) >= 1 or proc.poll() is not None,
                 what="the probe's first cycle")
        hints = iter(range(10**6))
        wait_cycles(cfg, "probe", 3,
                    nudge=lambda: (cfg.state_dir / "probe" / f"hint-{next(hints)}").write_text(""))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "probe INFO started" in out and "probe INFO stopped" in out
    assert "InotifyEvent" not in out and "in-event" not in out  # watchdog's DEBUG lines
    assert "connection #1 opened" not in out  # a library's INFO
    # a library's warning, named as the library's, its OSError without [Errno 2] or quotes
    assert f"probe WARNING somelib.client: cannot read No such file or directory: {missing}\n" in out
    assert "Errno" not in out
