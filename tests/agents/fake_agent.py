#!/usr/bin/env python3
"""A fake AI agent for tests: behaves like Claude Code in ``-p --output-format stream-json``
mode (reads the prompt on stdin, works in its current directory, prints one JSON message per
line and a final ``{"type": "result", ...}``), with one misbehaviour picked by the first
argument. Other arguments (``--output-format stream-json`` …) are accepted and ignored.

Behaviours::

    commit [SECONDS]      wait SECONDS (default 0), commit a new file, succeed
    leave-uncommitted     change a file without committing it, succeed
    blocked               write BLOCKED.md with a question, succeed
    hang                  print one line, then nothing, forever
    noop                  succeed without changing anything (exit 0)
    exit1                 print a line and exit 1 without a result message
    is-error              commit a file, but the result says is_error: true
    usage-limit [RESET [SUBTYPE]]
                          end as Claude Code does when the usage limit is reached: the
                          message as assistant text and in a result with is_error: true
                          and SUBTYPE (default success; or error_during_execution), exit
                          1. RESET is when the limit resets: an epoch (default
                          1767225600) or +SECONDS from now, giving "Claude AI usage limit
                          reached|<epoch>"; or "clock", giving "You've hit your limit ·
                          resets 3pm (Europe/Berlin)", whose time has no date
    daemon                fork a setsid daemon that lives on, then commit and succeed
    flood [MEGABYTES]     print that much output (default 30), then commit and succeed
    stubborn              ignore SIGINT and SIGTERM, print one line, wait forever
    orphan-on-sigterm     start a grandchild in another session, wait; ignore SIGINT; on
                          SIGTERM exit at once leaving the grandchild (as Claude Code does
                          with a running Bash tool)
    interruptible         change a file, wait; on SIGINT print an interrupted result and exit
                          (as Claude Code does)
    alone                 commit and succeed only if no other process works in this tree
                          (cwd inside it), else exit 1 naming them
    mix                   one of MIX, picked by the number in the tree's name (t-7 → MIX[7 % 6])

Every process it leaves behind writes its pid to ``$FAKE_AGENT_PIDS/<pid>.<ns>`` (when that
variable is set), so a test can check that none of them survived. ``$FAKE_AGENT_PROMPTS``,
when set, is a directory where the prompt read from stdin is saved as ``<cwd name>.txt``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

SESSION = f"fake-{os.getpid()}"
MIX = ("commit", "daemon", "stubborn", "orphan-on-sigterm", "noop", "exit1")


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def assistant(text: str) -> None:
    say({"type": "assistant", "session_id": SESSION,
         "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}})


def result(is_error: bool = False, text: str = "done", subtype: str = "success",
           **fields: object) -> None:
    """The final message; ``fields`` replace the usual ones (num_turns, total_cost_usd…)."""
    say({"type": "result", "subtype": subtype, "is_error": is_error, "result": text,
         "session_id": SESSION, "num_turns": 3, "duration_ms": 1234,
         "total_cost_usd": 0.0123,
         "usage": {"input_tokens": 100, "output_tokens": 50,
                   "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5},
         **fields})


def usage_limit_text(reset: str | None) -> str:
    """The two forms Claude Code has ended with at its usage limit: the older one with the
    reset as an epoch after a ``|``, the newer one with a wall-clock time and zone."""
    if reset == "clock":
        return "You've hit your limit · resets 3pm (Europe/Berlin)"
    if reset and reset.startswith("+"):
        epoch = int(time.time() + float(reset[1:]))
    else:
        epoch = int(reset or 1767225600)
    return f"Claude AI usage limit reached|{epoch}"


def note_pid(pid: int) -> None:
    folder = os.environ.get("FAKE_AGENT_PIDS")
    if folder:
        # <pid>.<time>: pids of a sandbox's own PID namespace repeat across runs
        with open(os.path.join(folder, f"{pid}.{time.time_ns()}"), "w") as f:
            f.write(" ".join(sys.argv[1:2]))


def commit_new_file() -> None:
    name = f"work-{time.time_ns()}.txt"
    with open(name, "w") as f:
        f.write("work done by the fake agent\n")
    subprocess.run(["git", "add", name], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"fake agent: add {name}"], check=True)
    assistant(f"committed {name}")


def spawn_in_new_session(seconds: int) -> int:
    """A process in its own session (as a daemon or Claude Code's Bash tool makes)."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep({seconds})"],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    note_pid(child.pid)
    return child.pid


def daemonize() -> None:
    """Double fork + setsid: the daemon is no child of ours."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            note_pid(os.getpid())
            time.sleep(300)
            os._exit(0)
        os._exit(0)
    os.wait()


def others_in_tree() -> list[int]:
    """Pids of other processes whose working directory is inside ours."""
    root = os.getcwd()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                cwd = os.readlink(f"/proc/{name}/cwd")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + os.sep):
                found.append(int(name))
    return found


def forever() -> None:
    while True:
        time.sleep(3600)


def main() -> int:
    behaviour = sys.argv[1] if len(sys.argv) > 1 else "commit"
    args = []  # the behaviour's own arguments: those before the first option
    for word in sys.argv[2:]:
        if word.startswith("-"):
            break
        args.append(word)
    arg = args[0] if args else None
    if behaviour == "mix":
        digits = "".join(ch for ch in os.path.basename(os.getcwd()) if ch.isdigit()) or "0"
        behaviour = MIX[int(digits) % len(MIX)]
    prompt = sys.stdin.read()
    prompts = os.environ.get("FAKE_AGENT_PROMPTS")
    if prompts:
        with open(os.path.join(prompts, os.path.basename(os.getcwd()) + ".txt"), "w") as f:
            f.write(prompt)
    say({"type": "system", "subtype": "init", "session_id": SESSION, "cwd": os.getcwd(),
         "tools": ["Bash", "Edit"], "model": "fake"})
    assistant(f"read a prompt of {len(prompt)} characters")

    if behaviour == "commit":
        time.sleep(float(arg or 0))
        commit_new_file()
        result()
    elif behaviour == "leave-uncommitted":
        with open("README.md", "a") as f:
            f.write("an uncommitted change\n")
        result()
    elif behaviour == "blocked":
        with open("BLOCKED.md", "w") as f:
            f.write("Which Python versions should CI cover?\n")
        result(text="blocked on a question")
    elif behaviour == "hang":
        forever()
    elif behaviour == "alone":
        others = others_in_tree()
        if others:
            print(f"fake_agent: not alone in the tree: {others}", file=sys.stderr)
            return 1
        commit_new_file()
        result()
    elif behaviour == "noop":
        result(text="nothing to do")
    elif behaviour == "exit1":
        return 1
    elif behaviour == "is-error":
        commit_new_file()
        result(is_error=True, text="API Error: overloaded", subtype="error_during_execution")
    elif behaviour == "usage-limit":
        text = usage_limit_text(arg)
        subtype = args[1] if len(args) > 1 else "success"
        assistant(text)  # Claude Code shows the message as a (synthetic) assistant turn too
        # an error subtype may carry the text in "errors" as well (the Agent SDK's shape)
        extra = {"errors": [text]} if subtype != "success" else {}
        result(is_error=True, text=text, subtype=subtype, num_turns=1, total_cost_usd=0,
               duration_ms=412, usage={"input_tokens": 0, "output_tokens": 0,
                                       "cache_creation_input_tokens": 0,
                                       "cache_read_input_tokens": 0}, **extra)
        return 1
    elif behaviour == "daemon":
        daemonize()
        commit_new_file()
        result()
    elif behaviour == "flood":
        line = json.dumps({"type": "assistant", "message": {"content": "x" * 1000}}) + "\n"
        for _ in range(int(float(arg or 30) * 1024 * 1024 / len(line))):
            sys.stdout.write(line)
        sys.stdout.flush()
        commit_new_file()
        result()
    elif behaviour == "stubborn":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assistant("I will not stop")
        forever()
    elif behaviour == "orphan-on-sigterm":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
        spawn_in_new_session(300)
        assistant("running a long Bash tool")
        forever()
    elif behaviour == "interruptible":
        with open("README.md", "a") as f:
            f.write("work in progress\n")

        def interrupted(*_: object) -> None:
            result(is_error=True, text="interrupted", subtype="error_during_execution")
            os._exit(0)

        signal.signal(signal.SIGINT, interrupted)
        assistant("working")
        forever()
    else:
        print(f"fake_agent: unknown behaviour {behaviour!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
