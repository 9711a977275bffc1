#!/usr/bin/env bash
# build.sh — builds decode_bench (decode_bench.c) natively: the C and C++
# sources of llama.cpp and ggml that llmux's engine links through cgo, taken
# from the pinned ollama module in the Go module cache, compiled by gcc/g++
# with the project's CPU flags (see the Makefile) and, by default, with
# OpenMP as a cmake build of llama.cpp has it. No Go is involved in the
# result. Nothing is copied into this repository.
#
#   benchmarks/native/build.sh            # OpenMP (as llama.cpp's cmake default)
#   OPENMP=0 benchmarks/native/build.sh   # ggml's own thread pool (as the cgo build)
#
# Prints the path of the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(make -s env)"
OPENMP="${OPENMP:-1}"
out="$HOME/.cache/llmux/native/$([ "$OPENMP" = 1 ] && echo openmp || echo threadpool)"
mkdir -p "$out/obj"
extra=""
[ "$OPENMP" = 1 ] && extra="-fopenmp -DGGML_USE_OPENMP"
mk="$out/Makefile"
: >"$mk"
objs=()
i=0
for p in ml/backend/ggml/ggml/src ml/backend/ggml/ggml/src/ggml-cpu ml/backend/ggml/ggml/src/ggml-cpu/arch/x86 \
  ml/backend/ggml/ggml/src/ggml-cpu/llamafile llama/llama.cpp/src llama/llama.cpp/src/models; do
  i=$((i + 1))
  IFS='|' read -r dir cpp cfl cxx cfiles cxxfiles < <(go list -f '{{.Dir}}|{{join .CgoCPPFLAGS " "}}|{{join .CgoCFLAGS " "}}|{{join .CgoCXXFLAGS " "}}|{{join .CFiles " "}}|{{join .CXXFiles " "}}' "github.com/ollama/ollama/$p")
  for f in $cfiles; do
    o="$out/obj/$i-$f.o"; objs+=("$o")
    printf '%s: %s\n\tgcc -c -o $@ $< %s %s %s %s %s\n' "$o" "$dir/$f" "$CGO_CPPFLAGS -I$dir" "$cpp" "$CGO_CFLAGS" "$cfl" "$extra" >>"$mk"
  done
  for f in $cxxfiles; do
    o="$out/obj/$i-$f.o"; objs+=("$o")
    printf '%s: %s\n\tg++ -c -o $@ $< %s %s %s %s %s\n' "$o" "$dir/$f" "$CGO_CPPFLAGS -I$dir" "$cpp" "$CGO_CXXFLAGS" "$cxx" "$extra" >>"$mk"
  done
done
inc="-I$(go list -f '{{.Dir}}' github.com/ollama/ollama/llama)/llama.cpp/include -I$(go list -f '{{.Dir}}' github.com/ollama/ollama/ml/backend/ggml/ggml/src)/../include"
printf '%s: %s %s\n\tg++ -o $@ %s %s %s %s -lpthread -lm -ldl\n' "$out/decode_bench" "benchmarks/native/decode_bench.c" "${objs[*]}" \
  "-x c benchmarks/native/decode_bench.c -x none $inc $CGO_CFLAGS" "${objs[*]}" "$extra" "" >>"$mk"
make -s -f "$mk" -j"$(nproc)" "$out/decode_bench" >&2
echo "$out/decode_bench"
