"""shared.streamjson: Claude Code's stream-json lines, parsed one at a time or fed in chunks."""

from __future__ import annotations

import json

from shared.streamjson import LINE_LIMIT, StreamJson, parse

INIT = {"type": "system", "subtype": "init", "model": "claude-sonnet-4-5"}
RESULT = {"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": 0.01}


def test_parse_gives_the_message_or_none():
    assert parse(json.dumps(INIT)) == INIT
    assert parse(json.dumps(RESULT).encode() + b"\n") == RESULT
    assert parse("  " + json.dumps(INIT)) == INIT
    for line in ("plain text from another agent", "", "[1, 2]", '"text"', '{"type": "res',
                 b"{\xff}", "{" * 100_000):
        assert parse(line) is None, line


def _fed(*chunks: bytes) -> StreamJson:
    stream = StreamJson()
    for chunk in chunks:
        stream.feed(chunk)
    return stream


def test_the_final_result_is_found_across_chunks_and_noise():
    output = (b"starting\n" + json.dumps(INIT).encode() + b"\n{not json\n"
              + json.dumps(RESULT).encode() + b"\ntrailing plain text\n")
    assert _fed(output).result == RESULT
    assert _fed(*(output[i:i + 7] for i in range(0, len(output), 7))).result == RESULT
    assert _fed(json.dumps(INIT).encode() + b"\n").result is None
    # a line is parsed only once it is complete
    assert _fed(json.dumps(RESULT).encode()).result is None


def test_a_line_longer_than_the_limit_is_skipped_and_the_next_one_parsed():
    huge = json.dumps({**RESULT, "result": "x" * LINE_LIMIT}).encode() + b"\n"
    stream = _fed(*(huge[i:i + 65536] for i in range(0, len(huge), 65536)))
    assert stream.result is None
    later = {**RESULT, "total_cost_usd": 0.02}
    stream.feed(json.dumps(later).encode() + b"\n")
    assert stream.result == later
