#!/bin/sh
# A lean fake agent for benchmarks (its own start-up must not weigh on tac8's figures):
# reads the prompt on stdin, sleeps $1 seconds (default 0.5), commits one new file and prints
# a final stream-json result line, as Claude Code does. Other arguments are ignored. With
# SLEEP_COMMIT_MOMENTS set, it appends "<start> <end>" (epoch seconds) to that file.
began=$(date +%s.%N)
cat > /dev/null
sleep "${1:-0.5}"
file="work-$$.txt"
echo "work done by the fake agent" > "$file"
git add "$file" && git commit -q -m "fake agent: add $file" || exit 1
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"done","num_turns":1,"total_cost_usd":0.001,"usage":{"input_tokens":10,"output_tokens":5}}'
[ -n "${SLEEP_COMMIT_MOMENTS:-}" ] && echo "$began $(date +%s.%N)" >> "$SLEEP_COMMIT_MOMENTS"
exit 0
