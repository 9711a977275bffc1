#!/usr/bin/env bash
# Runs llmux's Go benchmarks (engine, scheduler, HTTP) in one go and records
# their output, verbatim, under benchmarks/results/DATE-COMMIT/ (see
# record.sh). Nothing else should run on the machine meanwhile: llama.cpp's
# threads spin, so any other load skews the numbers. About 15 minutes on 2
# cores.
set -euo pipefail
source "$(dirname "$0")/record.sh"
cd "$(dirname "$0")/.."
eval "$(make -s env)"
make -s build >/dev/null
record_init
gobench() { # name, go test arguments
  local name=$1
  shift
  echo "== $name" >&2
  record "$name" go test -run '^$' -timeout 60m "$@"
}
gobench engine-decode -bench Decode -benchtime 2x ./engine/ -args -engine.models bench,stories
# The same decode measurement on llama.cpp built natively from the same
# sources (OpenMP, as its cmake build; and ggml's thread pool), right after.
echo "== engine-vs-native" >&2
model="$(mktemp -d)/bench.gguf"
./bin/llmux models synth --preset bench "$model" >/dev/null 2>&1
openmp=$(OPENMP=1 benchmarks/native/build.sh)
threadpool=$(OPENMP=0 benchmarks/native/build.sh)
record native-decode-openmp "$openmp" "$model" 2 1 4 16 64
record native-decode-threadpool "$threadpool" "$model" 2 1 4 16 64
rm -rf "$(dirname "$model")"
gobench scheduler-streams -bench Streams -benchtime 1x ./scheduler/ -args -sched.streams 1,4,16,64
gobench scheduler-ttft -bench 'Interference|PrefixCache' -benchtime 1x ./scheduler/
gobench server-sse -bench SSEOverhead -benchtime 1x ./server/
echo "results in $RECORD_DIR" >&2
