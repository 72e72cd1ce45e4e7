"""shared.proc.run with real processes: process groups, bounded output, stdin, interruption."""

from __future__ import annotations

import os
import select
import signal

import psutil
import pytest

from shared.proc import MAX_OUTPUT, ExternalError, run


def _has_exited(pid: int, within: float = 30.0) -> bool:
    """Whether ``pid`` has exited (a zombie has) by ``within`` seconds from now; a SIGKILL
    already sent takes effect when the kernel next schedules the process."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], within)[0])  # readable once it exited
    finally:
        os.close(pidfd)


def _group(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except ProcessLookupError:
            pass
    return members


def test_a_timeout_kills_the_whole_group_and_names_the_command(tmp_path):
    script = (f"echo $$ > {tmp_path}/leader; sleep 600 & echo $! > {tmp_path}/background; "
              "sleep 600")
    with pytest.raises(ExternalError, match=r"^sh -c .*sleep 600.*: timed out after 1 s$"):
        run(["sh", "-c", script], timeout=1)
    leader = int((tmp_path / "leader").read_text())
    background = int((tmp_path / "background").read_text())
    assert leader != os.getpgid(0)  # the child had a group of its own
    assert _has_exited(background)  # the grandchild too, not only the child
    assert [pid for pid in _group(leader) if not _has_exited(pid)] == []


def test_what_the_child_leaves_running_dies_when_it_exits():
    """A background child holding the output pipe would keep the call waiting until its
    timeout; it is killed as soon as the command itself has exited."""
    done = run(["sh", "-c", "sleep 600 & echo $!"], timeout=120)
    assert done.returncode == 0
    assert _has_exited(int(done.stdout))


def test_huge_output_is_drained_and_capped_on_both_streams():
    script = "head -c 20000000 /dev/zero >&2 & head -c 20000000 /dev/zero; wait; echo end"
    done = run(["sh", "-c", script], timeout=120)
    assert done.returncode == 0 and done.truncated
    assert len(done.stdout) == len(done.stderr) == MAX_OUTPUT
    assert not done.stdout.endswith(b"end\n")  # the first MAX_OUTPUT bytes are what is kept


def test_stdin_is_passed_whole_and_is_dev_null_when_not_given():
    text = "é, a line\n" * 200_000  # larger than a pipe's buffer: written as the child reads
    assert run(["cat"], stdin=text, timeout=60).stdout == text.encode()
    assert run(["cat"], stdin=b"\x00\xff", timeout=60).stdout == b"\x00\xff"
    assert run(["readlink", "/proc/self/fd/0"], timeout=60).stdout == b"/dev/null\n"


def test_a_failing_command_is_a_result_and_one_that_cannot_start_an_error(tmp_path):
    done = run(["sh", "-c", "echo out; echo why >&2; exit 3"], cwd=tmp_path,
               env={"PATH": os.environ["PATH"]}, timeout=60)
    assert (done.returncode, done.stdout, done.stderr, done.truncated) == \
        (3, b"out\n", b"why\n", False)
    with pytest.raises(ExternalError, match="no-such-program: cannot start"):
        run([str(tmp_path / "no-such-program")], timeout=60)


def test_an_exception_while_waiting_kills_the_group(tmp_path):
    """A program's cold shutdown raises from its signal handler in the middle of a call:
    the call's whole process group is killed on the way out."""
    class Cold(Exception):
        pass

    def cold(signum, frame):
        raise Cold()

    previous = signal.signal(signal.SIGALRM, cold)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Cold):
            run(["sh", "-c", f"echo $$ > {tmp_path}/leader; sleep 600 & sleep 600"], timeout=600)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    leader = int((tmp_path / "leader").read_text())
    assert [pid for pid in _group(leader) if not _has_exited(pid)] == []

