#!/usr/bin/env bash
# multiplex.sh — many models behind one llmux, measured with `llmux bench`.
#
#   benchmarks/multiplex.sh [PART...]      (default: churn two cold load)
#
# The models are three copies of the synthesized 86M bench model (m1, m2,
# m3). Every run starts a fresh server; comparisons run alternately
# (`interleave` in record.sh, PAIRS pairs) and `llmux bench pairs` gives
# each pair's ratio, their median and range. Recorded verbatim under
# benchmarks/results/DATE-COMMIT/ (or RECORD_DIR).
#
#   churn  --max-models 2; 8 clients, client i alternating between models
#          i%3 and (i+1)%3 (`--model-dist pairs`): swap-aware policy vs
#          lru — goodput (TTFT ≤ 2 s), swaps, failures; and the same
#          workload on one model (m1 alone) for the one-model rate.
#   two    two busy models at once (8 streams each, --max-models 2) vs one
#          model with 16 streams: output tokens/s.
#   cold   time to first token of a first request (cold load) vs a second
#          one, idle server, 32-word prompt; the raw load time is in the
#          server log.
#   load   inter-token latency of 4 streams on m1 while m2 is loaded and
#          unloaded every 2 s (--keep-alive 1s) vs without loads.
#   adapters  16 streams spread over 8 LoRA adapters of m1 (rank 16,
#          attn_q,attn_v,ffn_up) vs 16 streams on one adapter, and one
#          adapter vs the base model; --parallel 16, 128-word prompts,
#          128-token outputs; KV layout KV_LAYOUT (unified).
#   cold-adapter  time to first token of the first request for adapter a1
#          of m1 (the adapter loads; m1 already warm) vs a second one, idle
#          server, the same 32-word prompt, prefix reuse off so that the
#          second request prefills it again: cold minus warm is the load.
#   adapters-configured  the base model m1 on a server with the 8 adapters
#          configured (decode-graph reuse off) vs on one without adapters
#          (graph reuse on), the adapters workload at 1 and 16 streams:
#          output tokens/s.
#   two-replicas  the `two` workload on two replica processes
#          (--replicas 2: half the threads each, the router keeping each
#          model on the replica that loaded it) vs one model with 16
#          streams on one replica: output tokens/s.
#   two-builds  the `two` workload served by bin/llmux and by the binary
#          B (a build before a change), alternately: output tokens/s.
#
# Environment: PAIRS (3), CHURN_PROMPTS (96), THREADS (nproc), B.
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
PAIRS="${PAIRS:-3}"
CHURN_PROMPTS="${CHURN_PROMPTS:-96}"
THREADS="${THREADS:-$(nproc)}"
PORT=18191
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(churn two cold load)

make -s build >/dev/null
record_init
work="$(mktemp -d)"
./bin/llmux models synth --preset bench "$work/m1.gguf" >/dev/null 2>&1
cp "$work/m1.gguf" "$work/m2.gguf"
cp "$work/m1.gguf" "$work/m3.gguf"
export work PORT THREADS CHURN_PROMPTS
cleanup() { [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# serve ARGS...: a fresh llmux on PORT with the three models, logging to
# $RECORD_DIR/serve.log.
cat >"$work/serve" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
[ -f "$work/pid" ] && { kill "$(cat "$work/pid")" 2>/dev/null || true; sleep 1; }
cmd=("${LLMUX:-./bin/llmux}" serve --port "$PORT" --threads "$THREADS" --log-level info "$@")
printf '== %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "${cmd[@]}")" >>"$RECORD_DIR/serve.log"
setsid "${cmd[@]}" >>"$RECORD_DIR/serve.log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && exit 0; sleep 0.2; done
echo "multiplex: server did not come up" >&2; exit 1
EOF
chmod +x "$work/serve"
models=(--model "m1=$work/m1.gguf" --model "m2=$work/m2.gguf" --model "m3=$work/m3.gguf" --ollama-models "$work/no-ollama")
printf -v M '%q ' "${models[@]}"
bench="./bin/llmux bench --base-url http://127.0.0.1:$PORT --seed 1"
# The `two` workload (16 streams, 128-token outputs): two models under
# load ($two, after a server's start command) and one model ($one16).
load="--dataset-name random --random-input-len 32 --random-output-len 128 --ignore-eos --warmup 2"
twobench="$bench --models m1,m2 --model-dist cycle --max-concurrency 16 --num-prompts 64 $load"
two="$M --parallel 8 --max-models 2 && $twobench"
one16="$M --parallel 16 --max-models 2 && $bench --model m1 --max-concurrency 16 --num-prompts 64 $load"

# The adapters workloads: 8 rank-16 adapters of m1 (synthesized on first
# use; $L holds their --lora flags), a server with them ($aserve) and the
# workload ($aload: 16 streams, 128 tokens in and out).
loras() {
  local i a=()
  for i in 1 2 3 4 5 6 7 8; do
    [ -f "$work/a$i.gguf" ] || ./bin/llmux models synth-lora --base "$work/m1.gguf" --rank 16 --seed "$i" "$work/a$i.gguf" >/dev/null 2>&1
    a+=(--lora "name=a$i,base=m1,path=$work/a$i.gguf")
  done
  printf -v L '%q ' "${a[@]}"
  abase="\"\$work/serve\" --model m1=$work/m1.gguf --ollama-models $work/no-ollama --parallel 16 --ctx-size 16384 --kv-layout ${KV_LAYOUT:-unified}"
  aserve="$abase $L"
}
aload="--dataset-name random --random-input-len 128 --random-output-len 128 --ignore-eos --max-concurrency 16 --num-prompts 32 --warmup 2"

for part in "${parts[@]}"; do
  case "$part" in
  churn)
    churn="$bench --models m1,m2,m3 --model-dist pairs --max-concurrency 8 --num-prompts $CHURN_PROMPTS --dataset-name random --random-input-len 32 --random-output-len 32 --ignore-eos --warmup 0 --goodput ttft:2000"
    interleave "$PAIRS" \
      churn-swap-aware "\"\$work/serve\" $M --parallel 8 --max-models 2 --swap-policy swap-aware && $churn --label swap-aware --output \"\$RECORD_DIR/churn-swap-aware-\$PAIR.json\"; curl -s http://127.0.0.1:$PORT/metrics | grep -E '^llmux_model_(swaps|cold_starts|loads)_total' || true" \
      churn-lru "\"\$work/serve\" $M --parallel 8 --max-models 2 --swap-policy lru && $churn --label lru --output \"\$RECORD_DIR/churn-lru-\$PAIR.json\"; curl -s http://127.0.0.1:$PORT/metrics | grep -E '^llmux_model_(swaps|cold_starts|loads)_total' || true"
    for m in request_goodput request_throughput ttft.p99_ms; do
      record "pairs-churn-$m" ./bin/llmux bench pairs --metric "$m" --a "$RECORD_DIR/churn-swap-aware-[0-9].json" --b "$RECORD_DIR/churn-lru-[0-9].json"
    done
    one="$bench --model m1 --max-concurrency 8 --num-prompts $CHURN_PROMPTS --dataset-name random --random-input-len 32 --random-output-len 32 --ignore-eos --warmup 0 --goodput ttft:2000"
    interleave "$PAIRS" \
      churn-swap-aware-b "\"\$work/serve\" $M --parallel 8 --max-models 2 && $churn --label swap-aware --output \"\$RECORD_DIR/churn-swap-aware-b-\$PAIR.json\"" \
      one-model "\"\$work/serve\" $M --parallel 8 --max-models 2 && $one --label one-model --output \"\$RECORD_DIR/one-model-\$PAIR.json\""
    record pairs-churn-vs-one ./bin/llmux bench pairs --metric request_throughput --a "$RECORD_DIR/churn-swap-aware-b-[0-9].json" --b "$RECORD_DIR/one-model-[0-9].json"
    ;;
  two)
    interleave "$PAIRS" \
      two-models "\"\$work/serve\" $two --label two-models --output \"\$RECORD_DIR/two-models-\$PAIR.json\"" \
      one-model16 "\"\$work/serve\" $one16 --label one-model --output \"\$RECORD_DIR/one-model16-\$PAIR.json\""
    record pairs-two-vs-one ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/two-models-[0-9].json" --b "$RECORD_DIR/one-model16-[0-9].json"
    ;;
  two-replicas)
    interleave "$PAIRS" \
      two-replicas "\"\$work/serve\" $M --parallel 8 --max-models 2 --replicas 2 && $twobench --label two-replicas --output \"\$RECORD_DIR/two-replicas-\$PAIR.json\"" \
      one-model16 "\"\$work/serve\" $one16 --label one-model --output \"\$RECORD_DIR/one-model16-\$PAIR.json\""
    record pairs-two-replicas-vs-one ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/two-replicas-[0-9].json" --b "$RECORD_DIR/one-model16-[0-9].json"
    ;;
  two-builds)
    : "${B:?two-builds: set B to the llmux binary to compare with}"
    record build-b "$B" version
    interleave "$PAIRS" \
      two-models-a "\"\$work/serve\" $two --label a --output \"\$RECORD_DIR/two-models-a-\$PAIR.json\"" \
      two-models-b "LLMUX=\"$B\" \"\$work/serve\" $two --label b --output \"\$RECORD_DIR/two-models-b-\$PAIR.json\""
    record pairs-two-builds ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/two-models-a-[0-9].json" --b "$RECORD_DIR/two-models-b-[0-9].json"
    ;;
  cold)
    # A cold request and a warm one, each pair on a fresh server.
    short="--dataset-name random --random-input-len 32 --random-output-len 8 --ignore-eos --num-prompts 1 --max-concurrency 1"
    interleave "$PAIRS" \
      cold "\"\$work/serve\" $M && $bench --model m2 $short --warmup 0 --label cold --output \"\$RECORD_DIR/cold-\$PAIR.json\"" \
      warm "$bench --model m2 $short --warmup 0 --label warm --output \"\$RECORD_DIR/warm-\$PAIR.json\""
    record pairs-cold-vs-warm ./bin/llmux bench pairs --metric ttft.median_ms --a "$RECORD_DIR/cold-[0-9].json" --b "$RECORD_DIR/warm-[0-9].json"
    record load-times grep -E 'model loaded' "$RECORD_DIR/serve.log"
    ;;
  load)
    streams="$bench --model m1 --max-concurrency 4 --num-prompts 24 --dataset-name random --random-input-len 32 --random-output-len 256 --ignore-eos --warmup 1"
    churner="(while sleep 2; do curl -s -o /dev/null http://127.0.0.1:$PORT/v1/completions -H 'Content-Type: application/json' -d '{\"model\":\"m2\",\"prompt\":\"x\",\"max_tokens\":1}'; done) & c=\$!"
    interleave "$PAIRS" \
      streams-with-loads "\"\$work/serve\" $M --keep-alive 1s && { $churner; $streams --label with-loads --output \"\$RECORD_DIR/streams-with-loads-\$PAIR.json\"; kill \$c; }" \
      streams-alone "\"\$work/serve\" $M --keep-alive 1s && $streams --label alone --output \"\$RECORD_DIR/streams-alone-\$PAIR.json\""
    record pairs-itl-loads ./bin/llmux bench pairs --metric itl.p99_ms --a "$RECORD_DIR/streams-with-loads-[0-9].json" --b "$RECORD_DIR/streams-alone-[0-9].json"
    record loads-during-streams grep -cE "model loaded.*model=m2" "$RECORD_DIR/serve.log" || true
    ;;
  adapters)
    loras
    interleave "$PAIRS" \
      adapters-8 "$aserve && $bench --models a1,a2,a3,a4,a5,a6,a7,a8 --model-dist cycle $aload --label eight-adapters --output \"\$RECORD_DIR/adapters-8-\$PAIR.json\"" \
      adapters-1 "$aserve && $bench --model a1 $aload --label one-adapter --output \"\$RECORD_DIR/adapters-1-\$PAIR.json\""
    record pairs-adapters-8-vs-1 ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/adapters-8-[0-9].json" --b "$RECORD_DIR/adapters-1-[0-9].json"
    interleave "$PAIRS" \
      adapter-one "$aserve && $bench --model a1 $aload --label one-adapter --output \"\$RECORD_DIR/adapter-one-\$PAIR.json\"" \
      base-alone "$aserve && $bench --model m1 $aload --label base --output \"\$RECORD_DIR/base-alone-\$PAIR.json\""
    record pairs-adapter-vs-base ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/adapter-one-[0-9].json" --b "$RECORD_DIR/base-alone-[0-9].json"
    ;;
  cold-adapter)
    loras
    short="--dataset-name random --random-input-len 32 --random-output-len 8 --ignore-eos --num-prompts 1 --max-concurrency 1 --warmup 0"
    interleave "$PAIRS" \
      cold-adapter "$aserve --no-prefix-cache && $bench --model m1 $short --label base-first --output \"\$RECORD_DIR/base-first-\$PAIR.json\" && $bench --model a1 $short --label cold-adapter --output \"\$RECORD_DIR/cold-adapter-\$PAIR.json\"" \
      warm-adapter "$bench --model a1 $short --label warm-adapter --output \"\$RECORD_DIR/warm-adapter-\$PAIR.json\""
    record pairs-cold-vs-warm-adapter ./bin/llmux bench pairs --metric ttft.median_ms --a "$RECORD_DIR/cold-adapter-[0-9].json" --b "$RECORD_DIR/warm-adapter-[0-9].json"
    record adapter-load-log grep -iE 'adapter' "$RECORD_DIR/serve.log" || true
    ;;
  adapters-configured)
    loras
    both="$bench --model m1 ${aload/--max-concurrency 16/--max-concurrency 1,16}"
    interleave "$PAIRS" \
      base-with-adapters "$aserve && $both --label with-adapters --output \"\$RECORD_DIR/base-with-adapters-\$PAIR.json\"" \
      base-without-adapters "$abase && $both --label without-adapters --output \"\$RECORD_DIR/base-without-adapters-\$PAIR.json\""
    record pairs-base-adapters-configured ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/base-with-adapters-[0-9].json" --b "$RECORD_DIR/base-without-adapters-[0-9].json"
    ;;
  *) echo "multiplex: unknown part $part" >&2; exit 2 ;;
  esac
done
