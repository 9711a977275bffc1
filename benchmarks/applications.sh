#!/usr/bin/env bash
# applications.sh — what composing costs: examples/composed serving the
# 86M bench model (as both of its LLM deployments) through its
# application — API-key auth → keyword router → LLM deployment — and the
# same program serving the model directly (--direct), alternately:
# streamed 64-token completions at concurrency 16 (and 1). Recorded
# verbatim under benchmarks/results/DATE-COMMIT/ (or RECORD_DIR).
#
#   benchmarks/applications.sh
# Environment: PAIRS (3), PROMPTS (64), FIRST (app: each pair runs the
# application first; direct: the direct server first), and
# INTERLEAVE_ORDER=alternate (record.sh: even pairs the other way round).
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
PAIRS="${PAIRS:-3}"
PROMPTS="${PROMPTS:-64}"
PORT=18194

make -s build >/dev/null
eval "$(make -s env)"
record_init
work="$(mktemp -d)"
./bin/llmux models synth --preset bench "$work/bench.gguf" >/dev/null 2>&1
go build -o "$work/composed" ./examples/composed
export work PORT
cleanup() { [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# serve [--direct]: a fresh example server (the application answers at
# /assistant, the direct server at the root).
cat >"$work/serve" <<'EOS'
#!/usr/bin/env bash
set -euo pipefail
[ -f "$work/pid" ] && { kill "$(cat "$work/pid")" 2>/dev/null || true; sleep 1; }
cmd=("$work/composed" --addr "127.0.0.1:$PORT" --chat "$work/bench.gguf" --code "$work/bench.gguf" --key k "$@")
printf '== %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "${cmd[@]}")" >>"$RECORD_DIR/serve.log"
setsid "${cmd[@]}" >>"$RECORD_DIR/serve.log" 2>&1 &
echo $! >"$work/pid"
base="http://127.0.0.1:$PORT/assistant"; [ "${1:-}" = --direct ] && base="http://127.0.0.1:$PORT"
for _ in $(seq 1 600); do curl -sf -H 'Authorization: Bearer k' "$base/v1/models" | grep -q '"chat"' && exit 0; sleep 0.2; done
echo "applications: server did not come up" >&2; exit 1
EOS
chmod +x "$work/serve"
bench="./bin/llmux bench --api-key k --model chat --seed 1 --dataset-name random --random-input-len 32 --random-output-len 64 --ignore-eos --num-prompts $PROMPTS --max-concurrency 16,1 --warmup 2"
app_run="\"\$work/serve\" && $bench --base-url http://127.0.0.1:$PORT/assistant --label app --output \"\$RECORD_DIR/app-\$PAIR.json\""
direct_run="\"\$work/serve\" --direct && $bench --base-url http://127.0.0.1:$PORT --label direct --output \"\$RECORD_DIR/direct-\$PAIR.json\""
if [ "${FIRST:-app}" = direct ]; then
  interleave "$PAIRS" direct "$direct_run" app "$app_run"
else
  interleave "$PAIRS" app "$app_run" direct "$direct_run"
fi
for m in output_throughput tpot.median_ms ttft.median_ms; do
  record "pairs-app-$m" ./bin/llmux bench pairs --metric "$m" --a "$RECORD_DIR/app-*.json" --b "$RECORD_DIR/direct-*.json"
done
