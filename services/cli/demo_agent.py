"""tac8's demo agent: a stand-in for Claude Code that needs no AI key (``tac8 demo``).

Run as ``python services/cli/demo_agent.py --output-format stream-json`` in a task's worktree
with the prompt on stdin, it behaves like Claude Code does for tac8: it prints stream-json lines
(``system`` init, ``assistant`` messages, a final ``result`` with cost 0) and then either

* makes a small real commit: ``demo-notes/<task>.md`` with the task's title, or
* when the task's title ends with ``?`` (a question only a person can answer), writes the
  question to ``BLOCKED.md`` and stops without committing.

It reads the task id and title from the prompt lines ``You are working on task <id>`` and
``Task: <title>`` of the worker template.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

STEP_SECONDS = 1.0  # a pause between steps, so a person watching the demo sees progress


def _say(message: dict) -> None:
    print(json.dumps(message), flush=True)


def _assistant(text: str) -> None:
    _say({"type": "assistant", "message": {"role": "assistant",
                                           "content": [{"type": "text", "text": text}]}})


def main() -> int:
    prompt = sys.stdin.read()
    task = (re.search(r"working on task (\S+)", prompt) or [None, "task"])[1]
    title = (re.search(r"^Task: (.*)$", prompt, re.M) or [None, "(no title)"])[1].strip()
    started = time.monotonic()
    _say({"type": "system", "subtype": "init", "model": "tac8-demo-agent", "cwd": str(Path.cwd())})
    _assistant(f"Reading the task: {title}")
    time.sleep(STEP_SECONDS)
    if title.endswith("?"):
        Path("BLOCKED.md").write_text(f"{title}\n\nThe demo agent needs a person to decide this.\n")
        _assistant("This needs a decision from a person: wrote BLOCKED.md.")
    else:
        notes = Path("demo-notes") / f"{task}.md"
        notes.parent.mkdir(exist_ok=True)
        notes.write_text(f"# {title}\n\nDone by tac8's demo agent.\n")
        _assistant(f"Writing {notes} and committing it.")
        time.sleep(STEP_SECONDS)
        subprocess.run(["git", "add", str(notes)], check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"{task}: {title}"], check=True)
    _say({"type": "result", "subtype": "success", "is_error": False, "num_turns": 2,
          "duration_ms": int((time.monotonic() - started) * 1000), "total_cost_usd": 0.0,
          "usage": {"input_tokens": 0, "output_tokens": 0}, "result": "done"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
