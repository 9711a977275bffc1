#!/usr/bin/env bash
# Runs llmux's Go benchmarks (engine, scheduler, HTTP) in one go and keeps
# their raw output under benchmarks/results/DATE/. Nothing else should run
# on the machine meanwhile: llama.cpp's threads spin, so any other load
# skews the numbers. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(make -s env)"
out="benchmarks/results/$(date -u +%Y-%m-%d)"
mkdir -p "$out"
run() {
  local name=$1; shift
  echo "== $name" >&2
  go test -run '^$' -timeout 60m "$@" 2>&1 | grep -E '^(Benchmark|goos|goarch|pkg|cpu|ok|FAIL)|ns/op' | tee "$out/$name.txt"
}
run engine-decode -bench Decode -benchtime 2x ./engine/ -args -engine.models bench,stories
# The same decode measurement on llama.cpp built natively from the same
# sources (OpenMP, as its cmake build; and ggml's thread pool), right after.
echo "== engine-vs-native" >&2
make -s build >/dev/null
model="$(mktemp -d)/bench.gguf"
./bin/llmux models synth --preset bench "$model" >/dev/null 2>&1
for v in 1 0; do
  bin=$(OPENMP=$v benchmarks/native/build.sh)
  echo "native OPENMP=$v"
  "$bin" "$model" 2 1 4 16 64 2>/dev/null
done | tee "$out/engine-vs-native.txt"
rm -rf "$(dirname "$model")"
run scheduler-streams -bench Streams -benchtime 1x ./scheduler/ -args -sched.streams 1,4,16,64
run scheduler-ttft -bench 'Interference|PrefixCache' -benchtime 1x ./scheduler/
run server-sse -bench SSEOverhead -benchtime 1x ./server/
echo "results in $out" >&2
