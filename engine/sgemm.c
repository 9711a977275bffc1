// Batch-size choice of ggml's CPU matrix-multiplication kernel.
//
// ggml's CPU mul_mat first offers every product to llamafile's tinyBLAS
// (llamafile_sgemm) and falls back to its own vec-dot kernels when tinyBLAS
// declines. Which one runs is fixed when ggml is compiled, yet on the
// quantized weights measured here tinyBLAS is the slower of the two for a
// few rows and the faster for many (benchmarks/README.md). The engine's
// link wraps llamafile_sgemm (-Wl,--wrap, in cgo.go) so that products of
// Q8_0 or Q4_0 weights with 2 to llmux_gemm_min_rows-1 rows decline
// tinyBLAS and take ggml's own kernels; one row, many rows and every other
// weight type keep ggml's choice. The pinned sources are not modified.
// Every thread of a product sees the same row count, so all of them take
// the same path.

#include <stdbool.h>
#include <stdint.h>

#include "ggml.h"

struct ggml_compute_params;

bool __real_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc,
                            int Atype, int Btype, int Ctype);

// llmux_gemm_min_rows: products of Q8_0 or Q4_0 weights with more than one
// and fewer than this many rows (tokens) use ggml's own kernels; 0 or 1
// leaves ggml's choice everywhere. Set before any decode (engine.SetGemmMinRows).
int llmux_gemm_min_rows = 7;

// llmux_gemm_declined counts the products sent to ggml's own kernels (each
// thread of a product counts once).
uint64_t llmux_gemm_declined = 0;

bool __wrap_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc,
                            int Atype, int Btype, int Ctype) {
    if (n > 1 && n < llmux_gemm_min_rows && (Atype == GGML_TYPE_Q8_0 || Atype == GGML_TYPE_Q4_0)) {
        __atomic_fetch_add(&llmux_gemm_declined, 1, __ATOMIC_RELAXED);
        return false;
    }
    return __real_llamafile_sgemm(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}
