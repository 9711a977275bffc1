#!/usr/bin/env bash
# kernels.sh — the engine's choice of CPU mat-mul kernel by batch size
# (engine/sgemm.c): the engine's decode benchmark (BenchmarkDecode: B
# sequences after a 128-token prompt, 128 timed steps of B tokens) with the
# rule as shipped (ggml's own kernels for 2 to 6 rows of Q8_0/Q4_0 weights)
# and with ggml's compiled choice (llamafile's tinyBLAS for every size),
# alternately, on the 86M bench model. Recorded verbatim under
# benchmarks/results/DATE-COMMIT/ (or RECORD_DIR); pairs-kernels.txt holds
# each batch's per-pair tokens/s ratios (rule ÷ compiled choice).
#
#   benchmarks/kernels.sh
#
# Environment: PAIRS (3), BATCHES (1,2,3,4,6,8,16), KV (perseq or unified).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/record.sh
PAIRS="${PAIRS:-3}"
BATCHES="${BATCHES:-1,2,3,4,6,8,16}"
KV="${KV:-perseq}"

eval "$(make -s env)"
record_init
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
go test -c -o "$work/engine.test" ./engine
export work BATCHES KV
run='"$work/engine.test" -test.run "^$" -test.bench "^BenchmarkDecode$" -test.benchtime 1x -engine.models bench -engine.kv "$KV" -engine.batches "$BATCHES"'
interleave "$PAIRS" rule "$run" compiled "$run -engine.gemm-min-rows 0"
record pairs-kernels summarize_batches rule compiled
