// Package engine is the thin cgo layer over llama.cpp. It is the only package
// in llmux that uses cgo. It links the llama.cpp and ggml code compiled by
// ollama's bindings (github.com/ollama/ollama/llama, pinned to v0.24.0) and
// calls llama.h directly, so each C handle has exactly one Go owner with an
// explicit Close. All policy (what to batch, when to evict, how to stream)
// lives above this package.
package engine

/*
#cgo CFLAGS: -std=c11
#cgo CXXFLAGS: -std=c++17
#include <stdlib.h>
#include "llama.h"
#include "llmux_engine.h"
*/
import "C"

import (
	"sync"

	ollamallama "github.com/ollama/ollama/llama"
)

var backendOnce sync.Once

// initBackend loads ggml's backends (the CPU one is linked in; GPU ones are
// found at run time through OLLAMA_LIBRARY_PATH) and routes llama.cpp's log
// through slog. It is called by LoadModel; calling it again is a no-op.
func initBackend() {
	backendOnce.Do(func() {
		ollamallama.BackendInit()
		C.llmux_log_install()
	})
}
