#!/usr/bin/env bash
# builds.sh — two llmux builds side by side: the same server from binary A
# and from binary B, alternately (A B A B ...), on the 86M bench model with
# 16 slots, streamed 64-token completions at concurrency 1 and 16 (or
# CONCURRENCY), for each --replicas setting given. For a change's before
# and after:
#
#   git stash; make build; cp bin/llmux /tmp/llmux-before; git stash pop; make build
#   A=bin/llmux B=/tmp/llmux-before benchmarks/builds.sh
#
# Recorded verbatim under benchmarks/results/DATE-COMMIT/ (or RECORD_DIR),
# with each binary's `llmux version`. Environment: A, B (the binaries),
# REPLICAS ("0 1"), CONCURRENCY ("1,16"), PAIRS (3), PROMPTS (32),
# THREADS (nproc), SERVE_ARGS (more `llmux serve` flags for both, e.g.
# "--kv-layout per-slot").
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
: "${A:?set A and B to the two llmux binaries}" "${B:?set A and B to the two llmux binaries}"
REPLICAS="${REPLICAS:-0 1}"
CONCURRENCY="${CONCURRENCY:-1,16}"
PAIRS="${PAIRS:-3}"
PROMPTS="${PROMPTS:-32}"
THREADS="${THREADS:-$(nproc)}"
PORT=18196

make -s build >/dev/null
eval "$(make -s env)"
record_init
record build-a "$A" version
record build-b "$B" version
work="$(mktemp -d)"
./bin/llmux models synth --preset bench "$work/bench.gguf" >/dev/null 2>&1
export work PORT THREADS
cleanup() { [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# serve BIN REPLICAS: a fresh server from BIN.
serve() { echo "benchmarks/serve-llmux.sh $1 --model $work/bench.gguf --model-name bench --parallel 16 --ctx-size 16384 --threads $THREADS --replicas $2 ${SERVE_ARGS:-}"; }
bench="./bin/llmux bench --base-url http://127.0.0.1:$PORT --model bench --seed 1 --dataset-name random --random-input-len 32 --random-output-len 64 --ignore-eos --num-prompts $PROMPTS --max-concurrency $CONCURRENCY --warmup 2"
export A B
for r in $REPLICAS; do
  interleave "$PAIRS" \
    "a-replicas$r" "$(serve "$A" "$r") && $bench --label a-replicas$r --output \"\$RECORD_DIR/a-replicas$r-\$PAIR.json\"" \
    "b-replicas$r" "$(serve "$B" "$r") && $bench --label b-replicas$r --output \"\$RECORD_DIR/b-replicas$r-\$PAIR.json\""
  for m in output_throughput tpot.median_ms; do
    record "pairs-replicas$r-$m" ./bin/llmux bench pairs --metric "$m" --a "$RECORD_DIR/a-replicas$r-[0-9]*.json" --b "$RECORD_DIR/b-replicas$r-[0-9]*.json"
  done
done
