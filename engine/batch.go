package engine

/*
#include "llama.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Batch is a reusable llama_batch: allocate it once per scheduler and fill it
// every step with prompt chunks and decode tokens of many sequences.
type Batch struct {
	c      C.struct_llama_batch
	cap    int
	maxSeq int
	n      int
	token  []C.llama_token
	pos    []C.llama_pos
	nSeq   []C.int32_t
	seq    []*C.llama_seq_id
	logits []C.int8_t
}

// NewBatch allocates a batch of up to capacity tokens, each belonging to at
// most maxSeq sequences.
func NewBatch(capacity, maxSeq int) (*Batch, error) {
	if capacity < 1 || maxSeq < 1 {
		return nil, fmt.Errorf("new batch: capacity %d and maxSeq %d must be positive", capacity, maxSeq)
	}
	b := &Batch{c: C.llama_batch_init(C.int32_t(capacity), 0, C.int32_t(maxSeq)), cap: capacity, maxSeq: maxSeq}
	b.token = unsafe.Slice(b.c.token, capacity)
	b.pos = unsafe.Slice(b.c.pos, capacity)
	b.nSeq = unsafe.Slice(b.c.n_seq_id, capacity)
	b.seq = unsafe.Slice(b.c.seq_id, capacity)
	b.logits = unsafe.Slice(b.c.logits, capacity)
	return b, nil
}

// Add appends a token at position pos for the given sequences and returns
// its row (the index for Context.Logits when logits is true).
func (b *Batch) Add(token int32, pos int, logits bool, seqs ...int) int {
	if b.n >= b.cap {
		panic("engine: batch overflow")
	}
	if len(seqs) == 0 || len(seqs) > b.maxSeq {
		panic("engine: token needs 1..maxSeq sequences")
	}
	i := b.n
	b.token[i] = C.llama_token(token)
	b.pos[i] = C.llama_pos(pos)
	b.nSeq[i] = C.int32_t(len(seqs))
	ids := unsafe.Slice(b.seq[i], b.maxSeq)
	for j, s := range seqs {
		ids[j] = C.llama_seq_id(s)
	}
	if logits {
		b.logits[i] = 1
	} else {
		b.logits[i] = 0
	}
	b.n++
	return i
}

// Row reads back row i: its token, position, first sequence and whether it
// asks for logits (for fakes of Context that check what they are given).
func (b *Batch) Row(i int) (token int32, pos, seq int, logits bool) {
	if i < 0 || i >= b.n {
		panic("engine: batch row out of range")
	}
	return int32(b.token[i]), int(b.pos[i]), int(unsafe.Slice(b.seq[i], b.maxSeq)[0]), b.logits[i] != 0
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return b.n }

// Cap is the most tokens the batch can hold.
func (b *Batch) Cap() int { return b.cap }

// Clear empties the batch for reuse.
func (b *Batch) Clear() { b.n = 0 }

// Close frees the batch.
func (b *Batch) Close() {
	if b.cap > 0 {
		b.c.n_tokens = C.int32_t(b.cap)
		C.llama_batch_free(b.c)
		b.cap = 0
	}
}
