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
#cgo LDFLAGS: -Wl,--wrap=llamafile_sgemm
#include <stdlib.h>
#include "llama.h"
#include "llmux_engine.h"

#include <stdint.h>
extern int llmux_gemm_min_rows;
extern uint64_t llmux_gemm_declined;
static uint64_t llmux_gemm_declined_load(void) { return __atomic_load_n(&llmux_gemm_declined, __ATOMIC_RELAXED); }
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

// SetGemmMinRows sets the batch sizes for which the CPU's matrix products
// of Q8_0 and Q4_0 weights use ggml's own kernels instead of llamafile's
// tinyBLAS: more than one row and fewer than n (default 7, measured on this
// project's bench model: benchmarks/README.md). n <= 1 leaves ggml's
// compiled choice everywhere. It applies to the whole process; call it
// before the first Decode (it is read by ggml's threads during one). It
// returns the previous setting.
func SetGemmMinRows(n int) int {
	prev := int(C.llmux_gemm_min_rows)
	C.llmux_gemm_min_rows = C.int(n)
	return prev
}

// gemmMinRows is the current bound (SetGemmMinRows; sgemm.c holds the default).
func gemmMinRows() int { return int(C.llmux_gemm_min_rows) }

// gemmDeclined counts the matrix products (per thread) sent to ggml's own
// kernels by the row-count rule.
func gemmDeclined() uint64 { return uint64(C.llmux_gemm_declined_load()) }
