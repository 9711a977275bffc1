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
	"math"
	"unsafe"

	ollamallama "github.com/ollama/ollama/llama"
)

// SamplingParams choose how a sequence picks its next token. The zero value
// is greedy decoding.
type SamplingParams struct {
	Temperature float32 // <= 0: greedy
	TopK        int     // 0: off
	TopP        float32 // 0 or 1: off
	MinP        float32 // 0: off
	Seed        uint32
	// Penalties over the last PenaltyLastN sampled tokens (0: 64).
	RepeatPenalty    float32 // 1 or 0: off
	FrequencyPenalty float32
	PresencePenalty  float32
	PenaltyLastN     int
	// LogitBias adds a bias to a token's logit; -Inf bans it.
	LogitBias map[int32]float32
	// Grammar is a GBNF grammar with a "root" rule, or "".
	Grammar string
}

// ErrNoAllowedToken is returned by Sample when logit bias and grammar
// together leave no token the sequence may emit.
var ErrNoAllowedToken = errors.New("no token is allowed by the grammar and logit bias")

// Sampler is one sequence's sampler chain, with its own RNG, penalty window
// and grammar state. Not safe for concurrent use.
type Sampler struct {
	c      *C.struct_llmux_sampler
	buf    []C.llama_token_data
	errBuf [256]C.char
}

// NewSampler builds a sampler for a model.
func NewSampler(m *Model, p SamplingParams) (*Sampler, error) {
	var cp C.struct_llmux_sampler_params
	cp.temperature = C.float(p.Temperature)
	cp.top_k = C.int32_t(p.TopK)
	cp.top_p = C.float(p.TopP)
	cp.min_p = C.float(p.MinP)
	cp.seed = C.uint32_t(p.Seed)
	cp.penalty_last_n = C.int32_t(p.PenaltyLastN)
	if p.PenaltyLastN == 0 {
		cp.penalty_last_n = 64
	}
	cp.penalty_repeat = C.float(p.RepeatPenalty)
	if p.RepeatPenalty == 0 {
		cp.penalty_repeat = 1
	}
	cp.penalty_freq = C.float(p.FrequencyPenalty)
	cp.penalty_present = C.float(p.PresencePenalty)
	if len(p.LogitBias) > 0 {
		lb := (*C.llama_logit_bias)(C.malloc(C.size_t(len(p.LogitBias)) * C.sizeof_llama_logit_bias))
		defer C.free(unsafe.Pointer(lb))
		s := unsafe.Slice(lb, len(p.LogitBias))
		i := 0
		for tok, bias := range p.LogitBias {
			if !m.ValidToken(tok) {
				return nil, fmt.Errorf("sampler: logit bias for token %d, vocab has %d", tok, m.nVocab)
			}
			if math.IsNaN(float64(bias)) {
				return nil, fmt.Errorf("sampler: logit bias for token %d is NaN", tok)
			}
			s[i] = C.llama_logit_bias{token: C.llama_token(tok), bias: C.float(bias)}
			i++
		}
		cp.logit_bias = lb
		cp.n_logit_bias = C.int32_t(len(p.LogitBias))
	}
	if p.Grammar != "" {
		g := C.CString(p.Grammar)
		defer C.free(unsafe.Pointer(g))
		cp.grammar = g
	}
	s := &Sampler{buf: make([]C.llama_token_data, m.nVocab)}
	c := C.llmux_sampler_new(m.c, &cp, &s.errBuf[0], C.int(len(s.errBuf)))
	if c == nil {
		return nil, fmt.Errorf("sampler: %s", C.GoString(&s.errBuf[0]))
	}
	s.c = c
	return s, nil
}

// Sample picks the next token from batch row idx of the last Decode and
// records it in the sampler's state (penalties, grammar).
func (s *Sampler) Sample(ctx *Context, idx int) (int32, error) {
	var tok C.llama_token
	rc := C.llmux_sample(s.c, ctx.c, C.int32_t(idx), &s.buf[0], C.int32_t(len(s.buf)), &tok, &s.errBuf[0], C.int(len(s.errBuf)))
	switch rc {
	case 0:
		return int32(tok), nil
	case 1:
		return -1, ErrNoAllowedToken
	default:
		return -1, fmt.Errorf("sample: %s", C.GoString(&s.errBuf[0]))
	}
}

// Accept records a token that was not sampled (for example one replayed
// after preemption) in the sampler's state.
func (s *Sampler) Accept(tok int32) error {
	if C.llmux_accept(s.c, C.llama_token(tok), &s.errBuf[0], C.int(len(s.errBuf))) != 0 {
		return fmt.Errorf("sampler accept: %s", C.GoString(&s.errBuf[0]))
	}
	return nil
}

// Close frees the sampler.
func (s *Sampler) Close() {
	if s.c != nil {
		C.llmux_sampler_free(s.c)
		s.c = nil
	}
}

// SchemaToGrammar converts a JSON schema to a GBNF grammar with llama.cpp's
// converter. It returns an error for a schema the converter rejects.
func SchemaToGrammar(schema []byte) (string, error) {
	g := ollamallama.SchemaToGrammar(schema)
	if g == nil {
		return "", errors.New("json schema could not be converted to a grammar")
	}
	return string(g), nil
}

// JSONGrammar is a GBNF grammar for any JSON object (response_format
// json_object).
const JSONGrammar = `root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
`
