#!/usr/bin/env bash
# apis.sh — what each streamed API costs against chat completions: the same
# server and workload (the 86M bench model, 16 slots, streamed 64-token
# answers at concurrency 1 and 16) driven through /v1/chat/completions and
# through Anthropic's /v1/messages, then chat and the Responses API,
# alternately (llmux bench --api). Recorded verbatim under
# benchmarks/results/DATE-COMMIT/ (or RECORD_DIR).
#
#   benchmarks/apis.sh [PART...]   (default: messages responses)
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

serve="benchmarks/serve-llmux.sh ./bin/llmux --model $work/bench.gguf --model-name bench --parallel 16 --ctx-size 16384 --threads $THREADS"
bench="./bin/llmux bench --base-url http://127.0.0.1:$PORT --model bench --seed 1 --dataset-name random --random-input-len 32 --random-output-len 64 --ignore-eos --num-prompts $PROMPTS --max-concurrency 1,16 --warmup 2"
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(messages responses)
for part in "${parts[@]}"; do
  case "$part" in
  messages | responses)
    interleave "$PAIRS" \
      "chat-vs-$part" "$serve && $bench --api chat --label chat --output \"\$RECORD_DIR/chat-vs-$part-\$PAIR.json\"" \
      "$part" "$serve && $bench --api $part --label $part --output \"\$RECORD_DIR/$part-\$PAIR.json\""
    for m in output_throughput tpot.median_ms ttft.median_ms; do
      record "pairs-$part-$m" ./bin/llmux bench pairs --metric "$m" --a "$RECORD_DIR/$part-[0-9].json" --b "$RECORD_DIR/chat-vs-$part-[0-9].json"
    done ;;
  *) echo "apis: unknown part $part" >&2; exit 2 ;;
  esac
done
