package engine

/*
#include <stdlib.h>
#include "llama.h"
#include "llmux_engine.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// ContextOptions configure NewContext. Zero fields take defaults.
type ContextOptions struct {
	// Cells is the KV cache size in tokens, shared by all sequences
	// (default: the model's training context).
	Cells int
	// Sequences is the number of parallel sequences (default 1).
	Sequences int
	// Batch is the most tokens one Decode may carry (default 512).
	Batch int
	// MicroBatch is the physical batch size (default min(Batch, 512)).
	MicroBatch int
	// Threads for decoding (default: the number of CPUs).
	Threads int
	// FlashAttention: "auto" (default), "on" or "off".
	FlashAttention string
	// KVType is the KV cache element type: "f16" (default), "q8_0", "q4_0".
	KVType string
	// Embeddings makes Decode produce mean-pooled sequence embeddings
	// (Embedding(seq)); such a context is for embedding, not generation.
	Embeddings bool
	// PerSequenceKV gives every sequence its own KV stream instead of one
	// shared buffer. Attention then scans only the sequence's own cells,
	// but a prefix can only be shared by copying a whole stream.
	PerSequenceKV bool
	// LoRA lets SetAdapters switch adapters on this context. The pinned
	// llama.cpp reuses a decode graph without noticing an adapter change,
	// so such contexts run with graph reuse off (a small cost per step).
	LoRA bool
}

// Context is a llama.cpp context: a KV cache with Sequences parallel
// sequences over one model. It is not safe for concurrent use: one goroutine
// (a scheduler) owns it.
type Context struct {
	c       *C.struct_llama_context
	pool    *C.struct_ggml_threadpool // the context's CPU threads (nil: ggml's per-graph ones)
	mem     C.llama_memory_t
	model   *Model
	opts    ContextOptions
	nVocab  int
	adapter []AdapterRef
	dec     *decoder
}

// decoder is a context's decode thread (llmux_decoder) and the pipe it
// signals the end of a decode on. The read end is in Go's poller, so the
// goroutine waiting for a step is parked, its P idle, rather than held in
// a cgo call for the whole step: a P held in a cgo call is retaken by the
// runtime's monitor thread, which then polls every 20µs for a while after
// every step, each time taking a core from llama.cpp's compute threads. The
// pool's calling thread also stays one thread instead of whichever Go
// thread the goroutine last ran on.
type decoder struct {
	d    *C.struct_llmux_decoder
	r    *os.File
	w    int
	done [1]byte
}

func newDecoder() (*decoder, error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("decode thread: pipe: %w", err)
	}
	fail := func(err error) (*decoder, error) {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return nil, err
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		return fail(fmt.Errorf("decode thread: pipe: %w", err))
	}
	d := C.llmux_decoder_new(C.int(fds[1]))
	if d == nil {
		return fail(errors.New("decode thread: could not start it"))
	}
	return &decoder{d: d, r: os.NewFile(uintptr(fds[0]), "decode-done"), w: fds[1]}, nil
}

func (d *decoder) decode(c *C.struct_llama_context, b C.struct_llama_batch) (C.int32_t, error) {
	C.llmux_decoder_submit(d.d, c, b)
	for {
		n, err := d.r.Read(d.done[:])
		if n == 1 {
			return C.llmux_decoder_result(d.d), nil
		}
		if err != nil {
			// The decode may still be running; nothing else may touch the
			// context, so the caller must treat it as lost.
			return 0, fmt.Errorf("decode thread: waiting for the step: %w", err)
		}
	}
}

func (d *decoder) close() {
	C.llmux_decoder_free(d.d)
	d.r.Close()
	syscall.Close(d.w)
}

// ErrNoKVSpace is returned by Decode when the KV cache has no room for the
// batch. Nothing of the batch was kept; free sequences and retry.
var ErrNoKVSpace = errors.New("KV cache full")

func (o ContextOptions) withDefaults(m *Model) ContextOptions {
	if o.Cells <= 0 {
		o.Cells = m.TrainContext()
	}
	if o.Sequences <= 0 {
		o.Sequences = 1
	}
	if o.Batch <= 0 {
		o.Batch = 512
	}
	if o.MicroBatch <= 0 {
		o.MicroBatch = min(o.Batch, 512)
	}
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
	}
	if o.KVType == "" {
		o.KVType = "f16"
	}
	if o.FlashAttention == "" {
		o.FlashAttention = "auto"
	}
	return o
}

// NewContext creates a context with its KV cache.
func (m *Model) NewContext(opts ContextOptions) (*Context, error) {
	o := opts.withDefaults(m)
	p := C.llama_context_default_params()
	p.n_ctx = C.uint32_t(o.Cells)
	p.n_batch = C.uint32_t(o.Batch)
	p.n_ubatch = C.uint32_t(o.MicroBatch)
	p.n_seq_max = C.uint32_t(o.Sequences)
	p.n_threads = C.int32_t(o.Threads)
	p.n_threads_batch = C.int32_t(o.Threads)
	p.no_perf = true
	// One KV buffer shared by all sequences: a copied prefix is shared, not
	// duplicated, which the prefix cache relies on.
	p.kv_unified = C.bool(!o.PerSequenceKV)
	p.embeddings = C.bool(o.Embeddings)
	if o.Embeddings {
		p.pooling_type = C.LLAMA_POOLING_TYPE_MEAN
	}
	switch o.FlashAttention {
	case "auto":
		p.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_AUTO
	case "on":
		p.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	case "off":
		p.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	default:
		return nil, fmt.Errorf("new context: flash attention %q: want auto, on or off", o.FlashAttention)
	}
	switch o.KVType {
	case "f16":
		p.type_k, p.type_v = C.GGML_TYPE_F16, C.GGML_TYPE_F16
	case "q8_0":
		p.type_k, p.type_v = C.GGML_TYPE_Q8_0, C.GGML_TYPE_Q8_0
	case "q4_0":
		p.type_k, p.type_v = C.GGML_TYPE_Q4_0, C.GGML_TYPE_Q4_0
	default:
		return nil, fmt.Errorf("new context: KV type %q: want f16, q8_0 or q4_0", o.KVType)
	}
	if o.KVType != "f16" && o.FlashAttention == "off" {
		return nil, errors.New("new context: a quantized KV cache needs flash attention")
	}
	mark := errorMark()
	c := newLlamaContext(m.c, p, o.LoRA)
	if c == nil {
		return nil, loadFailure(fmt.Sprintf("new context of %d cells for %d sequences", o.Cells, o.Sequences), mark, errors.New("llama.cpp could not create it"))
	}
	o.Cells = int(C.llama_n_ctx(c))
	pool := C.llmux_threadpool_attach(c, C.int(o.Threads))
	ctx := &Context{c: c, pool: pool, mem: C.llama_get_memory(c), model: m, opts: o, nVocab: m.nVocab}
	d, err := newDecoder()
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("new context: %w", err)
	}
	ctx.dec = d
	return ctx, nil
}

// graphReuseMu serializes context creation while LLAMA_GRAPH_REUSE_DISABLE,
// which llama.cpp reads once in its context constructor, is set.
var graphReuseMu sync.Mutex

func newLlamaContext(m *C.struct_llama_model, p C.struct_llama_context_params, noReuse bool) *C.struct_llama_context {
	graphReuseMu.Lock()
	defer graphReuseMu.Unlock()
	const key = "LLAMA_GRAPH_REUSE_DISABLE"
	if noReuse {
		old, had := os.LookupEnv(key)
		os.Setenv(key, "1")
		defer func() {
			if had {
				os.Setenv(key, old)
			} else {
				os.Unsetenv(key)
			}
		}()
	}
	return C.llama_init_from_model(m, p)
}

// Close frees the context and its KV cache.
func (c *Context) Close() {
	if c.dec != nil {
		c.dec.close()
		c.dec = nil
	}
	if c.c != nil {
		C.llama_free(c.c)
		c.c = nil
	}
	if c.pool != nil {
		C.llmux_threadpool_free(c.pool)
		c.pool = nil
	}
}

// ParkThreads puts the context's idle CPU threads to sleep until its next
// Decode, which wakes them. Idle, they poll for the next step for a few
// milliseconds first (see llmux_threadpool_attach); a caller that knows
// another context computes next on the same cores parks them instead.
// Not concurrently with Decode or Close.
func (c *Context) ParkThreads() {
	if c.pool != nil {
		C.llmux_threadpool_park(c.pool)
	}
}

// Model is the model this context runs.
func (c *Context) Model() *Model { return c.model }

// Options are the options in effect (defaults filled in).
func (c *Context) Options() ContextOptions { return c.opts }

// SeqCells is the most tokens one sequence can hold: all cells with a
// unified KV cache, Cells/Sequences (rounded up to 256 by llama.cpp) with
// one KV stream per sequence.
func (c *Context) SeqCells() int { return int(C.llama_n_ctx_seq(c.c)) }

// Decode evaluates a batch. On success, Logits(i) holds the logits of every
// batch row i added with logits=true, until the next Decode.
func (c *Context) Decode(b *Batch) error {
	if b.n == 0 {
		return nil
	}
	if b.n > c.opts.Batch {
		return fmt.Errorf("decode: batch of %d tokens exceeds the context's batch size %d", b.n, c.opts.Batch)
	}
	b.c.n_tokens = C.int32_t(b.n)
	rc, err := c.dec.decode(c.c, b.c)
	if err != nil {
		return err
	}
	switch {
	case rc == 0:
		return nil
	case rc == 1:
		return ErrNoKVSpace
	case rc == 2:
		return errors.New("decode: aborted")
	default:
		return fmt.Errorf("decode: llama.cpp error %d", int(rc))
	}
}

// Logits returns the logits of batch row i of the last Decode. The slice
// points into llama.cpp's memory and is valid until the next Decode.
func (c *Context) Logits(i int) []float32 {
	p := C.llama_get_logits_ith(c.c, C.int32_t(i))
	if p == nil {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nVocab)
}

// Embedding returns the pooled embedding of a sequence after a Decode of a
// context created with Embeddings, or nil.
func (c *Context) Embedding(seq int) []float32 {
	p := C.llama_get_embeddings_seq(c.c, C.llama_seq_id(seq))
	if p == nil {
		return nil
	}
	n := c.model.EmbeddingSize()
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), n)...)
}

// SeqRemove drops positions [p0, p1) of a sequence from the KV cache
// (p1 < 0: to the end). It reports false if the cache cannot do a partial
// removal.
func (c *Context) SeqRemove(seq, p0, p1 int) bool {
	return bool(C.llama_memory_seq_rm(c.mem, C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1)))
}

// SeqCopy makes positions [p0, p1) of src also belong to dst. In the unified
// KV cache the cells are shared, not duplicated.
func (c *Context) SeqCopy(src, dst, p0, p1 int) {
	C.llama_memory_seq_cp(c.mem, C.llama_seq_id(src), C.llama_seq_id(dst), C.llama_pos(p0), C.llama_pos(p1))
}

// SeqPosMax is the largest position a sequence holds, or -1 when empty.
func (c *Context) SeqPosMax(seq int) int {
	return int(C.llama_memory_seq_pos_max(c.mem, C.llama_seq_id(seq)))
}

// Clear empties the KV cache.
func (c *Context) Clear() { C.llama_memory_clear(c.mem, C.bool(true)) }
