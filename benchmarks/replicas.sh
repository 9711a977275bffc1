#!/usr/bin/env bash
# replicas.sh — what a replica process costs: the same server with its
# model in one replica process (--replicas 1, the default) and in the
# serving process (--replicas 0), alternately, on the 86M bench model with
# 16 slots: streamed 64-token completions at concurrency 1 and 16. Then
# the in-process handle hop (go test -bench HandleHop). Recorded verbatim
# under benchmarks/results/DATE-COMMIT/ (or RECORD_DIR).
#
#   benchmarks/replicas.sh [PART...]   (default: replicas hop)
#     replicas  --replicas 1 vs --replicas 0
#     hop       go test -bench HandleHop
# Environment: PAIRS (3), PROMPTS (48), THREADS (nproc).
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
PAIRS="${PAIRS:-3}"
PROMPTS="${PROMPTS:-48}"
THREADS="${THREADS:-$(nproc)}"
PORT=18193

make -s build >/dev/null
eval "$(make -s env)"
record_init
work="$(mktemp -d)"
./bin/llmux models synth --preset bench "$work/bench.gguf" >/dev/null 2>&1
export work PORT THREADS
cleanup() { [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# serve N: a fresh server with --replicas N.
serve="benchmarks/serve-llmux.sh ./bin/llmux --model $work/bench.gguf --model-name bench --parallel 16 --ctx-size 16384 --threads $THREADS --replicas"
bench="./bin/llmux bench --base-url http://127.0.0.1:$PORT --model bench --seed 1 --dataset-name random --random-input-len 32 --random-output-len 64 --ignore-eos --num-prompts $PROMPTS --max-concurrency 1,16 --warmup 2"
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(replicas hop)
for part in "${parts[@]}"; do
  case "$part" in
  replicas)
    interleave "$PAIRS" \
      replicas1 "$serve 1 && $bench --label replicas-1 --output \"\$RECORD_DIR/replicas1-\$PAIR.json\"" \
      replicas0 "$serve 0 && $bench --label replicas-0 --output \"\$RECORD_DIR/replicas0-\$PAIR.json\""
    for m in output_throughput tpot.median_ms ttft.median_ms; do
      record "pairs-replicas-$m" ./bin/llmux bench pairs --metric "$m" --a "$RECORD_DIR/replicas1-[0-9].json" --b "$RECORD_DIR/replicas0-[0-9].json"
    done ;;
  hop)
    record handle-hop go test -run '^$' -bench HandleHop -benchtime 20000x -count 3 ./deploy/ ;;
  *) echo "replicas: unknown part $part" >&2; exit 2 ;;
  esac
done
