package multiplex

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/llmux/llmux/chat"
	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/scheduler"
)

// Runner serves one loaded base model behind the llm boundary: it renders
// chats in the model's chat format, tokenizes, compiles JSON constraints to
// grammars, submits to the model's scheduler and turns its events into llm
// events (content, reasoning and tool calls split by the chat format).
// It owns neither the model nor the scheduler: whoever loaded them closes
// them after the runner is done.
type Runner struct {
	name  string
	model *engine.Model
	sched *scheduler.Scheduler
	embed *embedder
	chat  chat.Format
}

// NewRunner serves sched's model under name, with the chat format its own
// GGUF metadata gives (no config, no ollama store).
func NewRunner(name string, sched *scheduler.Scheduler) *Runner {
	m := sched.Model()
	arch, _ := m.Meta("general.architecture")
	fm, err := chat.Choose(chat.Facts{Architecture: arch, GGUFTemplate: m.ChatTemplate()})
	if err != nil {
		fm, _ = chat.Choose(chat.Facts{})
	}
	return newRunner(name, sched, fm)
}

func newRunner(name string, sched *scheduler.Scheduler, fm chat.Format) *Runner {
	m := sched.Model()
	return &Runner{name: name, model: m, sched: sched, embed: &embedder{model: m, cells: min(sched.SeqContext(), 2048)}, chat: fm}
}

// Close frees what the runner holds beside the model and scheduler (the
// embedding context).
func (r *Runner) Close() { r.embed.close() }

// Info describes the runner's model under the name it is served as.
func (r *Runner) Info(id string) llm.ModelInfo {
	c := r.chat.Info
	return llm.ModelInfo{ID: id, State: llm.StateLoaded, VocabSize: r.model.VocabSize(), Context: r.sched.SeqContext(),
		Parallel: r.sched.Options().Parallel, Embedding: r.model.EmbeddingSize(), Chat: &c}
}

// engineRender renders role/content messages with llama.cpp's template
// heuristics over the GGUF's template.
func (r *Runner) engineRender(msgs []llm.Message) (string, bool) {
	cm := make([]engine.ChatMessage, len(msgs))
	for i, m := range msgs {
		cm[i] = engine.ChatMessage{Role: m.Role, Content: m.Content}
	}
	out, err := engine.ApplyChatTemplate(r.model.ChatTemplate(), cm, true)
	return out, err == nil
}

// prompts tokenizes the request's prompts and checks each against the
// context.
func (r *Runner) prompts(req *llm.Request, plan *chat.Plan) ([][]int32, *llm.Error) {
	ctxLen := r.sched.SeqContext()
	if plan != nil {
		p, err := r.model.Tokenize(plan.Prompt, true, plan.Special)
		if err != nil {
			return nil, llm.Errorf(llm.CodeInvalid, "messages", "could not tokenize the messages: %v", err)
		}
		if len(p) >= ctxLen {
			return nil, llm.Errorf(llm.CodeContextLength, "messages", "the messages are %d tokens long, but this model's context holds %d", len(p), ctxLen)
		}
		return [][]int32{p}, nil
	}
	if len(req.Prompts) == 0 {
		return nil, llm.Errorf(llm.CodeInvalid, "prompt", "the request has no prompt")
	}
	out := make([][]int32, len(req.Prompts))
	for i, pr := range req.Prompts {
		p := pr.Tokens
		if !pr.Tokenized {
			var err error
			if p, err = r.model.Tokenize(pr.Text, true, false); err != nil {
				return nil, llm.Errorf(llm.CodeInvalid, "prompt", "could not tokenize the prompt: %v", err)
			}
		}
		for _, t := range p {
			if !r.model.ValidToken(t) {
				return nil, llm.Errorf(llm.CodeInvalid, "prompt", "token id %d is out of range [0, %d)", t, r.model.VocabSize())
			}
		}
		if len(p) >= ctxLen {
			return nil, llm.Errorf(llm.CodeContextLength, "prompt", "prompt %d is %d tokens long, but this model's context holds %d", i, len(p), ctxLen)
		}
		out[i] = p
	}
	return out, nil
}

// sampling converts boundary parameters to the engine's, compiling a JSON
// constraint to a grammar.
func (r *Runner) sampling(p llm.Params) (engine.SamplingParams, *llm.Error) {
	sp := engine.SamplingParams{Temperature: p.Temperature, TopK: p.TopK, TopP: p.TopP, MinP: p.MinP, Seed: p.Seed,
		RepeatPenalty: p.RepeatPenalty, FrequencyPenalty: p.FrequencyPenalty, PresencePenalty: p.PresencePenalty}
	if len(p.LogitBias) > 0 {
		sp.LogitBias = make(map[int32]float32, len(p.LogitBias))
		for _, b := range p.LogitBias {
			if !r.model.ValidToken(b.Token) {
				return sp, llm.Errorf(llm.CodeInvalid, "logit_bias", "logit_bias key %q is not a token id in [0, %d)", fmt.Sprint(b.Token), r.model.VocabSize())
			}
			v := b.Bias
			if b.Ban {
				v = float32(math.Inf(-1))
			}
			sp.LogitBias[b.Token] = v
		}
	}
	if c := p.Constraint; c != nil {
		switch c.Kind {
		case llm.JSONObject:
			sp.Grammar = engine.JSONGrammar
		case llm.JSONSchema:
			g, err := engine.SchemaToGrammar(c.Schema)
			if err != nil {
				if c.Param == "tools" {
					return sp, llm.Errorf(llm.CodeInvalid, c.Param, "the tools' parameter schemas could not be converted to a grammar: %v", err)
				}
				return sp, llm.Errorf(llm.CodeInvalid, c.Param, "json_schema could not be converted to a grammar: %v", err)
			}
			sp.Grammar = g
		default:
			return sp, llm.Errorf(llm.CodeInvalid, c.Param, "unknown constraint kind %q", c.Kind)
		}
	}
	return sp, nil
}

// Generate starts req on the runner's scheduler: one scheduler request per
// prompt, merged into one stream.
func (r *Runner) Generate(ctx context.Context, req *llm.Request, adapter string) (llm.Stream, *llm.Error) {
	st, e := r.generate(ctx, req, adapter)
	if e != nil {
		return nil, e
	}
	return st, nil
}

func (r *Runner) generate(ctx context.Context, req *llm.Request, adapter string) (*stream, *llm.Error) {
	var plan *chat.Plan
	params := req.Params
	if len(req.Messages) > 0 {
		var e *llm.Error
		if plan, e = r.chat.Prepare(req, r.engineRender); e != nil {
			return nil, e
		}
		if plan.Constraint != nil {
			params.Constraint = plan.Constraint
		}
		if len(plan.Stop) > 0 {
			params.Stop = append(slices.Clip(params.Stop), plan.Stop...)
		}
	}
	prompts, e := r.prompts(req, plan)
	if e != nil {
		return nil, e
	}
	sp, e := r.sampling(params)
	if e != nil {
		return nil, e
	}
	n := max(req.Params.N, 1)
	if n > r.sched.Options().Parallel {
		return nil, llm.Errorf(llm.CodeInvalid, "n", "n must be between 1 and %d, got %d", r.sched.Options().Parallel, n)
	}
	h := llm.Header{PromptTokens: make([]int, len(prompts))}
	subs := make([]*scheduler.Stream, 0, len(prompts))
	closeAll := func() {
		for _, st := range subs {
			st.Close()
		}
	}
	for i, p := range prompts {
		h.PromptTokens[i] = len(p)
		if req.Echo {
			h.Echo = append(h.Echo, r.model.Detokenize(p))
		}
		st, err := r.sched.Submit(ctx, scheduler.Request{
			ID: req.ID, Model: req.Model, Adapter: adapter, Prompt: p, Sampling: sp,
			MaxTokens: req.Params.MaxTokens, Stop: params.Stop, IgnoreEOS: req.Params.IgnoreEOS,
			Logprobs: req.Params.Logprobs, TopLogprobs: req.Params.TopLogprobs, N: n,
			Priority: req.Params.Priority, Deadline: req.Params.Deadline,
		})
		if err != nil {
			closeAll()
			return nil, ErrorOf(err)
		}
		subs = append(subs, st)
	}
	st := newStream(r.model, h, subs, n)
	if plan != nil {
		st.outputs = make([]*chat.Output, n)
		for i := range st.outputs {
			st.outputs[i] = plan.Output()
		}
	}
	return st, nil
}

// Tokenize tokenizes a text.
func (r *Runner) Tokenize(req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	text, addSpecial, special := req.Text, req.AddSpecial, false
	if len(req.Messages) > 0 {
		plan, e := r.chat.Prepare(&llm.Request{Messages: req.Messages, Tools: req.Tools, ToolChoice: req.ToolChoice, Think: req.Think}, r.engineRender)
		if e != nil {
			return nil, e
		}
		text, addSpecial, special = plan.Prompt, true, plan.Special
	}
	toks, err := r.model.Tokenize(text, addSpecial, special)
	if err != nil {
		return nil, llm.Errorf(llm.CodeInvalid, "content", "could not tokenize: %v", err)
	}
	if toks == nil {
		toks = []int32{}
	}
	return &llm.TokenizeResult{Tokens: toks, Context: r.sched.SeqContext()}, nil
}

// Detokenize turns token ids into text.
func (r *Runner) Detokenize(req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	for _, t := range req.Tokens {
		if !r.model.ValidToken(t) {
			return nil, llm.Errorf(llm.CodeInvalid, "tokens", "token id %d is out of range [0, %d)", t, r.model.VocabSize())
		}
	}
	return &llm.DetokenizeResult{Text: r.model.Detokenize(req.Tokens)}, nil
}

// Embed computes one embedding per input.
func (r *Runner) Embed(req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	dim := r.model.EmbeddingSize()
	if req.Dimensions < 0 || req.Dimensions > dim {
		return nil, llm.Errorf(llm.CodeInvalid, "dimensions", "dimensions must be between 1 and %d", dim)
	}
	out := &llm.EmbedResult{}
	for i, in := range req.Inputs {
		toks := in.Tokens
		if !in.Tokenized {
			var err error
			if toks, err = r.model.Tokenize(in.Text, true, false); err != nil {
				return nil, llm.Errorf(llm.CodeInvalid, "input", "could not tokenize: %v", err)
			}
		}
		if len(toks) == 0 {
			return nil, llm.Errorf(llm.CodeInvalid, "input", "input %d is empty", i)
		}
		if len(toks) > r.embed.cells {
			return nil, llm.Errorf(llm.CodeContextLength, "input", "input %d is %d tokens long; embeddings take at most %d", i, len(toks), r.embed.cells)
		}
		for _, t := range toks {
			if !r.model.ValidToken(t) {
				return nil, llm.Errorf(llm.CodeInvalid, "input", "token id %d is out of range [0, %d)", t, r.model.VocabSize())
			}
		}
		v, err := r.embed.embed(toks)
		if err != nil {
			return nil, ErrorOf(err)
		}
		if req.Dimensions > 0 {
			v = renormalize(v[:req.Dimensions])
		}
		out.Vectors = append(out.Vectors, v)
		out.PromptTokens += len(toks)
	}
	return out, nil
}

// ErrorOf turns an error from the scheduler or engine into boundary data.
func ErrorOf(err error) *llm.Error {
	var (
		le *llm.Error
		ie *scheduler.InvalidRequestError
		oe *scheduler.OverloadError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le):
		return le
	case errors.As(err, &ie):
		if ie.Code == string(llm.CodeContextLength) {
			return llm.Errorf(llm.CodeContextLength, ie.Param, "%s", ie.Message)
		}
		return llm.Errorf(llm.CodeInvalid, ie.Param, "%s", ie.Message)
	case errors.As(err, &oe):
		return &llm.Error{Code: llm.CodeOverloaded, Message: oe.Error(), RetryAfter: oe.RetryAfter}
	case errors.Is(err, engine.ErrNoAllowedToken):
		return llm.Errorf(llm.CodeInvalid, "logit_bias", "the request's logit_bias and response_format leave no token the model may emit")
	case errors.Is(err, scheduler.ErrClosed):
		return llm.Errorf(llm.CodeUnavailable, "", "the model is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return llm.Errorf(llm.CodeTimeout, "", "request timed out")
	case errors.Is(err, context.Canceled):
		return llm.Errorf(llm.CodeCancelled, "", "request cancelled")
	}
	return llm.Errorf(llm.CodeInternal, "", "%v", err)
}

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
