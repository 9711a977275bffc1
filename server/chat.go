package server

import (
	"errors"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

func (s *Server) handleChat(c *gin.Context) {
	var req openai.ChatRequest
	_, ok := s.parseGeneration(c, &req, &req.Model)
	if !ok {
		return
	}
	top := -1
	if req.Logprobs {
		top = 0
		if req.TopLogprobs != nil {
			top = *req.TopLogprobs
		}
	}
	lreq := &llm.Request{ID: requestIDOf(c), TraceParent: c.GetString(traceParentKey), Model: req.Model, Messages: req.LLMMessages(), Params: req.Params(top, seedFor(req.Seed)), Think: req.ThinkMode()}
	lreq.Tools, lreq.ToolChoice = req.LLMTools()
	lreq.Params.SeedGiven = req.Seed != nil
	s.limits.BoundParams(&lreq.Params)
	var ping func() error
	if req.Stream {
		ping = sseComment(c)
	}
	st, err := s.start(c, lreq, ping)
	if err != nil {
		s.endStream(c, c.Writer.Written(), err, generation{}, nil, nil)
		return
	}
	id := newID("chatcmpl-")
	created := time.Now().Unix()
	n := max(lreq.Params.N, 1)
	if req.Stream {
		s.streamChat(c, req, st, n, id, created)
		return
	}
	var lps []*openai.ChatLogprobs
	var each func(llm.Event)
	if req.Logprobs {
		lps = make([]*openai.ChatLogprobs, n)
		for i := range lps {
			lps[i] = &openai.ChatLogprobs{Content: []openai.TokenLogprob{}}
		}
		each = func(ev llm.Event) {
			lps[ev.Index].Content = append(lps[ev.Index].Content, s.chatLogprobs(ev.Tokens)...)
		}
	}
	out, err := s.collect(c.Request.Context(), st, req.Model, n, nil, each)
	if err != nil {
		s.fail(c, err)
		return
	}
	resp := openai.ChatCompletion{ID: id, Object: "chat.completion", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint(req.Model), Usage: &out.gen.usage}
	for i := range n {
		content := out.texts[i].String()
		ch := openai.ChatChoice{Index: i, Message: openai.AssistantMsg{Role: "assistant", Content: &content, ReasoningContent: out.reasoning[i].String()}, FinishReason: out.finish[i]}
		if calls := out.calls[i]; len(calls) > 0 {
			ch.Message.ToolCalls, ch.FinishReason = openai.ToolCalls(calls, false), callsFinish(out.finish[i])
			if content == "" {
				ch.Message.Content = nil
			}
		}
		if lps != nil {
			ch.Logprobs = lps[i]
		}
		resp.Choices = append(resp.Choices, ch)
	}
	c.Header("Server-Timing", serverTiming(out.gen))
	c.JSON(200, resp)
}

func (s *Server) chatLogprobs(toks []llm.Token) []openai.TokenLogprob {
	out := make([]openai.TokenLogprob, 0, len(toks))
	for _, t := range toks {
		lp := openai.TokenLogprob{Token: string(t.Bytes), Logprob: float64(t.Logprob), Bytes: bytesOf(t.Bytes), TopLogprobs: []openai.TopLogprob{}}
		for _, alt := range t.Top {
			lp.TopLogprobs = append(lp.TopLogprobs, openai.TopLogprob{Token: string(alt.Bytes), Logprob: float64(alt.Logprob), Bytes: bytesOf(alt.Bytes)})
		}
		out = append(out, lp)
	}
	return out
}

func (s *Server) streamChat(c *gin.Context, req openai.ChatRequest, st llm.Stream, n int, id string, created int64) {
	fp := s.fingerprint(req.Model)
	chunk := func(choices []openai.ChatChunkChoice) openai.ChatChunk {
		return openai.ChatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model, SystemFingerprint: fp, Choices: choices}
	}
	called := make([]bool, n)
	started := false
	begin := func() error {
		if started {
			return nil
		}
		started = true
		startSSE(c)
		// Each choice opens with the assistant role, as OpenAI does.
		empty := ""
		for i := range n {
			if err := writeSSE(c, chunk([]openai.ChatChunkChoice{{Index: i, Delta: openai.ChatDelta{Role: "assistant", Content: &empty}}})); err != nil {
				return err
			}
		}
		return nil
	}
	g, err := s.consume(c.Request.Context(), st, req.Model, func(ev llm.Event) error {
		if err := begin(); err != nil {
			return err
		}
		if ev.Error != nil {
			return ev.Error
		}
		choice := openai.ChatChunkChoice{Index: ev.Index, FinishReason: finishString(ev.Finish)}
		if t := ev.Text; t != "" {
			choice.Delta.Content = &t
		}
		choice.Delta.ReasoningContent = ev.Reasoning
		if len(ev.ToolCalls) > 0 {
			choice.Delta.ToolCalls = openai.ToolCalls(ev.ToolCalls, true)
			called[ev.Index] = true
		}
		if called[ev.Index] && choice.FinishReason != nil {
			choice.FinishReason = callsFinish(choice.FinishReason)
		}
		if req.Logprobs && len(ev.Tokens) > 0 {
			lp := s.chatLogprobs(ev.Tokens)
			choice.Logprobs = &openai.ChatLogprobs{Content: lp}
		}
		if choice.Delta.Content == nil && choice.Delta.ReasoningContent == "" && choice.Delta.ToolCalls == nil && choice.FinishReason == nil && choice.Logprobs == nil {
			return nil // text held back (partial rune or stop string)
		}
		if err := writeSSE(c, chunk([]openai.ChatChunkChoice{choice})); err != nil {
			return err
		}
		if s.traceWrite != nil && choice.Delta.Content != nil {
			s.traceWrite(requestIDOf(c), ev.At)
		}
		return nil
	})
	s.endStream(c, started, err, g, func() any {
		ch := chunk([]openai.ChatChunkChoice{})
		ch.Usage, ch.Timings = &g.usage, timingsOf(g)
		return ch
	}, req.StreamOptions)
}

// callsFinish is the finish reason of a choice that called tools:
// "tool_calls" where the model stopped by itself, else what it was
// ("length" for a call cut off).
func callsFinish(f *string) *string {
	if f == nil || *f == "stop" {
		return strp("tool_calls")
	}
	return f
}

func strp(s string) *string { return &s }

// endStream finishes an SSE response: an error before anything was sent is
// a normal error response; after, an error event. Then the usage chunk
// (when asked, with the timings object) and [DONE], and the Server-Timing
// trailer.
func (s *Server) endStream(c *gin.Context, started bool, err error, g generation, usage func() any, so *openai.StreamOptions) {
	if ctx := c.Request.Context(); ctx.Err() != nil {
		cause := endedByServer(ctx)
		if cause == nil {
			return // the client left; nothing to say
		}
		err = cause
	}
	if err != nil {
		if !started {
			s.fail(c, err)
			return
		}
		var ae *openai.Error
		if !errors.As(err, &ae) {
			ae = errorFor(err)
		}
		writeSSEError(c, ae)
		return
	}
	if !started {
		startSSE(c)
	}
	if so != nil && so.IncludeUsage {
		_ = writeSSE(c, usage())
	}
	writeSSEDone(c)
	c.Writer.Header().Set("Server-Timing", serverTiming(g))
}
