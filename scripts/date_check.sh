#!/usr/bin/env bash
# Runs the tests whose prompts carry a date (the agent loop's and the service's) at two other
# wall-clock dates, one with one thread and one with two, and fails unless every run passes. A
# system prompt states today's date and a random-weight model's sampled ids follow the prompt, so a
# test that reads the real clock passes on some days and fails on others; this catches it on any
# day.
#
#   scripts/date_check.sh            (make date-check: after the unit step built the tests)
#
# The clock is moved with libfaketime (scripts/faketime.sh) preloaded into each test binary and
# every process it starts (the service under test); monotonic clocks are left alone so timeouts
# behave. Threads: libtorch's intra-op pool (OMP_NUM_THREADS), tokio's workers and the test
# harness all get the same count.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each run moves the date and the thread count at once: `make test` has just run every test at
# the real date with the machine's thread count, so two runs show both a date and a thread count
# the tests were not written on (the full 3 dates x 2 thread counts grid took about 25 minutes of
# an hour-long CI run).
RUNS=("2027-06-01 12:00:00|1" "2029-02-28 23:30:00|2")
# Test targets that run agent turns (core) or the service with a model (root package), and the
# examples that run agent turns (they end in assertions), as `make examples` built them.
TARGETS=(agent_cancel agent_loop agent_prefix agent_session agent_spans agent_tools agent_tool_changes
  generate_loop
  agent_api agent_approval agent_sessions chat_completions mcp_client realtime generate_cli telemetry
  cli)
EXAMPLES=(custom_tool fact_lookup_agent)

lib=$(scripts/faketime.sh)
: "${LIBTORCH:?set LIBTORCH (make date-check does)}"

# The test executables as cargo built them (the same build as `cargo test --workspace
# --all-targets`, so nothing is rebuilt), with the package directory each runs in.
list=$(cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, os, sys
wanted = set(sys.argv[1:])
for line in sys.stdin:
    msg = json.loads(line)
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and target.get("kind") == ["test"] and target.get("name") in wanted:
        print(os.path.dirname(msg["manifest_path"]), msg["executable"])
' "${TARGETS[@]}")
found=$(wc -l <<<"$list")
if [[ $found -ne ${#TARGETS[@]} ]]; then
  echo "date_check: found $found of ${#TARGETS[@]} test targets (${TARGETS[*]}):" >&2
  echo "$list" >&2
  exit 1
fi
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
for example in "${EXAMPLES[@]}"; do
  exe="$target_dir/debug/examples/$example"
  [[ -x $exe ]] || { echo "date_check: $exe is missing: run make examples first" >&2; exit 1; }
  list+=$'\n'"$PWD $exe"
done
expected=$((${#TARGETS[@]} + ${#EXAMPLES[@]}))

failed=()
for run in "${RUNS[@]}"; do
  date=${run%|*} threads=${run#*|}
  start=$SECONDS
  while read -r dir exe; do
    name=$(basename "$exe")
    if ! (cd "$dir" && LD_PRELOAD="$lib" FAKETIME="@$date" FAKETIME_DONT_FAKE_MONOTONIC=1 \
      LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      OMP_NUM_THREADS=$threads TOKIO_WORKER_THREADS=$threads RUST_TEST_THREADS=$threads \
      "$exe" $([[ $exe == */examples/* ]] || echo -q) >"/tmp/date_check.$$.log" 2>&1); then
      echo "FAILED at $date, $threads thread(s): ${name%-*}" >&2
      tail -40 "/tmp/date_check.$$.log" >&2
      failed+=("${name%-*} @ $date x$threads")
    fi
  done <<<"$list"
  echo "date_check: $date, $threads thread(s): $expected binaries in $((SECONDS - start)) s"
done
rm -f "/tmp/date_check.$$.log"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "date_check: ${#failed[@]} failing runs: ${failed[*]}" >&2
  exit 1
fi
echo "date_check: every run passed (${#RUNS[@]} runs)"
