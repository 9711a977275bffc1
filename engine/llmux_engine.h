// Helpers that llmux's engine needs around llama.h: C++ exceptions must not
// cross into Go, and a sampled token must be one the sampler chain allowed.
#ifndef LLMUX_ENGINE_H
#define LLMUX_ENGINE_H
#include <stdbool.h>
#include <stdint.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

void llmux_log_install(void);

// llmux_sampler_new builds one sequence's sampler chain. On error it returns
// NULL and writes a message into err (err_len bytes).
struct llmux_sampler_params {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
    uint32_t seed;
    int32_t penalty_last_n;
    float penalty_repeat;
    float penalty_freq;
    float penalty_present;
    const llama_logit_bias * logit_bias;
    int32_t n_logit_bias;
    const char * grammar; // GBNF, or NULL
};
// A sampler is a chain of filters (bias, penalties, grammar, top-k/p, min-p,
// temperature) and a final selector (greedy or seeded dist), kept apart so
// that an empty candidate set is caught before the selector, which aborts
// the process on one.
struct llmux_sampler;
struct llmux_sampler * llmux_sampler_new(const struct llama_model * model, const struct llmux_sampler_params * p, char * err, int err_len);
void llmux_sampler_free(struct llmux_sampler * s);

// llmux_sample applies the chain to the logits of output row idx, picks a
// token, and accepts it into the chain's state. It returns 0 on success,
// 1 when the chain left no allowed token, 2 on an internal error (message in
// err). buf must hold n_vocab entries.
int llmux_sample(struct llmux_sampler * s, struct llama_context * ctx, int32_t idx, llama_token_data * buf, int32_t n_vocab, llama_token * out, char * err, int err_len);

// llmux_accept feeds a token into a chain without sampling it (for example
// tokens that were forced). Returns 0, or 2 with a message in err.
int llmux_accept(struct llmux_sampler * s, llama_token tok, char * err, int err_len);

// llmux_threadpool_attach gives a context its own ggml CPU thread pool of
// n_threads, kept for the context's life: without one, ggml starts and
// joins its worker threads on every graph it computes (every decode step).
// It returns the pool (NULL when none could be made: the context then
// keeps ggml's per-graph threads); free it with llmux_threadpool_free after
// llama_free.
struct ggml_threadpool * llmux_threadpool_attach(struct llama_context * ctx, int n_threads);
void llmux_threadpool_free(struct ggml_threadpool * tp);
// llmux_threadpool_park makes the pool's idle workers sleep instead of
// polling; the pool's next graph wakes them.
void llmux_threadpool_park(struct ggml_threadpool * tp);

// llmux_decoder runs a context's decodes on one thread of its own, so the
// ggml pool's calling thread stays the same thread from step to step and
// the caller's thread is free while a step computes. llmux_decoder_submit
// hands it one llama_decode(ctx, batch) and returns at once; when the
// decode ends the decoder writes one byte to notify_fd and
// llmux_decoder_result returns llama_decode's value. One decode at a time.
struct llmux_decoder;
struct llmux_decoder * llmux_decoder_new(int notify_fd);
void llmux_decoder_submit(struct llmux_decoder * d, struct llama_context * ctx, struct llama_batch batch);
int32_t llmux_decoder_result(struct llmux_decoder * d);
void llmux_decoder_free(struct llmux_decoder * d);

// The calls below wrap llama.cpp's of the same name, which take request
// data and may throw (a vocabulary without byte-fallback tokens throws
// std::out_of_range on text it cannot map): an exception becomes the
// return value INT32_MIN with its message in err, instead of an abort.
int32_t llmux_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special, char * err, int err_len);
int32_t llmux_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length, char * err, int err_len);
int32_t llmux_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg, bool add_ass, char * buf, int32_t length, char * err, int err_len);

#ifdef __cplusplus
}
#endif
#endif
