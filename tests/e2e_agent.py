#!/usr/bin/env python3
"""The agent of the end-to-end tests (``tests/e2e.py``): one command for every task, which
reads what to do from the task's own text and runs ``tests/agents/fake_agent.py`` with it.

Directives, each on a line of an issue's body (the prompt quotes the body)::

    e2e-agent: BEHAVIOUR [ARG]   what fake_agent.py does (default: commit)
    e2e-gate: NAME               first wait until $E2E_DIR/gates/NAME exists

Each run is recorded in ``$E2E_DIR/runs/<task>.<pid>.<ns>.json`` (the task is the name of the
working directory, the task's tree): behaviour, started, then ended and exit when it ends,
with wall-clock times and the CPU seconds it used, so a test can count the runs of a task and
a benchmark can subtract the agent's own time and CPU. Standalone on purpose: it imports nothing of tac8 or the tests, so its
start-up costs what a small agent's does.

The worker signals the agent's process group; fake_agent.py is in that group and handles
the signals itself. This wrapper only notes them: while it waits at a gate, a signal ends
the run at once (exit 130, no result line), as an agent that was never busy would.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

STARTED = time.time()
FAKE_AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agents", "fake_agent.py")
DIRECTIVE = re.compile(r"^\s*e2e-(agent|gate):[ \t]*(\S.*?)\s*$", re.M)
GATE_POLL = 0.05  # seconds

signalled = False


def _note_signal(signum: int, frame: object) -> None:
    global signalled
    signalled = True


def _record(path: str, run: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(run, f)
    os.replace(tmp, path)


def main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _note_signal)  # a handler, not SIG_IGN: the child gets defaults
    prompt = sys.stdin.buffer.read()
    found: dict[str, str] = {}  # the first of each kind: people's feedback comes before the issue
    for kind, value in DIRECTIVE.findall(prompt.decode(errors="replace")):
        found.setdefault(kind, value)
    behaviour = found.get("agent", "commit").split()
    task = os.path.basename(os.getcwd())
    folder = os.environ["E2E_DIR"]
    os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
    # (the pid alone repeats: in its sandbox every agent has a PID namespace of its own)
    path = os.path.join(folder, "runs", f"{task}.{os.getpid()}.{time.time_ns()}.json")
    run = {"task": task, "behaviour": behaviour, "started": STARTED}
    _record(path, run)

    gate = found.get("gate")
    while gate and not os.path.exists(os.path.join(folder, "gates", gate)):
        if signalled:
            run.update(ended=time.time(), exit=130)
            _record(path, run)
            return 130
        time.sleep(GATE_POLL)

    child = subprocess.Popen([sys.executable, FAKE_AGENT, *behaviour, *sys.argv[1:]],
                             stdin=subprocess.PIPE)
    child.stdin.write(prompt)
    child.stdin.close()
    code = child.wait()
    exit_code = code if code >= 0 else 128 - code
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    run.update(ended=time.time(), exit=exit_code,
               cpu=sum(u.ru_utime + u.ru_stime for u in used))
    _record(path, run)
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
