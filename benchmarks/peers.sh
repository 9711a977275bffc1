#!/usr/bin/env bash
# peers.sh — llmux side by side with llama.cpp's llama-server and with
# ollama: the same GGUF, the same slots and threads, the same `llmux bench`
# workloads, in one sitting.
#
#   LLAMA_SERVER=/path/to/llama-server benchmarks/peers.sh [MODEL.gguf]
#
# MODEL defaults to the synthesized 86M bench model (`llmux models synth
# --preset bench --no-byte-tokens`). For each peer, llmux and the peer run alternately
# (llmux, peer, llmux, peer, ...: `interleave` in record.sh), each run
# against a freshly started server, and `llmux bench pairs` prints every
# pair's ratio, their median and range. Three workloads:
#   stream      streaming completions of OUTPUT_LEN tokens at concurrency
#               CONCURRENCY (output tokens/s, TTFT, TPOT)
#   prefill     short requests (4/s) while 8 long prompts (420 words)
#               prefill: the short requests' TTFT
#   prefix      64 chat requests sharing a 512-word system prompt
# Everything is recorded verbatim under benchmarks/results/DATE-COMMIT/
# (or RECORD_DIR), the servers' logs and versions included.
#
# Peers: llama-server when LLAMA_SERVER names its binary (build it from a
# llama.cpp source tree with its own cmake instructions; `llama-server
# --version` is recorded, and LLAMA_CPP_COMMIT when given); ollama
# unless SKIP_OLLAMA=1 (built from its pinned Go module here).
# Environment: PAIRS (3), PARALLEL (16), CTX (16384), THREADS (nproc),
# PROMPTS (64), CONCURRENCY (1,4,16), OUTPUT_LEN (64), WORKLOADS
# (stream prefill prefix), LLMUX_ARGS (more `llmux serve` flags, e.g.
# "--kv-layout per-slot").
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
PARALLEL="${PARALLEL:-16}"
CTX="${CTX:-16384}"
THREADS="${THREADS:-$(nproc)}"
PROMPTS="${PROMPTS:-64}"
CONCURRENCY="${CONCURRENCY:-1,4,16}"
OUTPUT_LEN="${OUTPUT_LEN:-64}"
PAIRS="${PAIRS:-3}"
WORKLOADS="${WORKLOADS:-stream prefill prefix}"
OLLAMA_VERSION=v0.24.0
PORT=18181

make -s build >/dev/null
eval "$(make -s env)"
record_init
if [ $# -ge 1 ]; then
  MODEL="$(realpath "$1")"
else
  # Without byte-fallback tokens: random weights then still emit valid
  # UTF-8, which the newer llama-server's output parser requires (with
  # byte tokens its streams end in "does not match the expected
  # Content-only format" errors).
  MODEL="$(mktemp -d)/bench.gguf"
  ./bin/llmux models synth --preset bench --no-byte-tokens "$MODEL" >/dev/null 2>&1
fi
name=bench-model
work="$(mktemp -d)"
export PEERS_PID_FILE="$work/server.pid"
cleanup() { [ -f "$PEERS_PID_FILE" ] && kill "$(cat "$PEERS_PID_FILE")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

peers=()
if [ -n "${LLAMA_SERVER:-}" ]; then
  record llama-server-version "$LLAMA_SERVER" --version
  # A build from a source archive does not know its commit: say it.
  [ -n "${LLAMA_CPP_COMMIT:-}" ] && record llama-cpp-commit echo "llama.cpp commit $LLAMA_CPP_COMMIT"
  peers+=(llama-server)
fi
if [ "${SKIP_OLLAMA:-0}" != 1 ]; then
  deps="${LLMUX_DEPS:-$HOME/.cache/llmux/deps}"
  if [ ! -x "$deps/bin/ollama" ]; then
    echo "peers: building ollama $OLLAMA_VERSION from its Go module (a few minutes the first time)" >&2
    GOBIN="$deps/bin" go install "github.com/ollama/ollama@$OLLAMA_VERSION"
  fi
  export OLLAMA_BIN="$deps/bin/ollama" OLLAMA_STORE="$work/ollama"
  peers+=(ollama)
fi
export MODEL PARALLEL CTX THREADS PORT LLAMA_SERVER work name LLMUX_ARGS

# start SERVER: starts one server on PORT, logging to
# $RECORD_DIR/SERVER-serve.log, and waits until it answers.
cat >"$work/start" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
server=$1
log="$RECORD_DIR/$server-serve.log"
[ -f "$PEERS_PID_FILE" ] && { kill "$(cat "$PEERS_PID_FILE")" 2>/dev/null || true; sleep 1; }
case "$server" in
  llmux)
    # shellcheck disable=SC2206 # LLMUX_ARGS is a list of flags
    cmd=(./bin/llmux serve --model "$MODEL" --model-name "$name" --parallel "$PARALLEL" --ctx-size "$CTX" --threads "$THREADS" --port "$PORT" --log-level warn ${LLMUX_ARGS:-})
    ready="http://127.0.0.1:$PORT/ready" ;;
  llama-server)
    cmd=("$LLAMA_SERVER" -m "$MODEL" --alias "$name" -np "$PARALLEL" -c "$CTX" -t "$THREADS" -tb "$THREADS" --host 127.0.0.1 --port "$PORT" --no-webui)
    ready="http://127.0.0.1:$PORT/health" ;;
  ollama)
    export OLLAMA_HOST="127.0.0.1:$PORT" OLLAMA_MODELS="$OLLAMA_STORE" OLLAMA_NUM_PARALLEL="$PARALLEL" OLLAMA_KEEP_ALIVE=-1 OLLAMA_CONTEXT_LENGTH=$((CTX / PARALLEL))
    cmd=("$OLLAMA_BIN" serve)
    ready="http://127.0.0.1:$PORT/api/version" ;;
esac
printf '== %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "${cmd[@]}")" >>"$log"
setsid "${cmd[@]}" >>"$log" 2>&1 &
echo $! >"$PEERS_PID_FILE"
for _ in $(seq 1 600); do curl -sf "$ready" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "$ready" >/dev/null || { echo "peers: $server did not come up" >&2; exit 1; }
if [ "$server" = ollama ]; then
  printf 'FROM %s\nPARAMETER num_ctx %d\n' "$MODEL" $((CTX / PARALLEL)) >"$work/Modelfile"
  "$OLLAMA_BIN" create "$name" -f "$work/Modelfile" >/dev/null 2>&1
  # Load it before measuring, as the other servers are loaded at start.
  curl -sf "http://127.0.0.1:$PORT/api/generate" -d "{\"model\":\"$name\",\"prompt\":\"hi\",\"options\":{\"num_predict\":1}}" >/dev/null
fi
EOF
chmod +x "$work/start"

# run WORKLOAD SERVER OUT: one measurement against a fresh server.
cat >"$work/run" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
workload=$1 server=$2 out=$3
"$work/start" "$server"
bench=(./bin/llmux bench --base-url "http://127.0.0.1:$PORT" --model "$name" --seed 1 --label "$server")
case "$workload" in
  stream)
    "${bench[@]}" --dataset-name random --random-input-len 32 --random-output-len "$OUTPUT_LEN" --ignore-eos \
      --num-prompts "$PROMPTS" --max-concurrency "$CONCURRENCY" --warmup 2 --output "$out.json" ;;
  prefill)
    "${bench[@]}" --dataset-name random --random-input-len 420 --random-output-len 16 --ignore-eos \
      --num-prompts 8 --warmup 0 --output "$out-long.json" &
    long=$!
    sleep 0.5
    "${bench[@]}" --dataset-name random --random-input-len 12 --random-output-len 4 --ignore-eos \
      --num-prompts 16 --request-rate 4 --warmup 0 --output "$out.json"
    wait "$long" ;;
  prefix)
    "${bench[@]}" --endpoint /v1/chat/completions --dataset-name shared-prefix --prefix-len 512 \
      --random-output-len 8 --ignore-eos --num-prompts 64 --warmup 1 --output "$out.json" ;;
esac
EOF
chmod +x "$work/run"
export OUTPUT_LEN PROMPTS CONCURRENCY

for peer in "${peers[@]}"; do
  for w in $WORKLOADS; do
    interleave "$PAIRS" \
      "llmux-$w-vs-$peer" "\"\$work/run\" $w llmux \"\$RECORD_DIR/llmux-$w-vs-$peer-\$PAIR\"" \
      "$peer-$w" "\"\$work/run\" $w $peer \"\$RECORD_DIR/$peer-$w-\$PAIR\""
    case "$w" in
      stream) metrics="output_throughput ttft.median_ms tpot.median_ms" ;;
      prefill) metrics="ttft.p99_ms ttft.median_ms" ;;
      prefix) metrics="ttft.median_ms request_throughput" ;;
    esac
    for m in $metrics; do
      record "pairs-$w-$peer-$m" ./bin/llmux bench pairs --metric "$m" \
        --a "$RECORD_DIR/llmux-$w-vs-$peer-[0-9].json" --b "$RECORD_DIR/$peer-$w-[0-9].json" --output "$RECORD_DIR/pairs-$w-$peer-$m.json"
    done
  done
done
