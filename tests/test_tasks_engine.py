"""The tasks.md engine: format, round trip, queries, moves, ids, sanitising (docs/PROTOCOL.md)."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import tasks
from shared.tasks import ACTIVE, COMPLETED, FAILED, PENDING, SECTIONS, parse, sanitize_title

SEED = """# Tasks

## Active
[🟡 w-ee4608] gh-472: Fix the flaky parser test {p1}
- Started: 2026-11-24 10:15:02 · attempt 1/3 · trees/gh-472 · auto/gh-472

## Pending
[] gh-471: Add docstring to coordinator.py {p2}
[] t-3: Tidy the README {p1}
[] Write a CONTRIBUTING guide

## Blocked
[⏰ w-1a2b3c] gh-460: Migrate CI
- Blocked: Which Python versions should CI cover?

## Stopped
[⏹ w-77aa01] gh-458: Rewrite the importer
- Stopped: 2026-11-24 09:40:11 · WIP commit 9d1e2f0

## Failed
[❌ w-9f8e7d] gh-455: Refactor parser
- Failed: 2026-11-24 09:00:00 · attempt 3/3
- Error: Worker exited without creating PR

## Completed Today
[✅ cbffe52, w-ee4608] gh-470: Add docstring to coordinator.py
- Completed: 2026-11-24 17:38:45
- PR: https://github.com/OWNER/REPO/pull/473
"""

# Text made of the characters that matter to the format, so hypothesis hits real structure.
format_text = st.lists(
    st.sampled_from(list("[]{}#-:p0123 \t\r\nabgh✅🟡\x00\u202e") + [
        "## Pending\n", "## Active\n", "## Failed\n", "[] ", "gh-1: ", "t-2: ", "{p0}",
        "- Retry: x\n", "\r\n", "\n[] t-5: task\n", "\n[🟡 w-1] gh-7: active {p1}\n",
    ]),
    max_size=60,
).map("".join)
any_text = st.text(max_size=300)


def test_seed_example_parses_into_sections():
    board = parse(SEED)
    assert [(s, t.id) for s, t in board.sections()] == [
        (ACTIVE, "gh-472"), (PENDING, "gh-471"), (PENDING, "t-3"), (PENDING, None),
        ("Blocked", "gh-460"), ("Stopped", "gh-458"), (FAILED, "gh-455"), (COMPLETED, "gh-470"),
    ]
    active = board.get("gh-472")
    assert active.worker == "w-ee4608" and active.priority == 1
    assert active.detail("Started").startswith("2026-11-24 10:15:02")
    assert board.get("gh-470").sha == "cbffe52"
    assert board.get("gh-455").details == [
        ["Failed", "2026-11-24 09:00:00 · attempt 3/3"],
        ["Error", "Worker exited without creating PR"],
    ]
    assert board.problems == []


def test_launch_order_is_priority_then_position():
    board = parse(SEED)
    assert [t.title for t in board.launch_order()] == [
        "Tidy the README", "Add docstring to coordinator.py", "Write a CONTRIBUTING guide"]


@given(any_text)
def test_round_trip_arbitrary_text(text):
    assert parse(text).render() == text


@given(format_text)
def test_round_trip_format_shaped_text(text):
    assert parse(text).render() == text


def test_round_trip_crlf_and_no_final_newline():
    text = SEED.replace("\n", "\r\n").rstrip("\r\n")
    assert parse(text).render() == text


def test_unknown_lines_are_kept_and_reported():
    text = "## Pending\n[] t-1: real task\nsomething odd\n[ broken\n\nfree prose? no, inside\n"
    board = parse(text)
    assert [p.line for p in board.problems] == [3, 4, 6]
    board.move(board.get("t-1"), ACTIVE, marker="🟡 w-1")
    out = board.render()
    for line in ("something odd", "[ broken", "free prose? no, inside"):
        assert line in out.splitlines()


def test_a_mistyped_section_and_a_priority_out_of_range_are_reported():
    text = ("# Tasks\n\n## Pendng\n[] t-1: never run {p1}\n\n## Pending\n[] t-2: too high {p9}\n"
            "[] t-3: {P1} is no tag either {P1}\n### Failed\n[] t-4: fine {p3}\n\n## Archive\n")
    board = parse(text)
    assert [(p.line, p.text) for p in board.problems] == [
        (3, "## Pendng"), (7, "[] t-2: too high {p9}"), (8, "[] t-3: {P1} is no tag either {P1}"),
        (9, "### Failed")]
    why = [p.why for p in board.problems]
    assert why[0] == "not a section: did you mean '## Pending'? The tasks under it are not run"
    assert why[1] == ("{p9} is not a priority ({p0} to {p3}): the task runs at {p2} with it in "
                      "its title")
    assert why[2].startswith("{P1} is not a priority")
    assert why[3].startswith("not a section heading: did you mean '## Failed'?")
    assert [(t.id, t.effective_priority) for t in board.launch_order()] == \
        [("t-2", 2), ("t-3", 2), ("t-4", 3)]  # t-1 is prose under "## Pendng"
    assert board.render() == text


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(format_text, st.lists(st.tuples(st.sampled_from(SECTIONS), st.integers(0, 30)), max_size=8))
def test_no_line_is_lost_by_moves(text, moves):
    """Every non-task line of the input survives any sequence of moves, and every task too."""
    board = parse(text)
    board.assign_ids()
    keep = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    task_ids = sorted(t.id for t in board.tasks())
    for section, pick in moves:
        all_tasks = board.tasks()
        if all_tasks:
            board.move(all_tasks[pick % len(all_tasks)], section)
    out = board.render()
    reparsed = parse(out)
    assert sorted(t.id for t in reparsed.tasks()) == task_ids
    out_lines = out.replace("\r\n", "\n").split("\n")
    task_lines = {tuple(t.lines[0].text for _ in [0]) for t in parse(text).tasks()}
    for line in keep:
        if (line,) in task_lines or line.lstrip().startswith("- "):
            continue  # tasks and detail lines are re-rendered when moved
        assert line in out_lines


def test_move_carries_details_and_sets_marker():
    board = parse(SEED)
    task = board.get("gh-472")
    board.move(task, FAILED, details=[("Failed", "now · attempt 1/3"), ("Error", "boom")])
    again = parse(board.render())
    section, moved = again.find("gh-472")
    assert section == FAILED and moved.marker == "❌ w-ee4608"
    assert moved.details == [["Failed", "now · attempt 1/3"], ["Error", "boom"]]
    assert again.tasks(ACTIVE) == []


def test_missing_sections_are_created_in_order():
    board = parse("# Tasks\n\n## Completed Today\n")
    board.add("first", task_id="t-1")
    board.move(board.get("t-1"), FAILED)
    board.add("second", task_id="t-2")
    out = board.render()
    assert out.index("## Pending") < out.index("## Failed") < out.index("## Completed Today")
    assert [s for s, _ in parse(out).sections()] == [PENDING, FAILED]


def test_ids_are_assigned_without_reuse():
    board = parse("## Pending\n[] t-4: x\n[] new one\n[] another\n")
    assigned = board.assign_ids(taken={"t-9", "gh-100"})
    assert [t.id for t in assigned] == ["t-10", "t-11"]
    assert "[] t-10: new one" in board.render()


def test_a_repeated_id_is_dropped_from_the_later_line_until_it_gets_a_fresh_one():
    text = ("## Active\n[🟡 w-1] t-7: running\n\n## Pending\n[] t-7: pasted again\n"
            "[] gh-1: the issue\n[] gh-1: the issue, twice\n[] t-8: other\n")
    board = parse(text)
    assert [(t.id, t.repeats) for t in board.tasks()] == [
        ("t-7", None), (None, "t-7"), ("gh-1", None), (None, "gh-1"), ("t-8", None)]
    assert board.render() == text  # read-only: as it was
    assert [t.id for t in board.assign_ids(taken={"t-9"})] == ["t-10", "t-11"]
    out = board.render()
    assert "[] t-10: pasted again\n" in out and "[] t-11: the issue, twice\n" in out
    assert "[🟡 w-1] t-7: running\n" in out and "[] gh-1: the issue\n" in out


def test_ids_are_canonical():
    board = parse("## Pending\n[] gh-06: leading zero\n[] gh-6: the same issue\n[] t-012: x\n")
    assert [t.id for t in board.tasks()] == ["gh-6", None, "t-12"]
    assert tasks.issue_number(board.tasks()[0].id) == 6
    board.move(board.get("gh-6"), ACTIVE, marker="🟡 w-1")
    assert "[🟡 w-1] gh-6: leading zero" in board.render()


def test_a_malformed_id_is_a_problem_not_a_title():
    text = ("## Pending\n[] gh-abc: x\n[] GH-5: y\n[] t-1a: z\n[] gh-: empty\n"
            "[] t-shirt: design one\n[] typed: with a colon\n")
    board = parse(text)
    assert [p.line for p in board.problems] == [2, 3, 4, 5]
    assert board.problems[0].why == \
        "'gh-abc' is not a task id (gh-N for issue N, t-N for a typed line): the line is not run"
    assert [t.title for t in board.tasks()] == ["t-shirt: design one", "typed: with a colon"]
    board.assign_ids()
    assert "[] gh-abc: x\n" in board.render()


hostile = st.text(min_size=0, max_size=400) | st.sampled_from([
    "evil\n## Active\n[🟡 w-1] gh-1: injected",
    "[✅ abc, w-1] gh-9: fake {p0}",
    "title {p0}",
    "$(rm -rf ~) `id`",
    "x" * 10_000,
    "\u202eevil\u200b\x00\x1b[31m",
])


@given(hostile)
def test_sanitised_titles_never_change_structure(title):
    clean = sanitize_title(title)
    assert "\n" not in clean and "\r" not in clean
    assert not set(clean) & set("[]{}")
    assert len(clean) <= tasks.TITLE_LIMIT
    assert all(ch.isprintable() for ch in clean)
    board = parse(SEED)
    board.add(title, task_id="gh-999", priority=3)
    reparsed = parse(board.render())
    section, task = reparsed.find("gh-999")
    assert section == PENDING and task.priority == 3 and task.title == clean
    assert len(reparsed.tasks()) == len(parse(SEED).tasks()) + 1
    assert reparsed.problems == []


def test_sanitise_examples():
    assert sanitize_title("Fix\nthe [bug] {p0}") == "Fix the (bug) (p0)"
    assert sanitize_title("\u202eabc\u200d") == "abc"
    assert sanitize_title("\x00\x07") == "(untitled)"
    assert sanitize_title("y" * 5000).endswith("…")


@given(st.text(alphabet=string.printable, max_size=80))
def test_parse_after_render_is_stable(text):
    board = parse(text)
    board.assign_ids()
    once = board.render()
    assert parse(once).render() == once


def test_prose_outside_sections_is_never_rewritten():
    """A Markdown link before the first section or under an unknown heading is prose."""
    text = ("# Tasks\n[Project board](https://example.com/board) is where we plan.\n\n"
            "## Notes\n[] not a task here\n\n## Pending\n[] real task\n")
    board = parse(text)
    assert [t.title for t in board.tasks()] == ["real task"]
    assert board.problems == []
    board.assign_ids()
    out = board.render()
    assert "[Project board](https://example.com/board) is where we plan.\n" in out
    assert "[] not a task here\n" in out and "[] t-1: real task\n" in out
