#!/usr/bin/env bash
# sweep.sh — the llmux bench runs recorded in benchmarks/README.md:
# concurrency sweeps on the synthesized ~86M model and on stories260K,
# prefix sharing with the cache on and off, and short-request TTFT while
# long prompts prefill. Every run is recorded verbatim (see record.sh) under
# benchmarks/results/DATE-COMMIT/ (or RECORD_DIR), with its JSON result
# beside it and the servers' logs in serve.log.
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
make -s build >/dev/null
record_init
OUT="$RECORD_DIR"
PORT=18191
URL="http://127.0.0.1:$PORT"
pid=""
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=""; }
trap stop EXIT
serve() { # args...
  stop
  local cmd=(./bin/llmux serve --port "$PORT" --log-level warn "$@")
  printf '== %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "${cmd[@]}")" >>"$OUT/serve.log"
  "${cmd[@]}" 2>>"$OUT/serve.log" &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "$URL/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "sweep: server did not start" >&2; exit 1
}
# The bench command as an array, so that commands.tsv shows it in full.
bench=(./bin/llmux bench --base-url "$URL" --seed 1)

# 1. Concurrency sweeps.
serve --model synth:bench --model-name bench --parallel 64 --ctx-size 20480
record sweep-bench "${bench[@]}" --model bench --dataset-name random --random-input-len 128 --random-output-len 128 --ignore-eos \
  --num-prompts 64 --max-concurrency 1,4,16,64 --label llmux-bench86M --output "$OUT/sweep-bench.json"
if [ -f ../shared/models/stories260K.gguf ]; then
  serve --model ../shared/models/stories260K.gguf --model-name stories --parallel 64 --ctx-size 16384
  record sweep-stories "${bench[@]}" --model stories --dataset-name stories --random-output-len 128 --ignore-eos \
    --num-prompts 128 --max-concurrency 1,4,16,64 --label llmux-stories260K --output "$OUT/sweep-stories.json"
fi
record sweep-plot ./bin/llmux bench plot -o "$OUT/sweep.svg" "$OUT"/sweep-*.json

# 1b. The same bench-model sweep with a KV stream per slot.
serve --model synth:bench --model-name bench --parallel 64 --ctx-size 20480 --kv-layout per-slot
record sweep-bench-per-slot "${bench[@]}" --model bench --dataset-name random --random-input-len 128 --random-output-len 128 --ignore-eos \
  --num-prompts 64 --max-concurrency 1,4,16,64 --label llmux-bench86M-per-slot --output "$OUT/sweep-bench-per-slot.json"
record layout-compare ./bin/llmux bench compare "$OUT/sweep-bench-per-slot.json" "$OUT/sweep-bench.json"

# 2. Prefix sharing: 64 requests with one 512-word system prompt, cache on and off.
for mode in on off; do
  flags=(); [ "$mode" = off ] && flags=(--no-prefix-cache)
  serve --model synth:bench --model-name bench --parallel 16 --ctx-size 16384 "${flags[@]}"
  record "prefix-$mode" "${bench[@]}" --model bench --endpoint /v1/chat/completions --dataset-name shared-prefix --prefix-len 512 \
    --random-output-len 8 --ignore-eos --num-prompts 64 --label "prefix-cache-$mode" --output "$OUT/prefix-$mode.json"
done
record prefix-compare ./bin/llmux bench compare "$OUT/prefix-on.json" "$OUT/prefix-off.json"

# 3. Short requests while 8 long (~420-word) prompts prefill.
serve --model synth:bench --model-name bench --parallel 16 --ctx-size 16384
record long "${bench[@]}" --model bench --dataset-name random --random-input-len 420 --random-output-len 16 --ignore-eos \
  --num-prompts 8 --warmup 0 --label long --output "$OUT/long.json" &
long=$!
sleep 0.5
record short-during-long "${bench[@]}" --model bench --dataset-name random --random-input-len 12 --random-output-len 4 --ignore-eos \
  --num-prompts 16 --request-rate 4 --warmup 0 --label short-during-long --output "$OUT/short-during-long.json"
wait "$long"
