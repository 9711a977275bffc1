package server

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/openai"
)

// embedder computes mean-pooled, L2-normalized embeddings on a context of
// its own, created on first use. Embedding requests are short and rare
// beside generation, so they run one at a time.
type embedder struct {
	mu    sync.Mutex // guards ctx and batch, and serializes their use
	model *engine.Model
	cells int
	ctx   *engine.Context
	batch *engine.Batch
}

func (e *embedder) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx != nil {
		e.batch.Close()
		e.ctx.Close()
		e.ctx = nil
	}
}

func (e *embedder) embed(tokens []int32) ([]float32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		ctx, err := e.model.NewContext(engine.ContextOptions{Cells: e.cells, Batch: e.cells, MicroBatch: e.cells, Embeddings: true})
		if err != nil {
			return nil, err
		}
		b, err := engine.NewBatch(e.cells, 1)
		if err != nil {
			ctx.Close()
			return nil, err
		}
		e.ctx, e.batch = ctx, b
	}
	e.ctx.Clear()
	e.batch.Clear()
	for i, t := range tokens {
		e.batch.Add(t, i, true, 0)
	}
	if err := e.ctx.Decode(e.batch); err != nil {
		return nil, err
	}
	v := e.ctx.Embedding(0)
	if v == nil {
		return nil, fmt.Errorf("the engine returned no embedding")
	}
	return renormalize(v), nil
}

type embeddingRequest struct {
	Model          string        `json:"model"`
	Input          openai.Prompt `json:"input"`
	EncodingFormat string        `json:"encoding_format"`
	Dimensions     *int          `json:"dimensions"`
	User           string        `json:"user"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

func (s *Server) handleEmbeddings(c *gin.Context) {
	var req embeddingRequest
	if e := decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if req.Model == "" {
		s.fail(c, openai.Invalid("model", "you must provide a model parameter"))
		return
	}
	if e := s.resolveModel(c, req.Model); e != nil {
		s.fail(c, e)
		return
	}
	if !req.Input.Set || req.Input.Count() == 0 {
		s.fail(c, openai.Invalid("input", "input must be a non-empty string, array of strings, or array of token ids"))
		return
	}
	if req.Input.Count() > s.limits.MaxPrompts {
		s.fail(c, openai.Invalid("input", "at most %d inputs per request, got %d", s.limits.MaxPrompts, req.Input.Count()))
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		s.fail(c, openai.Invalid("encoding_format", "encoding_format must be float or base64"))
		return
	}
	dim := s.model.EmbeddingSize()
	if req.Dimensions != nil && (*req.Dimensions < 1 || *req.Dimensions > dim) {
		s.fail(c, openai.Invalid("dimensions", "dimensions must be between 1 and %d", dim))
		return
	}
	inputs := req.Input.Tokens
	for _, t := range req.Input.Texts {
		toks, err := s.model.Tokenize(t, true, false)
		if err != nil {
			s.fail(c, openai.Invalid("input", "could not tokenize: %v", err))
			return
		}
		inputs = append(inputs, toks)
	}
	resp := struct {
		Object string          `json:"object"`
		Data   []embeddingData `json:"data"`
		Model  string          `json:"model"`
		Usage  openai.Usage    `json:"usage"`
	}{Object: "list", Model: req.Model}
	for i, toks := range inputs {
		if len(toks) == 0 {
			s.fail(c, openai.Invalid("input", "input %d is empty", i))
			return
		}
		if len(toks) > s.embed.cells {
			s.fail(c, openai.InvalidCode("input", "context_length_exceeded", "input %d is %d tokens long; embeddings take at most %d", i, len(toks), s.embed.cells))
			return
		}
		for _, t := range toks {
			if !s.model.ValidToken(t) {
				s.fail(c, openai.Invalid("input", "token id %d is out of range [0, %d)", t, s.model.VocabSize()))
				return
			}
		}
		v, err := s.embed.embed(toks)
		if err != nil {
			s.fail(c, err)
			return
		}
		if req.Dimensions != nil {
			v = renormalize(v[:*req.Dimensions])
		}
		d := embeddingData{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			buf := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(x))
			}
			d.Embedding = base64.StdEncoding.EncodeToString(buf)
		}
		resp.Data = append(resp.Data, d)
		resp.Usage.PromptTokens += len(toks)
	}
	resp.Usage.TotalTokens = resp.Usage.PromptTokens
	c.JSON(http.StatusOK, resp)
}

// renormalize scales v to unit length (after truncation to fewer dimensions).
func renormalize(v []float32) []float32 {
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	if n = math.Sqrt(n); n > 0 {
		for i := range v {
			v[i] = float32(float64(v[i]) / n)
		}
	}
	return v
}
