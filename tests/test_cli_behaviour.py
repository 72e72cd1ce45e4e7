"""How the tac8 command line behaves for a person: refused arguments, output to a pipe,
the terminal's width, the version, errors without Python's reprs."""

from __future__ import annotations

import os
import signal
import subprocess
import tomllib
from importlib import metadata

import pytest

from services.cli.layout import columns, shorten, wrap
from services.cli.main import version
from services.metrics import Metrics
from shared.config import CHECKOUT
from shared.errors import describe
from shared.events import emit
from tests.agents import wait_for
from tests.test_cli import QUEUE, TAC8, _one_line_error, cli, environment, tac8
from tests.test_cli import installed  # noqa: F401 (a fixture)

LONG_TITLE = ("Teach the parser to read nested brackets, explain the grammar in the README "
              "with worked examples, and keep every existing test passing")
# a launch failure whose reason comes last, as git's do
LONG_ERROR = ("fatal: could not create work tree dir '/srv/tac8/trees/gh-7': the filesystem "
              "refused it after several attempts and the reason: No space left on device")


def _pyproject_version() -> str:
    return tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("interval", ["0", "-1", "0.1", "nan", "inf", "soon"])
def test_an_interval_under_half_a_second_is_refused_in_one_line(interval):
    result = tac8("status", "--watch", "--interval", interval)
    _one_line_error(result, 2, "--interval", "at least 0.5", repr(interval))
    assert result.stdout == ""


def test_watch_into_a_pipe_prints_each_refresh_after_a_rule_without_escape_codes(installed):
    # SIGINT as a terminal sends it (a test run in the background inherits it ignored)
    proc = subprocess.Popen([str(TAC8), "status", "--watch", "--interval", "0.5"], cwd=CHECKOUT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = bytearray()
    os.set_blocking(proc.stdout.fileno(), False)

    def refreshed_twice() -> bool:
        output.extend(proc.stdout.read() or b"")
        return output.count(b"\n---\n") >= 2
    try:
        wait_for(refreshed_twice, what="two refreshes after the first")
    finally:
        proc.send_signal(signal.SIGINT)
    os.set_blocking(proc.stdout.fileno(), True)
    out, err = proc.communicate(timeout=60)
    output.extend(out)
    assert proc.returncode == 0 and b"Traceback" not in err
    assert b"\x1b" not in output
    pages = output.decode().split("---\n")
    assert len(pages) >= 3 and pages[0].startswith("tac8   health:")
    assert all(page.startswith("tac8   health:") and "launched 3" in page for page in pages[:-1])


def test_tac8_version_prints_the_projects_version():
    for result in (tac8("--version"), cli("--version")):
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"tac8 {_pyproject_version()}\n"


def test_the_version_of_a_checkout_that_is_not_installed_is_pyprojects(monkeypatch):
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", not_installed)
    assert version() == _pyproject_version()


def _long_queue(installed) -> None:
    (installed.root / "tasks.md").write_text(QUEUE.replace("Add docstrings", LONG_TITLE))
    emit(installed.cfg.events_dir, "launch_failed", task="gh-7", error=LONG_ERROR)
    metrics = Metrics(installed.cfg)
    metrics.fold_pending()
    metrics.publish()


@pytest.mark.parametrize("width", [None, "60"])  # piped: 80 columns; else the terminal's
def test_status_wraps_a_long_title_between_words_within_the_width(installed, width):
    _long_queue(installed)
    result = tac8("status", env=environment(COLUMNS=width) if width else None)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(columns(line) for line in lines) <= int(width or 80), result.stdout
    start = next(n for n, line in enumerate(lines) if "gh-9: Teach" in line)
    title = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 8):  # continuation lines hang under the title
            break
        title.append(line)
    assert len(title) > 1
    shown = " ".join(line.strip() for line in title)
    assert shown == f"[] gh-9: {LONG_TITLE} {{p0}}"  # every word whole, in order


def test_a_long_event_keeps_the_end_of_its_error(installed):
    _long_queue(installed)
    out = tac8("status").stdout
    events = out.split("Last events\n")[1].splitlines()
    first = [events[0]] + [line for line in events[1:2] if not line.startswith("  20")]
    assert "launch_failed    gh-7" in first[0] and "error=fatal: could not create" in first[0]
    assert first[-1].endswith("the reason: No space left on device")
    assert " … " in "".join(first) and all(columns(line) <= 80 for line in first)


def test_shorten_keeps_the_start_and_the_end_in_whole_words():
    text = "outcome=failed cost_usd=0.08 tokens=123456 error=agent exited 1: disk full"
    assert shorten(text, 80) == text
    assert shorten(text, 50) == "outcome=failed … error=agent exited 1: disk full"
    assert shorten("/a/path/" + "x" * 60 + "/end.py", 20) == "… " + ("x" * 60 + "/end.py")[-18:]


def test_wrap_counts_a_wide_character_as_two_columns():
    line = "    [🟡 w-1] gh-5: " + "word " * 20
    lines = wrap(line, 40, 8)
    assert all(columns(part) <= 40 for part in lines) and lines[1].startswith(" " * 8 + "word")


def test_an_oserror_reads_without_errno_quotes_or_posixpath(tmp_path):
    missing = tmp_path / "no-such-agent"
    with pytest.raises(OSError) as raised:
        subprocess.Popen([missing])  # subprocess keeps the Path: str() shows PosixPath('…')
    assert "PosixPath(" in str(raised.value)
    assert describe(raised.value) == f"No such file or directory: {missing}"
    with pytest.raises(OSError) as raised:
        os.rename(missing, tmp_path / "b")
    assert describe(raised.value) == f"No such file or directory: {missing} -> {tmp_path / 'b'}"
    assert describe(OSError("/proc/meminfo has no MemAvailable line")) == \
        "/proc/meminfo has no MemAvailable line"
    assert describe(TimeoutError()) == "TimeoutError"


def test_a_command_failing_on_a_file_names_it_plainly(installed):
    log = installed.cfg.agent_log("gh-5")
    log.unlink()
    log.mkdir()
    result = tac8("logs", "gh-5")
    _one_line_error(result, 1)
    assert result.stderr == f"tac8 logs: Is a directory: {log}\n"
