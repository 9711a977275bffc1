#!/usr/bin/env bash
# peers.sh — llmux and ollama side by side, on the same GGUF, the same
# parallelism and the same workload, in one sitting.
#
#   benchmarks/peers.sh [MODEL.gguf]          (default ../shared/models/stories260K.gguf)
#
# It builds ollama from its Go module (pinned, with the same CPU flags as
# llmux), imports the model into a throwaway ollama store, serves both on
# loopback, runs `llmux bench` against each alternately (llmux, ollama,
# llmux, ollama, ...: `interleave` in record.sh), and prints each pair's
# ratios with `llmux bench pairs`. Everything is recorded verbatim under
# benchmarks/results/DATE-COMMIT/ (or RECORD_DIR), the servers' logs
# included. Environment: PAIRS (3), PARALLEL (4), PROMPTS (64),
# CONCURRENCY (1,4,16), DATASET (stories), OUTPUT_LEN (64).
# Any other OpenAI-compatible server (llama.cpp's llama-server, vLLM) is
# measured the same way: `llmux bench --base-url URL --model NAME ...`.
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
MODEL="$(realpath "${1:-../shared/models/stories260K.gguf}")"
PARALLEL="${PARALLEL:-4}"
PROMPTS="${PROMPTS:-64}"
CONCURRENCY="${CONCURRENCY:-1,4,16}"
DATASET="${DATASET:-stories}"
OUTPUT_LEN="${OUTPUT_LEN:-64}"
PAIRS="${PAIRS:-3}"
OLLAMA_VERSION=v0.24.0
LLMUX_PORT=18181
OLLAMA_PORT=18182

make -s build >/dev/null
eval "$(make -s env)"
record_init
deps="${LLMUX_DEPS:-$HOME/.cache/llmux/deps}"
if [ ! -x "$deps/bin/ollama" ]; then
  echo "peers: building ollama $OLLAMA_VERSION from its Go module (a few minutes the first time)" >&2
  GOBIN="$deps/bin" go install "github.com/ollama/ollama@$OLLAMA_VERSION"
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "peers: $1 did not come up" >&2; return 1
}

name="$(basename "$MODEL" .gguf)"
./bin/llmux serve --model "$MODEL" --model-name "$name" --parallel "$PARALLEL" --port "$LLMUX_PORT" --log-level warn 2>"$RECORD_DIR/llmux-serve.log" &
pids+=($!)
OLLAMA_HOST="127.0.0.1:$OLLAMA_PORT" OLLAMA_MODELS="$work/ollama" OLLAMA_NUM_PARALLEL="$PARALLEL" OLLAMA_KEEP_ALIVE=-1 \
  "$deps/bin/ollama" serve >"$RECORD_DIR/ollama-serve.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$LLMUX_PORT/ready"
wait_http "http://127.0.0.1:$OLLAMA_PORT/api/version"
printf 'FROM %s\n' "$MODEL" >"$work/Modelfile"
OLLAMA_HOST="127.0.0.1:$OLLAMA_PORT" "$deps/bin/ollama" create "$name" -f "$work/Modelfile" >/dev/null

common=(./bin/llmux bench --model "$name" --num-prompts "$PROMPTS" --max-concurrency "$CONCURRENCY" --dataset-name "$DATASET"
        --random-output-len "$OUTPUT_LEN" --seed 1 --warmup 2)
# interleave runs each command with bash -c; RECORD_DIR and PAIR are
# expanded there, when the run starts.
printf -v bench '%q ' "${common[@]}"
interleave "$PAIRS" \
  llmux "$bench --base-url http://127.0.0.1:$LLMUX_PORT --label llmux-\$PAIR --output \"\$RECORD_DIR\"/llmux-\$PAIR.json" \
  ollama "$bench --base-url http://127.0.0.1:$OLLAMA_PORT --label ollama-$OLLAMA_VERSION-\$PAIR --output \"\$RECORD_DIR\"/ollama-\$PAIR.json"
echo
for metric in output_throughput ttft.median_ms tpot.median_ms; do
  record "pairs-$metric" ./bin/llmux bench pairs --metric "$metric" \
    --a "$RECORD_DIR/llmux-*.json" --b "$RECORD_DIR/ollama-*.json" --output "$RECORD_DIR/pairs-$metric.json"
done
record peers-plot ./bin/llmux bench plot -o "$RECORD_DIR/peers.svg" "$RECORD_DIR"/llmux-*.json "$RECORD_DIR"/ollama-*.json
