#include "llmux_engine.h"
#include "ggml-cpu.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <climits>
#include <cstdint>
#include <exception>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <cerrno>

extern "C" void llmuxGoLog(int level, char * text);

static void llmux_log(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    llmuxGoLog((int) level, (char *) text);
}

extern "C" void llmux_log_install(void) {
    llama_log_set(llmux_log, nullptr);
}

static void set_err(char * err, int err_len, const char * msg) {
    if (err && err_len > 0) {
        std::snprintf(err, (size_t) err_len, "%s", msg);
    }
}

struct llmux_sampler {
    struct llama_sampler * filters;
    struct llama_sampler * select;
};

extern "C" void llmux_sampler_free(struct llmux_sampler * s) {
    if (!s) return;
    if (s->filters) llama_sampler_free(s->filters);
    if (s->select) llama_sampler_free(s->select);
    delete s;
}

extern "C" struct llmux_sampler * llmux_sampler_new(const struct llama_model * model, const struct llmux_sampler_params * p, char * err, int err_len) {
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    struct llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    llmux_sampler * s = new llmux_sampler{llama_sampler_chain_init(cp), nullptr};
    struct llama_sampler * chain = s->filters;
    try {
        if (p->n_logit_bias > 0) {
            llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(llama_vocab_n_tokens(vocab), p->n_logit_bias, p->logit_bias));
        }
        if (p->penalty_repeat != 1.0f || p->penalty_freq != 0.0f || p->penalty_present != 0.0f) {
            llama_sampler_chain_add(chain, llama_sampler_init_penalties(p->penalty_last_n, p->penalty_repeat, p->penalty_freq, p->penalty_present));
        }
        if (p->grammar && p->grammar[0]) {
            struct llama_sampler * g = llama_sampler_init_grammar(vocab, p->grammar, "root");
            if (!g) {
                set_err(err, err_len, "grammar could not be parsed");
                llmux_sampler_free(s);
                return nullptr;
            }
            llama_sampler_chain_add(chain, g);
        }
        if (p->temperature <= 0.0f) {
            s->select = llama_sampler_init_greedy();
        } else {
            if (p->top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(p->top_k));
            if (p->top_p > 0.0f && p->top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(p->top_p, 1));
            if (p->min_p > 0.0f) llama_sampler_chain_add(chain, llama_sampler_init_min_p(p->min_p, 1));
            llama_sampler_chain_add(chain, llama_sampler_init_temp(p->temperature));
            s->select = llama_sampler_init_dist(p->seed);
        }
    } catch (const std::exception & e) {
        set_err(err, err_len, e.what());
        llmux_sampler_free(s);
        return nullptr;
    }
    return s;
}

extern "C" int llmux_sample(struct llmux_sampler * s, struct llama_context * ctx, int32_t idx, llama_token_data * buf, int32_t n_vocab, llama_token * out, char * err, int err_len) {
    try {
        const float * logits = llama_get_logits_ith(ctx, idx);
        if (!logits) {
            set_err(err, err_len, "no logits for this batch row");
            return 2;
        }
        for (int32_t i = 0; i < n_vocab; i++) {
            buf[i].id = i;
            buf[i].logit = logits[i];
            buf[i].p = 0.0f;
        }
        llama_token_data_array cur = { buf, (size_t) n_vocab, -1, false };
        llama_sampler_apply(s->filters, &cur);
        bool any = false;
        for (size_t i = 0; i < cur.size; i++) {
            if (!(std::isinf(cur.data[i].logit) && cur.data[i].logit < 0) && !std::isnan(cur.data[i].logit)) {
                any = true;
                break;
            }
        }
        if (!any) {
            return 1;
        }
        llama_sampler_apply(s->select, &cur);
        if (cur.selected < 0 || cur.selected >= (int64_t) cur.size) {
            set_err(err, err_len, "sampler selected no token");
            return 2;
        }
        const llama_token_data & tok = cur.data[cur.selected];
        if (std::isinf(tok.logit) && tok.logit < 0) {
            return 1;
        }
        *out = tok.id;
        llama_sampler_accept(s->filters, tok.id);
        llama_sampler_accept(s->select, tok.id);
        return 0;
    } catch (const std::exception & e) {
        set_err(err, err_len, e.what());
        return 2;
    }
}

extern "C" int llmux_accept(struct llmux_sampler * s, llama_token tok, char * err, int err_len) {
    try {
        llama_sampler_accept(s->filters, tok);
        llama_sampler_accept(s->select, tok);
        return 0;
    } catch (const std::exception & e) {
        set_err(err, err_len, e.what());
        return 2;
    }
}

// guarded runs one llama.cpp call that returns an int32_t; an exception
// becomes INT32_MIN with its message in err.
template <typename F>
static int32_t guarded(char * err, int err_len, F call) {
    try {
        return call();
    } catch (const std::exception & e) {
        set_err(err, err_len, e.what());
        return INT32_MIN;
    }
}

extern "C" int32_t llmux_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special, char * err, int err_len) {
    return guarded(err, err_len, [&] { return llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special); });
}

extern "C" int32_t llmux_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length, char * err, int err_len) {
    return guarded(err, err_len, [&] { return llama_token_to_piece(vocab, token, buf, length, 0, false); });
}

extern "C" int32_t llmux_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg, bool add_ass, char * buf, int32_t length, char * err, int err_len) {
    return guarded(err, err_len, [&] { return llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length); });
}

extern "C" struct ggml_threadpool * llmux_threadpool_attach(struct llama_context * ctx, int n_threads) {
    struct ggml_threadpool_params p = ggml_threadpool_params_default(n_threads);
    // Idle workers spin briefly before they sleep: long enough to catch
    // the next decode step of a busy stream, short enough to leave the
    // cores to the serving goroutines (and to the serving process, across
    // a replica's socket) between steps. ggml's default (50) spins about
    // 50 times longer, which slowed a replica's single stream here; 0
    // (sleep at once) pays a wake-up on every step.
    p.poll = 1;
    struct ggml_threadpool * tp = ggml_threadpool_new(&p);
    if (tp) {
        llama_attach_threadpool(ctx, tp, tp);
    }
    return tp;
}

extern "C" void llmux_threadpool_park(struct ggml_threadpool * tp) {
    // ggml_graph_compute resumes a paused pool when it starts a graph.
    ggml_threadpool_pause(tp);
}

extern "C" void llmux_threadpool_free(struct ggml_threadpool * tp) {
    if (tp) {
        ggml_threadpool_free(tp);
    }
}

struct llmux_decoder {
    std::mutex mu;
    std::condition_variable cv;
    bool pending = false;
    bool quit = false;
    struct llama_context * ctx = nullptr;
    struct llama_batch batch{};
    int32_t rc = 0;
    int fd = -1;
    std::thread th;
};

static void llmux_decoder_loop(struct llmux_decoder * d) {
    for (;;) {
        struct llama_context * ctx;
        struct llama_batch batch;
        {
            std::unique_lock<std::mutex> lk(d->mu);
            d->cv.wait(lk, [d] { return d->pending || d->quit; });
            if (d->quit) {
                return;
            }
            ctx = d->ctx;
            batch = d->batch;
        }
        int32_t rc;
        try {
            rc = llama_decode(ctx, batch);
        } catch (...) {
            rc = INT32_MIN;
        }
        {
            std::lock_guard<std::mutex> lk(d->mu);
            d->rc = rc;
            d->pending = false;
        }
        const char one = 1;
        while (write(d->fd, &one, 1) < 0 && errno == EINTR) {
        }
    }
}

extern "C" struct llmux_decoder * llmux_decoder_new(int notify_fd) {
    auto * d = new llmux_decoder();
    d->fd = notify_fd;
    try {
        d->th = std::thread(llmux_decoder_loop, d);
    } catch (...) {
        delete d;
        return nullptr;
    }
    return d;
}

extern "C" void llmux_decoder_submit(struct llmux_decoder * d, struct llama_context * ctx, struct llama_batch batch) {
    {
        std::lock_guard<std::mutex> lk(d->mu);
        d->ctx = ctx;
        d->batch = batch;
        d->pending = true;
    }
    d->cv.notify_one();
}

extern "C" int32_t llmux_decoder_result(struct llmux_decoder * d) {
    std::lock_guard<std::mutex> lk(d->mu);
    return d->rc;
}

extern "C" void llmux_decoder_free(struct llmux_decoder * d) {
    if (!d) {
        return;
    }
    {
        std::lock_guard<std::mutex> lk(d->mu);
        d->quit = true;
    }
    d->cv.notify_one();
    d->th.join();
    delete d;
}
