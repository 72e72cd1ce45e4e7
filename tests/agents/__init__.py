"""Fake agents for tests (``fake_agent.py``) and helpers that wire one into a sandbox."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from shared.config import DEFAULT_TEMPLATE, Config
from shared.program import read_cycles
from shared.records import read_record, render_record

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")
SLEEP_COMMIT = Path(__file__).with_name("sleep_commit.sh")  # lean agent for benchmarks
# Environment variables naming a folder an agent writes to: made visible in its sandbox.
SANDBOX_VISIBLE = ("FAKE_AGENT_PIDS", "FAKE_AGENT_PROMPTS", "E2E_DIR", "SLEEP_COMMIT_MOMENTS")
TEMPLATE_BODY = read_record(DEFAULT_TEMPLATE).body


def use_agent(sandbox: Any, behaviour: str, *args: str, env: dict[str, str] | None = None,
              stream_json: bool = True, **limits: float) -> Config:
    """Make the sandbox's agent ``fake_agent.py`` with ``behaviour``; ``limits`` go to
    [worker] (max_runtime, stall_timeout, stop_grace). Returns the new config."""
    command = [sys.executable, str(FAKE_AGENT), behaviour, *args]
    if stream_json:
        command += ["--output-format", "stream-json", "--verbose"]
    return use_command(sandbox, command, env=env, **limits)


def use_command(sandbox: Any, command: list[str], env: dict[str, str] | None = None,
                **limits: float) -> Config:
    """Write a worker template running ``command`` into the sandbox and point the config
    at it (``limits`` go to [worker]). Returns the new config."""
    template = sandbox.conf_dir / "worker_template.md"
    meta: dict[str, Any] = {"command": list(command)}
    if env:
        meta["env"] = env
    template.write_text(render_record(meta, TEMPLATE_BODY))
    # Folders the fake agents write to from inside the sandbox (/tmp there is private).
    binds = [v for k, v in (env or {}).items() if k in SANDBOX_VISIBLE]
    return sandbox.write_config(worker={"template": str(template), "sandbox_binds": binds,
                                        **limits})


def wait_for(condition, timeout: float = 20.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def wait_cycles(cfg: Config, program: str, cycles: int = 2,
                nudge: Callable[[], Any] | None = None, **kwargs: Any) -> int:
    """Wait until ``program`` has run ``cycles`` more cycles than it had when called (its
    heartbeat file holds the count); returns the count reached. A cycle that starts after
    something happened has seen it: waiting for two makes sure one started afterwards.

    ``nudge``, if given, is called until then, for a program that would otherwise sleep
    until its slow timer: it should touch something the program watches (file events are
    only hints to a program, so a spurious one changes nothing but the cycle count)."""
    path = cfg.heartbeat(program)
    goal = read_cycles(path) + cycles

    def reached() -> int | bool:
        count = read_cycles(path)
        if count < goal and nudge is not None:
            nudge()
        return count >= goal and count
    return wait_for(reached, what=f"{cycles} cycles of the {program}", **kwargs)


def proc_signals(pid: int, field: str) -> set[int]:
    """The signals in ``field`` of /proc/<pid>/status: SigCgt (caught), SigIgn (ignored),
    ShdPnd (sent to the process and not yet delivered)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            mask = int(line.split(":", 1)[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    return set()


def survivors(pid_dir: Path) -> list[int]:
    """Processes started by fake agents that still live: found by their environment
    (``FAKE_AGENT_PIDS=<pid_dir>``), since a sandboxed agent notes pids of its own PID
    namespace. (A zombie has no readable environment: ``zombies`` finds those.)"""
    marker = f"FAKE_AGENT_PIDS={pid_dir}".encode()
    alive = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    alive.append(int(name))
        except OSError:
            pass
    return alive


def is_worker(proc: psutil.Process) -> bool:
    """Whether ``proc`` is a ``python -m services.worker`` process."""
    try:
        return "services.worker" in proc.cmdline()
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live process below ``pid`` (default: this test process), zombies included."""
    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def zombies(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in procs:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out



def events_of(cfg: Config, type: str | None = None, task: str | None = None) -> list[dict]:
    """The events waiting in ``state/events/new``, oldest first (optionally one type/task)."""
    from shared.fsio import pending

    found = []
    for path in pending(cfg.events_dir):
        try:
            meta = read_record(path).meta
        except FileNotFoundError:
            continue
        if (type is None or meta.get("type") == type) and (task is None or meta.get("task") == task):
            found.append(meta)
    return found
