#!/usr/bin/env bash
# setup.sh — installs what llmux needs to build, idempotently.
#
# It installs the two Debian header packages that ollama's cgo bindings need,
# places miniaudio.h (shipped by a pinned Go module) where the cgo build finds
# it, and links the pinned llama.cpp/ggml public headers into one fixed include
# folder so llmux's own cgo code can include llama.h. With --node it also
# installs the OpenAI Node SDK used by the conformance test.
#
# Nothing third-party is copied into the repository: everything lands under
# $LLMUX_DEPS (default ~/.cache/llmux/deps) or in node_modules (ignored).
set -euo pipefail

OLLAMA_VERSION=v0.24.0
MALGO_VERSION=v0.11.24
DEPS="${LLMUX_DEPS:-$HOME/.cache/llmux/deps}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
want_node=0
for a in "$@"; do
  case "$a" in
    --node) want_node=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Debian packages (headers for llama.cpp's common and mtmd code).
missing=()
for p in nlohmann-json3-dev libstb-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v gcc >/dev/null || missing+=(gcc)
command -v g++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Go modules, pinned.
cd "$ROOT"
modcache="$(go env GOMODCACHE)"
ollama_dir="$modcache/github.com/ollama/ollama@$OLLAMA_VERSION"
malgo_dir="$modcache/github.com/gen2brain/malgo@$MALGO_VERSION"
[ -d "$ollama_dir" ] || { say "downloading ollama $OLLAMA_VERSION"; go mod download "github.com/ollama/ollama@$OLLAMA_VERSION"; }
[ -f "$malgo_dir/miniaudio.h" ] || { say "downloading malgo $MALGO_VERSION (for miniaudio.h)"; go mod download "github.com/gen2brain/malgo@$MALGO_VERSION"; }

# 3. The include folder.
inc="$DEPS/include"
mkdir -p "$inc/miniaudio"
if ! cmp -s "$malgo_dir/miniaudio.h" "$inc/miniaudio/miniaudio.h"; then
  say "placing miniaudio.h in $inc/miniaudio"
  install -m 0644 "$malgo_dir/miniaudio.h" "$inc/miniaudio/miniaudio.h"
fi
link() { [ "$(readlink "$2" 2>/dev/null)" = "$1" ] || ln -sfn "$1" "$2"; }
# llama.h and the ggml headers it includes, each linked by name, so that one
# -I flag serves both ollama's packages and llmux's engine.
for h in "$ollama_dir"/llama/llama.cpp/include/*.h "$ollama_dir"/ml/backend/ggml/ggml/include/*.h; do
  link "$h" "$inc/$(basename "$h")"
done

# 4. Node SDK for the OpenAI conformance test.
if ((want_node)); then
  if [ ! -f "$ROOT/test/conformance/node_modules/openai/package.json" ] || [ ! -f "$ROOT/test/conformance/node_modules/@anthropic-ai/sdk/package.json" ]; then
    command -v npm >/dev/null || { say "npm is missing; installing nodejs and npm"; SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo; $SUDO apt-get install -y -qq nodejs npm >/dev/null; }
    say "installing the openai and @anthropic-ai/sdk npm packages"
    (cd "$ROOT/test/conformance" && npm ci --no-audit --no-fund --silent)
  fi
fi
say "ok ($inc)"
