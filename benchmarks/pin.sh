#!/usr/bin/env bash
# pin.sh — what the pinned llama.cpp costs, like for like: the native
# decode harness (benchmarks/native/decode_bench.c, no Go) built over the
# pinned sources (the ollama module llmux links) and over a newer llama.cpp
# tree, run alternately on the 86M bench model at batch 1, 4 and 16. Both
# use OpenMP, as llama.cpp's cmake build does. Then the same harness's
# single-sequence decode (built with OpenMP, and with ggml's own thread
# pool as llmux's cgo build is) beside llmux's single-stream time per
# token (streamed 64-token completions, concurrency 1, --replicas 0 and
# 1), in turn: what llmux adds on top of its llama.cpp. The harness
# decodes after a 128-token prompt, llmux after 32 tokens. Recorded verbatim under
# benchmarks/results/DATE-COMMIT/ (or RECORD_DIR).
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp benchmarks/pin.sh [PART...]
#     pin       pinned harness vs the harness over LLAMA_CPP_DIR
#     overhead  llmux --replicas 0 and 1 vs the pinned harness, one stream
#               (and --replicas 1 ÷ --replicas 0 from the same runs)
#
# LLAMA_CPP_DIR is a llama.cpp source tree already built with cmake
# (GGML_NATIVE=ON, AMX off) into LLAMA_CPP_DIR/build; its commit is
# recorded (LLAMA_CPP_COMMIT, else its COMMIT file or git). Environment:
# PAIRS (3), THREADS (nproc), PROMPTS (32).
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
PAIRS="${PAIRS:-3}"
THREADS="${THREADS:-$(nproc)}"
PROMPTS="${PROMPTS:-32}"
PORT=18194
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(pin overhead)

make -s build >/dev/null
eval "$(make -s env)"
record_init
work="$(mktemp -d)"
cleanup() { [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
./bin/llmux models synth --preset bench "$work/bench.gguf" >/dev/null 2>&1
pinned="$(OPENMP=1 benchmarks/native/build.sh)"
pool="$(OPENMP=0 benchmarks/native/build.sh)"
export work PORT THREADS pinned pool

# overhead_ratios: for each pair, llmux's median time per output token
# (--replicas 0 and 1) ÷ the harness's time per token (1000 / tok/s), for
# both harness builds; then each column's median and range.
overhead_ratios() {
  local i n
  n=$(ls "$RECORD_DIR"/overhead-replicas0-*.json | wc -l)
  for i in $(seq 1 "$n"); do
    omp=$(sed -n 's/^batch=1 tok\/s=//p' "$RECORD_DIR/overhead-native-openmp-$i.txt")
    tp=$(sed -n 's/^batch=1 tok\/s=//p' "$RECORD_DIR/overhead-native-pool-$i.txt")
    r0=$(jq '.points[0].summary.tpot.median_ms' "$RECORD_DIR/overhead-replicas0-$i.json")
    r1=$(jq '.points[0].summary.tpot.median_ms' "$RECORD_DIR/overhead-replicas1-$i.json")
    echo "$i $omp $tp $r0 $r1"
  done | awk '
    function stats(name, col,   v, n, i, j, t, med) {
      n = split(col, v, " ");
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2;
      printf "%s median=%.3f range=%.3f-%.3f\n", name, med, v[1], v[n]
    }
    { omp = 1000 / $2; tp = 1000 / $3;
      printf "pair=%s native-openmp=%.3fms native-pool=%.3fms replicas0=%.3fms replicas1=%.3fms r0/openmp=%.3f r0/pool=%.3f r1/pool=%.3f\n", $1, omp, tp, $4, $5, $4 / omp, $4 / tp, $5 / tp;
      a = a " " $4 / omp; b = b " " $4 / tp; c = c " " $5 / tp }
    END { stats("replicas0/native-openmp", substr(a, 2)); stats("replicas0/native-pool", substr(b, 2)); stats("replicas1/native-pool", substr(c, 2)) }'
}

for part in "${parts[@]}"; do
  case "$part" in
  pin)
    : "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp tree built with cmake into build/}"
    lib="$LLAMA_CPP_DIR/build/bin"
    [ -e "$lib/libllama.so" ] || { echo "pin: no $lib/libllama.so: build the tree with cmake first" >&2; exit 2; }
    commit="${LLAMA_CPP_COMMIT:-$(cat "$LLAMA_CPP_DIR/COMMIT" 2>/dev/null || git -C "$LLAMA_CPP_DIR" rev-parse HEAD 2>/dev/null || echo unknown)}"
    record llama-cpp-commit echo "$commit"
    record llama-cpp-cmake grep -E '^(CMAKE_BUILD_TYPE|GGML_NATIVE|GGML_OPENMP|GGML_AMX_[A-Z0-9]*|GGML_CPU_REPACK|GGML_LLAMAFILE):' "$LLAMA_CPP_DIR/build/CMakeCache.txt"
    newer="$work/decode_bench_newer"
    gcc -O2 -o "$newer" benchmarks/native/decode_bench.c -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" \
      -L"$lib" -lllama -lggml -lggml-cpu -lggml-base -Wl,-rpath,"$lib"
    export newer
    interleave "$PAIRS" \
      native-pinned "\"\$pinned\" \"\$work/bench.gguf\" $THREADS 1 4 16" \
      native-newer "\"\$newer\" \"\$work/bench.gguf\" $THREADS 1 4 16"
    record pairs-pinned-vs-newer summarize_batches native-pinned native-newer ;;
  overhead)
    serve="benchmarks/serve-llmux.sh ./bin/llmux --model $work/bench.gguf --model-name bench --parallel 16 --ctx-size 16384 --threads $THREADS --replicas"
    bench="./bin/llmux bench --base-url http://127.0.0.1:$PORT --model bench --seed 1 --dataset-name random --random-input-len 32 --random-output-len 64 --ignore-eos --num-prompts $PROMPTS --max-concurrency 1 --warmup 2"
    for pair in $(seq 1 "$PAIRS"); do
      record "overhead-native-openmp-$pair" "$pinned" "$work/bench.gguf" "$THREADS" 1
      record "overhead-native-pool-$pair" "$pool" "$work/bench.gguf" "$THREADS" 1
      $serve 0
      record "overhead-replicas0-$pair" $bench --label replicas-0 --output "$RECORD_DIR/overhead-replicas0-$pair.json"
      $serve 1
      record "overhead-replicas1-$pair" $bench --label replicas-1 --output "$RECORD_DIR/overhead-replicas1-$pair.json"
    done
    kill "$(cat "$work/pid")" 2>/dev/null || true
    rm -f "$work/pid"
    record pairs-overhead overhead_ratios
    record pairs-overhead-replicas-output_throughput ./bin/llmux bench pairs --metric output_throughput --a "$RECORD_DIR/overhead-replicas1-[0-9]*.json" --b "$RECORD_DIR/overhead-replicas0-[0-9]*.json" ;;
  *) echo "pin: unknown part $part" >&2; exit 2 ;;
  esac
done
