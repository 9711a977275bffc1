package scheduler

import (
	"fmt"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/kvcache"
)

// Engine is the engine context a scheduler drives, and all the loop asks of
// it. *engine.Context implements it; the package's tests run the loop
// against a fake.
type Engine interface {
	// SeqRemove and SeqCopy move KV cells between sequence slots (the
	// kvcache package drives them).
	kvcache.KV
	// Decode evaluates a batch. engine.ErrNoKVSpace: it did not fit and
	// nothing of it was kept.
	Decode(b *engine.Batch) error
	// Logits are the logits of batch row i of the last Decode.
	Logits(i int) []float32
	// SetAdapters makes exactly this LoRA adapter set (empty: none) active
	// for the following Decodes.
	SetAdapters(set []engine.AdapterRef) error
}

// Vocab is what the loop needs of a model's vocabulary. *engine.Model
// implements it.
type Vocab interface {
	VocabSize() int
	ValidToken(t int32) bool
	IsEOG(t int32) bool
	Piece(t int32) []byte
}

// Sampler draws one sequence's tokens from the logits of the engine's last
// Decode, keeping the sequence's sampling state (penalties, grammar, RNG).
type Sampler interface {
	Sample(e Engine, row int) (int32, error)
	Close()
}

// backend is what a scheduler runs on: an engine context and the model
// behind it, or a test's fake of both.
type backend struct {
	engine     Engine
	vocab      Vocab
	newSampler func(engine.SamplingParams) (Sampler, error)
	// loadAdapter loads a LoRA adapter for the model; unloadAdapter (may
	// be nil) frees one once the context is closed.
	loadAdapter   func(path string) (*engine.Adapter, error)
	unloadAdapter func(*engine.Adapter)
	cells         int    // KV cells of the context
	seqCells      int    // the most tokens one sequence can hold
	close         func() // frees the engine context
}

// engineSampler is an engine.Sampler, which samples from an engine.Context
// directly (in C, without copying the logits).
type engineSampler struct{ s *engine.Sampler }

func (x engineSampler) Sample(e Engine, row int) (int32, error) {
	ctx, ok := e.(*engine.Context)
	if !ok {
		return -1, fmt.Errorf("sample: an engine sampler needs an *engine.Context, not %T", e)
	}
	return x.s.Sample(ctx, row)
}

func (x engineSampler) Close() { x.s.Close() }

var (
	_ Engine = (*engine.Context)(nil)
	_ Vocab  = (*engine.Model)(nil)
)
