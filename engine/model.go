package engine

/*
#include <stdint.h>
#include <stdlib.h>
#include "llama.h"
#include "llmux_engine.h"

extern bool llmuxGoProgress(float progress, void * user);
static bool llmux_progress_trampoline(float progress, void * user) { return llmuxGoProgress(progress, user); }
static void llmux_set_progress(struct llama_model_params * p, uintptr_t user) {
	p->progress_callback = llmux_progress_trampoline;
	p->progress_callback_user_data = (void *) user;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime/cgo"
	"strings"
	"sync"
	"unsafe"

	"github.com/llmux/llmux/models"
)

// ModelOptions configure LoadModel. The zero value loads on the CPU.
type ModelOptions struct {
	// GPULayers is how many layers to offload (-1: all). Needs a GPU backend.
	GPULayers int
	// MainGPU is the device used when the model is not split.
	MainGPU int
	// TensorSplit gives each GPU's share of the layers (nil: even split).
	TensorSplit []float32
	// NoMmap reads the weights into memory instead of mapping the file.
	NoMmap bool
	// Progress, if set, is told the load progress in [0,1]; returning false
	// aborts the load.
	Progress func(float32) bool
}

// Model is one loaded GGUF model. Its methods are safe for concurrent use;
// Close must not race with any of them.
type Model struct {
	c      *C.struct_llama_model
	vocab  *C.struct_llama_vocab
	path   string
	nVocab int
	pieces [][]byte // detokenized text of every token, filled at load
	eog    []bool

	adaptersMu sync.Mutex // guards adapters
	adapters   []*Adapter
	closeOnce  sync.Once
}

// ErrUnsupported is returned (wrapped) for a valid GGUF that llama.cpp
// cannot run, such as an unknown architecture.
var ErrUnsupported = errors.New("model not supported by llama.cpp")

// ErrOutOfMemory is returned (wrapped) when llama.cpp could not allocate
// what a model or a context needs: the machine, or the process's limit
// (a replica's --replica-memory-limit), has too little memory left.
var ErrOutOfMemory = errors.New("out of memory")

// loadFailure is the error for a llama.cpp call that failed after mark:
// what llama.cpp logged as the reason, wrapping ErrOutOfMemory when that
// was an allocation, and fallback when it logged nothing.
func loadFailure(what string, mark uint64, fallback error) error {
	why := failureReason(mark)
	switch {
	case why == "":
		return fmt.Errorf("%s: %w", what, fallback)
	case isAllocationFailure(why):
		return fmt.Errorf("%s: %w: llama.cpp: %s", what, ErrOutOfMemory, why)
	default:
		return fmt.Errorf("%s: llama.cpp: %s", what, why)
	}
}

func isAllocationFailure(why string) bool {
	why = strings.ToLower(why)
	for _, s := range []string{"cannot allocate memory", "insufficient memory", "failed to allocate", "out of memory", "bad_alloc"} {
		if strings.Contains(why, s) {
			return true
		}
	}
	return false
}

//export llmuxGoProgress
func llmuxGoProgress(progress C.float, user unsafe.Pointer) C.bool {
	h := cgo.Handle(uintptr(user))
	f := h.Value().(func(float32) bool)
	return C.bool(f(float32(progress)))
}

// LoadModel loads a GGUF model. The file is checked in Go first (magic,
// header, tensor bounds), so a missing, foreign or truncated file returns an
// error instead of reaching llama.cpp.
func LoadModel(path string, opts ModelOptions) (*Model, error) {
	info, err := models.Inspect(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	if info.Kind == "adapter" {
		return nil, fmt.Errorf("load model %s: file is a %s adapter, not a model", path, info.AdapterType)
	}
	initBackend()
	params := C.llama_model_default_params()
	params.n_gpu_layers = C.int32_t(opts.GPULayers)
	if opts.GPULayers < 0 {
		params.n_gpu_layers = 999
	}
	params.main_gpu = C.int32_t(opts.MainGPU)
	params.use_mmap = C.bool(!opts.NoMmap)
	var split *C.float
	if len(opts.TensorSplit) > 0 {
		n := int(C.llama_max_devices())
		if len(opts.TensorSplit) > n {
			return nil, fmt.Errorf("load model: tensor split has %d entries, this build supports %d devices", len(opts.TensorSplit), n)
		}
		split = (*C.float)(C.calloc(C.size_t(n), C.sizeof_float))
		defer C.free(unsafe.Pointer(split))
		s := unsafe.Slice(split, n)
		for i, v := range opts.TensorSplit {
			s[i] = C.float(v)
		}
		params.tensor_split = split
	}
	if opts.Progress != nil {
		h := cgo.NewHandle(opts.Progress)
		defer h.Delete()
		C.llmux_set_progress(&params, C.uintptr_t(h))
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	mark := errorMark()
	cm := C.llama_model_load_from_file(cpath, params)
	if cm == nil {
		return nil, loadFailure(fmt.Sprintf("load model %s (%s)", path, info.Architecture), mark, ErrUnsupported)
	}
	m := &Model{c: cm, vocab: C.llama_model_get_vocab(cm), path: path}
	m.nVocab = int(C.llama_vocab_n_tokens(m.vocab))
	m.pieces = make([][]byte, m.nVocab)
	m.eog = make([]bool, m.nVocab)
	buf := make([]byte, 256)
	for t := range m.nVocab {
		if m.pieces[t], err = m.piece(int32(t), buf); err != nil {
			m.Close()
			return nil, fmt.Errorf("load model %s: vocabulary: %w", path, err)
		}
		m.eog[t] = bool(C.llama_vocab_is_eog(m.vocab, C.llama_token(t)))
	}
	return m, nil
}

func (m *Model) piece(t int32, buf []byte) ([]byte, error) {
	var cerr [256]C.char
	for {
		n := C.llmux_token_to_piece(m.vocab, C.llama_token(t), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), &cerr[0], C.int(len(cerr)))
		switch {
		case n == math.MinInt32:
			return nil, fmt.Errorf("token %d: llama.cpp: %s", t, C.GoString(&cerr[0]))
		case n >= 0:
			return append([]byte(nil), buf[:n]...), nil
		}
		buf = make([]byte, -n)
	}
}

// Close frees the model and its adapters. Contexts must be closed first.
func (m *Model) Close() {
	m.closeOnce.Do(func() {
		m.adaptersMu.Lock()
		for _, a := range m.adapters {
			a.free()
		}
		m.adapters = nil
		m.adaptersMu.Unlock()
		C.llama_model_free(m.c)
		m.c = nil
	})
}

// Path is the file the model was loaded from.
func (m *Model) Path() string { return m.path }

// VocabSize is the number of tokens in the vocabulary.
func (m *Model) VocabSize() int { return m.nVocab }

// TrainContext is the context length the model was trained with.
func (m *Model) TrainContext() int { return int(C.llama_model_n_ctx_train(m.c)) }

// EmbeddingSize is the width of the model's hidden state.
func (m *Model) EmbeddingSize() int { return int(C.llama_model_n_embd(m.c)) }

// Parameters is the number of weights.
func (m *Model) Parameters() uint64 { return uint64(C.llama_model_n_params(m.c)) }

// SizeBytes is the size of the weights in memory.
func (m *Model) SizeBytes() uint64 { return uint64(C.llama_model_size(m.c)) }

// Description is llama.cpp's one-line summary (architecture, size, type).
func (m *Model) Description() string {
	buf := make([]byte, 256)
	n := C.llama_model_desc(m.c, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return ""
	}
	return string(buf[:min(int(n), len(buf)-1)])
}

// Meta returns a metadata value as a string, and whether it exists.
func (m *Model) Meta(key string) (string, bool) {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	buf := make([]byte, 4096)
	n := C.llama_model_meta_val_str(m.c, ck, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return "", false
	}
	if int(n) >= len(buf) {
		buf = make([]byte, n+1)
		C.llama_model_meta_val_str(m.c, ck, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	}
	return string(buf[:n]), true
}

// ChatTemplate is the model's own chat template ("" when it has none).
func (m *Model) ChatTemplate() string {
	p := C.llama_model_chat_template(m.c, nil)
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// BOS is the beginning-of-sequence token, or -1.
func (m *Model) BOS() int32 { return int32(C.llama_vocab_bos(m.vocab)) }

// EOS is the end-of-sequence token, or -1.
func (m *Model) EOS() int32 { return int32(C.llama_vocab_eos(m.vocab)) }

// AddBOS reports whether prompts should start with BOS.
func (m *Model) AddBOS() bool { return bool(C.llama_vocab_get_add_bos(m.vocab)) }

// IsEOG reports whether a token ends generation (EOS, EOT and the like).
func (m *Model) IsEOG(t int32) bool { return t >= 0 && int(t) < m.nVocab && m.eog[t] }

// ValidToken reports whether t is a token id of this vocab.
func (m *Model) ValidToken(t int32) bool { return t >= 0 && int(t) < m.nVocab }

// Piece is the raw bytes a token decodes to (may be part of a UTF-8 rune).
// Control tokens decode to nothing. The slice must not be modified.
func (m *Model) Piece(t int32) []byte {
	if !m.ValidToken(t) {
		return nil
	}
	return m.pieces[t]
}

// Tokenize turns text into tokens. addSpecial adds BOS (when the model wants
// it); parseSpecial turns control-token text such as "<|im_start|>" into the
// control token instead of plain text.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	var cerr [256]C.char
	n := len(text) + 2
	for {
		out := make([]int32, n)
		got := C.llmux_tokenize(m.vocab, ctext, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&out[0])), C.int32_t(n), C.bool(addSpecial), C.bool(parseSpecial), &cerr[0], C.int(len(cerr)))
		switch {
		case got == math.MinInt32:
			return nil, fmt.Errorf("tokenize: this model's vocabulary cannot represent the text (llama.cpp: %s)", C.GoString(&cerr[0]))
		case got >= 0:
			return out[:got], nil
		case int(-got) <= n:
			return nil, fmt.Errorf("tokenize: failed (%d)", got)
		}
		n = int(-got)
	}
}

// Detokenize joins the tokens' text; invalid UTF-8 becomes U+FFFD.
func (m *Model) Detokenize(tokens []int32) string {
	var d Detokenizer
	var out []byte
	for _, t := range tokens {
		out = d.Add(out, m.Piece(t))
	}
	return string(d.Flush(out))
}
