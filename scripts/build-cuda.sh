#!/usr/bin/env bash
# build-cuda.sh — builds ggml's CUDA backend from the pinned ollama module's
# sources and installs it where the llmux binary's backend loader finds it.
#
#   scripts/build-cuda.sh [--prefix DIR] [--arch LIST] [--preset NAME]
#                         [--src DIR] [--llmux BIN] [--jobs N]
#   scripts/build-cuda.sh --stage DIR
#
# Layout it produces (the loader, ml/backend/ggml/ggml/src/ggml.go of
# ollama v0.24.0, looks in ../lib/ollama beside the executable and skips
# OLLAMA_LIBRARY_PATH entries outside a lib/ollama path; it does not look
# into subfolders):
#
#   PREFIX/bin/llmux                      the llmux binary (--llmux, default bin/llmux)
#   PREFIX/lib/ollama/libggml-cuda.so     the CUDA backend (this build)
#   PREFIX/lib/ollama/libggml-base.so*    ggml's base library, which the backend links
#   PREFIX/lib/ollama/libcublas*, libcudart*   the CUDA runtime it needs, from the toolkit
#
# Only the CUDA backend is installed: the CPU backend is linked into llmux.
#
# Options (each also from the environment variable in brackets):
#   --prefix DIR   install prefix [PREFIX]; default dist/cuda
#   --arch LIST    CMAKE_CUDA_ARCHITECTURES [CUDA_ARCH]; default 90 (H100/H200).
#                  One architecture keeps the build to minutes; the presets'
#                  full lists take much longer.
#   --preset NAME  "CUDA 12" or "CUDA 13" [CUDA_PRESET]; default from nvcc's version
#   --src DIR      the ollama v0.24.0 source tree [OLLAMA_SRC]; default: the Go
#                  module cache (needs go), or a tree made by --stage
#   --llmux BIN    the llmux binary to install [LLMUX_BIN]; default bin/llmux.
#                  Build it with `make build` (LLMUX_CPU=portable for a binary
#                  meant for another machine) where Go is installed.
#   --jobs N       parallel compile jobs [JOBS]; default nproc
#   --stage DIR    copy just what the CUDA build needs (CMakeLists.txt,
#                  CMakePresets.json, ml/backend/ggml/ggml; ~9 MB) from the
#                  module cache into DIR, for a machine without Go, and exit.
#
# Build dir: PREFIX/../build-cuda (kept, so a second run is incremental).
set -euo pipefail

OLLAMA_VERSION=v0.24.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${PREFIX:-$ROOT/dist/cuda}"
arch="${CUDA_ARCH:-90}"
preset="${CUDA_PRESET:-}"
src="${OLLAMA_SRC:-}"
llmux_bin="${LLMUX_BIN:-$ROOT/bin/llmux}"
jobs="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
stage=""

die() { printf 'build-cuda: %s\n' "$*" >&2; exit 1; }
say() { printf 'build-cuda: %s\n' "$*" >&2; }

while (($#)); do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
    --arch) arch="${2:?--arch needs a value}"; shift 2 ;;
    --preset) preset="${2:?--preset needs a value}"; shift 2 ;;
    --src) src="${2:?--src needs a value}"; shift 2 ;;
    --llmux) llmux_bin="${2:?--llmux needs a value}"; shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a value}"; shift 2 ;;
    --stage) stage="${2:?--stage needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

# The pinned source tree: --src, or the Go module cache.
find_src() {
  if [ -n "$src" ]; then
    [ -f "$src/CMakePresets.json" ] && [ -d "$src/ml/backend/ggml/ggml/src/ggml-cuda" ] ||
      die "$src is not an ollama $OLLAMA_VERSION tree (no CMakePresets.json or ml/backend/ggml/ggml/src/ggml-cuda)"
    return
  fi
  command -v go >/dev/null ||
    die "no --src and no go to find the ollama module; on a machine with Go run: scripts/build-cuda.sh --stage DIR, then carry DIR and pass --src DIR"
  src="$(go env GOMODCACHE)/github.com/ollama/ollama@$OLLAMA_VERSION"
  [ -d "$src" ] || (cd "$ROOT" && go mod download "github.com/ollama/ollama@$OLLAMA_VERSION")
  [ -d "$src" ] || die "ollama $OLLAMA_VERSION not found at $src"
}

if [ -n "$stage" ]; then
  find_src
  mkdir -p "$stage/ml/backend/ggml"
  cp "$src/CMakeLists.txt" "$src/CMakePresets.json" "$stage/"
  rm -rf "$stage/ml/backend/ggml/ggml"
  cp -R "$src/ml/backend/ggml/ggml" "$stage/ml/backend/ggml/"
  chmod -R u+w "$stage"
  say "staged the CUDA build sources of ollama $OLLAMA_VERSION in $stage ($(du -sh "$stage" | cut -f1))"
  exit 0
fi

# Fail early, before any work, on what is missing.
command -v cmake >/dev/null || die "cmake not found: install cmake 3.21 or newer"
cmake_version="$(cmake --version | sed -n 's/^cmake version \([0-9]*\.[0-9]*\).*/\1/p')"
[ "$(printf '%s\n3.21\n' "$cmake_version" | sort -V | head -1)" = 3.21 ] ||
  die "cmake $cmake_version is too old: the presets need 3.21 or newer"
nvcc="$(command -v nvcc || true)"
[ -n "$nvcc" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc=/usr/local/cuda/bin/nvcc
[ -n "$nvcc" ] || die "nvcc not found: install the CUDA toolkit (12 or 13) and put its bin folder on PATH"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ compiler (g++) found"
cuda_major="$("$nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
if [ -z "$preset" ]; then
  case "$cuda_major" in
    12) preset="CUDA 12" ;;
    13) preset="CUDA 13" ;;
    *) die "nvcc reports CUDA '$cuda_major': this script knows the \"CUDA 12\" and \"CUDA 13\" presets (pass --preset to choose)" ;;
  esac
fi
find_src

build="$(dirname "$prefix")/build-cuda"
mkdir -p "$prefix/bin" "$prefix/lib/ollama" "$build"
prefix="$(cd "$prefix" && pwd)"
build="$(cd "$build" && pwd)"
say "ollama $OLLAMA_VERSION sources: $src"
say "preset \"$preset\", nvcc $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA architectures $arch, $jobs jobs"

# Configure with the module's own preset, out of the (read-only) source
# tree. OLLAMA_RUNNER_DIR is emptied so the backend lands in lib/ollama
# itself, where the loader looks; $ORIGIN lets it find libggml-base and
# the CUDA runtime beside it.
(cd "$src" && cmake --preset "$preset" -B "$build" \
  -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DOLLAMA_RUNNER_DIR= \
  -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_INSTALL_RPATH='$ORIGIN' \
  -DGGML_CCACHE=OFF)
cmake --build "$build" --target ggml-cuda --parallel "$jobs"
cmake --install "$build" --component CUDA --strip
# The backend links libggml-base (the CPU component's): copy it, links kept.
cp -P "$build"/lib/ollama/libggml-base.so* "$prefix/lib/ollama/"

if [ -x "$llmux_bin" ]; then
  install -m 0755 "$llmux_bin" "$prefix/bin/llmux"
  say "installed $llmux_bin as $prefix/bin/llmux"
else
  say "no llmux binary at $llmux_bin: build one with 'make build' (LLMUX_CPU=portable for another machine) and copy it to $prefix/bin/llmux"
fi
[ -f "$prefix/lib/ollama/libggml-cuda.so" ] || die "the install did not produce $prefix/lib/ollama/libggml-cuda.so"
say "done: $(cd "$prefix/lib/ollama" && ls | tr '\n' ' ')"
say "check with: $prefix/bin/llmux version   (it lists the ggml backends that load)"
