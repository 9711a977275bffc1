// decode_bench measures raw decode throughput of a llama.cpp built natively
// (no Go, no cgo) from the same sources as llmux's engine, the way
// llama-batched-bench and engine.BenchmarkDecode do: B sequences, each with
// a 128-token prompt (prefilled, not timed), then 128 decode steps of B
// tokens each (timed). One KV stream per sequence, flash attention auto,
// 2048-token batches. Each context gets a ggml CPU thread pool of THREADS
// for its life, with the same polling as llmux's engine, so a build with
// ggml's own threads (OPENMP=0) does not start and join a worker thread on
// every decode step (an OpenMP build keeps its team either way).
//
//	decode_bench MODEL THREADS BATCH...
//
// prints one line per batch size: "batch=B tok/s=X".
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ggml-cpu.h"
#include "llama.h"

enum { PROMPT = 128, GEN = 128 };

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
	(void)user;
	if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int add(struct llama_batch *b, llama_token tok, llama_pos pos, llama_seq_id seq, int logits) {
	int i = b->n_tokens++;
	b->token[i] = tok;
	b->pos[i] = pos;
	b->n_seq_id[i] = 1;
	b->seq_id[i][0] = seq;
	b->logits[i] = (int8_t)logits;
	return i;
}

static double run(struct llama_model *model, int threads, int batch) {
	struct llama_context_params cp = llama_context_default_params();
	cp.n_ctx = batch * (PROMPT + GEN + 1);
	cp.n_batch = 2048;
	cp.n_ubatch = 512;
	cp.n_seq_max = batch;
	cp.n_threads = threads;
	cp.n_threads_batch = threads;
	cp.kv_unified = false;
	cp.no_perf = true;
	struct llama_context *ctx = llama_init_from_model(model, cp);
	if (!ctx) {
		fprintf(stderr, "context for batch %d failed\n", batch);
		exit(1);
	}
	struct ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
	tpp.poll = 1;
	struct ggml_threadpool *tp = ggml_threadpool_new(&tpp);
	if (!tp) {
		fprintf(stderr, "thread pool for batch %d failed\n", batch);
		exit(1);
	}
	llama_attach_threadpool(ctx, tp, tp);
	struct llama_batch b = llama_batch_init(2048, 0, 1);
	for (int s = 0; s < batch; s++) {
		for (int i = 0; i < PROMPT; i++) {
			if (b.n_tokens == 2048) {
				if (llama_decode(ctx, b)) exit(2);
				b.n_tokens = 0;
			}
			add(&b, 3 + (s * 7 + i) % 200, i, s, i == PROMPT - 1);
		}
	}
	if (llama_decode(ctx, b)) exit(2);
	double t0 = now();
	for (int step = 0; step < GEN; step++) {
		b.n_tokens = 0;
		for (int s = 0; s < batch; s++) add(&b, 3 + (s + step) % 200, PROMPT + step, s, 1);
		if (llama_decode(ctx, b)) exit(3);
	}
	double tps = (double)batch * GEN / (now() - t0);
	llama_batch_free(b);
	llama_free(ctx);
	ggml_threadpool_free(tp);
	return tps;
}

int main(int argc, char **argv) {
	if (argc < 4) {
		fprintf(stderr, "usage: decode_bench MODEL THREADS BATCH...\n");
		return 1;
	}
	llama_log_set(quiet, NULL);
	llama_backend_init();
	struct llama_model_params mp = llama_model_default_params();
	struct llama_model *model = llama_model_load_from_file(argv[1], mp);
	if (!model) {
		fprintf(stderr, "cannot load %s\n", argv[1]);
		return 1;
	}
	int threads = atoi(argv[2]);
	for (int i = 3; i < argc; i++) {
		int batch = atoi(argv[i]);
		printf("batch=%d tok/s=%.1f\n", batch, run(model, threads, batch));
		fflush(stdout);
	}
	llama_model_free(model);
	return 0;
}
