package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// generation is the outcome of one HTTP request's generation.
type generation struct {
	usage   openai.Usage
	timings llm.Timings
}

// start submits req to the backend. For a stream (ping set), while
// Generate waits — a cold model loading, a replica starting — past
// KeepAliveInterval the response is opened and ping writes a keep-alive
// every interval, so a proxy does not cut the idle connection; a failure
// after that must be reported in the stream (the caller checks
// c.Writer.Written()).
func (s *Server) start(c *gin.Context, req *llm.Request, ping func() error) (llm.Stream, error) {
	ctx := c.Request.Context()
	if ping == nil {
		st, e := s.backend.Generate(ctx, req)
		if e != nil {
			return nil, e
		}
		return st, nil
	}
	type started struct {
		st llm.Stream
		e  *llm.Error
	}
	done := make(chan started, 1)
	go func() {
		st, e := s.backend.Generate(ctx, req)
		done <- started{st, e}
	}()
	tick := time.NewTicker(s.opts.KeepAliveInterval)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if r.e != nil {
				return nil, r.e
			}
			return r.st, nil
		case <-tick.C:
			startSSE(c)
			if err := ping(); err != nil {
				r := <-done // the client left: Generate ends with ctx
				if r.st != nil {
					r.st.Close()
				}
				return nil, err
			}
		}
	}
}

// sseComment is the keep-alive of the OpenAI APIs' streams: an SSE
// comment line, which clients ignore.
func sseComment(c *gin.Context) func() error {
	return func() error {
		if _, err := c.Writer.Write([]byte(": keep-alive\n\n")); err != nil {
			return err
		}
		c.Writer.Flush()
		return nil
	}
}

// consume hands st's events to onEvent in the calling goroutine, in
// arrival order, and returns the request's usage once the stream has
// ended, or when onEvent fails (the client went away), abandoning the
// rest. The stream is closed on return.
func (s *Server) consume(ctx context.Context, st llm.Stream, model string, onEvent func(llm.Event) error) (generation, error) {
	defer st.Close()
	var g generation
	var firstErr error
	var last []time.Time                        // each choice's last token, for inter-token latency
	itl := s.metrics.itl.WithLabelValues(model) // looked up once, not per token
	for {
		ev, ok := st.Recv(ctx)
		if !ok {
			if firstErr == nil {
				firstErr = ctx.Err()
			}
			break
		}
		if ev.Final {
			if u := ev.Usage; u != nil {
				g.usage.PromptTokens, g.usage.CompletionTokens = u.PromptTokens, u.CompletionTokens
				if u.CachedTokens > 0 {
					g.usage.PromptTokensDetails = &openai.PromptTokensDetails{CachedTokens: u.CachedTokens}
				}
				if u.ReasoningTokens > 0 {
					g.usage.CompletionTokensDetails = &openai.CompletionTokensDetails{ReasoningTokens: u.ReasoningTokens}
				}
				g.timings = u.Timings
			}
			if ev.Error != nil && firstErr == nil {
				firstErr = ev.Error
			}
			break
		}
		if firstErr != nil {
			continue
		}
		if ev.Text != "" || ev.Reasoning != "" || len(ev.Tokens) > 0 {
			at := time.Now()
			for len(last) <= ev.Index {
				last = append(last, time.Time{})
			}
			if prev := last[ev.Index]; !prev.IsZero() {
				itl.Observe(at.Sub(prev).Seconds())
			}
			last[ev.Index] = at
		}
		if err := onEvent(ev); err != nil {
			firstErr = err
			st.Close()
		}
	}
	g.usage.TotalTokens = g.usage.PromptTokens + g.usage.CompletionTokens
	s.metrics.observe(model, g)
	requestLogOf(ctx).setGeneration(g)
	return g, firstErr
}

// collected is the whole output of a non-streamed request.
type collected struct {
	texts     []strings.Builder
	reasoning []strings.Builder
	calls     [][]llm.ToolCall
	finish    []*string
	gen       generation
}

// collect runs a non-streamed request: it gathers each choice's text and
// finish reason (texts start with prefix(i), for echo), hands every event to
// each (for log-probabilities), and turns the first choice error into the
// request's error.
func (s *Server) collect(ctx context.Context, st llm.Stream, model string, choices int, prefix func(int) string, each func(llm.Event)) (*collected, error) {
	out := &collected{texts: make([]strings.Builder, choices), reasoning: make([]strings.Builder, choices), calls: make([][]llm.ToolCall, choices), finish: make([]*string, choices)}
	if prefix != nil {
		for i := range out.texts {
			out.texts[i].WriteString(prefix(i))
		}
	}
	var choiceErr error
	g, err := s.consume(ctx, st, model, func(ev llm.Event) error {
		out.texts[ev.Index].WriteString(ev.Text)
		out.reasoning[ev.Index].WriteString(ev.Reasoning)
		out.calls[ev.Index] = append(out.calls[ev.Index], ev.ToolCalls...)
		if each != nil {
			each(ev)
		}
		if ev.Finish != "" {
			out.finish[ev.Index] = finishString(ev.Finish)
		}
		if ev.Error != nil && choiceErr == nil {
			choiceErr = ev.Error
		}
		return nil
	})
	out.gen = g
	if err == nil {
		err = choiceErr
	}
	return out, err
}

// seedFor returns the request's seed, or a random one.
func seedFor(seed *int64) uint32 {
	if seed != nil {
		return uint32(*seed)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func finishString(f llm.Finish) *string {
	var s string
	switch f {
	case llm.FinishStop:
		s = "stop"
	case llm.FinishLength:
		s = "length"
	default:
		return nil
	}
	return &s
}

// serverTiming renders the phases of a request for the Server-Timing
// header (or trailer, on a stream), and the prompt tokens it reused.
func serverTiming(g generation) string {
	t := g.timings
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	var parts []string
	if t.Start > 0 {
		parts = append(parts, "start;dur="+ms(t.Start))
	}
	if t.Load > 0 {
		parts = append(parts, "load;dur="+ms(t.Load))
	}
	parts = append(parts, "queue;dur="+ms(t.Queued), "prefill;dur="+ms(t.Prefill), "decode;dur="+ms(t.Decode))
	parts = append(parts, fmt.Sprintf("reused;desc=%d", g.cached()))
	return strings.Join(parts, ", ")
}

// cached is the prompt tokens the request reused from the prefix cache.
func (g generation) cached() int {
	if d := g.usage.PromptTokensDetails; d != nil {
		return d.CachedTokens
	}
	return 0
}

// timingsOf is the timings object of a stream's final chunk.
func timingsOf(g generation) *openai.Timings {
	t := g.timings
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rate := func(n int, d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		return float64(n) / d.Seconds()
	}
	evaluated := max(g.usage.PromptTokens-g.cached(), 0)
	return &openai.Timings{
		QueueMs: ms(t.Queued), LoadMs: ms(t.Load), StartMs: ms(t.Start), TTFTMs: ms(t.TTFT),
		CacheN: g.cached(), PromptN: evaluated, PromptMs: ms(t.Prefill), PromptPerSecond: rate(evaluated, t.Prefill),
		PredictedN: g.usage.CompletionTokens, PredictedMs: ms(t.Decode), PredictedPerSecond: rate(g.usage.CompletionTokens, t.Decode),
	}
}

// fingerprint is the system_fingerprint of responses from a model.
func (s *Server) fingerprint(model string) string {
	sum := sha256.Sum256([]byte(s.opts.Version + "|" + model))
	return "fp_llmux_" + hex.EncodeToString(sum[:5])
}

// parseGeneration decodes and validates a chat or completions request and
// resolves its model (the multiplex headers win over the body's field),
// answering the client itself on failure.
func (s *Server) parseGeneration(c *gin.Context, req interface {
	Validate(openai.Limits, openai.ModelInfo) *openai.Error
	ApplyDefaults(*llm.SamplingDefaults)
}, model *string) (llm.ModelInfo, bool) {
	if e := s.decode(c, req); e != nil {
		s.fail(c, e)
		return llm.ModelInfo{}, false
	}
	return s.checkGeneration(c, req, model)
}

// checkGeneration resolves a decoded request's model, gives it the
// model's sampling defaults and validates it against the model's facts,
// answering the client itself on failure.
func (s *Server) checkGeneration(c *gin.Context, req interface {
	Validate(openai.Limits, openai.ModelInfo) *openai.Error
	ApplyDefaults(*llm.SamplingDefaults)
}, model *string) (llm.ModelInfo, bool) {
	if !s.settleModel(c, model) {
		return llm.ModelInfo{}, false
	}
	mi, e := s.backend.Info(c.Request.Context(), *model)
	if e != nil {
		s.fail(c, e)
		return mi, false
	}
	requestLogOf(c.Request.Context()).setModel(*model, mi.Parent)
	req.ApplyDefaults(mi.Defaults) // the model's sampling: settings, where the request is silent
	if e := req.Validate(s.limits, openai.ModelInfo{VocabSize: mi.VocabSize, Context: mi.Context, Parallel: mi.Parallel}); e != nil {
		s.fail(c, e)
		return mi, false
	}
	return mi, true
}

// settleModel decides the request's model: a multiplex header wins over
// the body's field; with neither, the one model served, when exactly one
// name is servable (as llama.cpp's server does); else a 400. It answers
// the client itself on failure.
func (s *Server) settleModel(c *gin.Context, model *string) bool {
	if h := modelHeader(c); h != "" {
		*model = h
	}
	if *model != "" {
		return true
	}
	if ms := s.backend.Models(c.Request.Context()); len(ms) == 1 {
		*model = ms[0].ID
		return true
	}
	s.fail(c, openai.Invalid("model", "you must provide a model parameter (this server serves more than one model)"))
	return false
}

// modelHeader is the model a multiplex header names: llmux's own, or Ray
// Serve's.
func modelHeader(c *gin.Context) string {
	if h := c.GetHeader(multiplexHeader); h != "" {
		return h
	}
	return c.GetHeader(rayMultiplexHeader)
}

const (
	multiplexHeader    = "llmux-multiplexed-model-id"
	rayMultiplexHeader = "serve_multiplexed_model_id"
)

func bytesOf(b []byte) []int {
	out := make([]int, len(b))
	for i, x := range b {
		out[i] = int(x)
	}
	return out
}
