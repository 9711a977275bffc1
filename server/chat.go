package server

import (
	"errors"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// chatMessages turns the request's messages (tools rendered as text) into
// boundary messages.
func chatMessages(msgs []openai.Message) []llm.Message {
	out := make([]llm.Message, len(msgs))
	for i, m := range msgs {
		out[i] = llm.Message{Role: m.Role, Content: m.Content.Text}
	}
	return out
}

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
	lreq := &llm.Request{ID: requestIDOf(c), TraceParent: c.GetString(traceParentKey), Model: req.Model, Messages: chatMessages(req.TemplateMessages()), Params: req.Params(top, seedFor(req.Seed))}
	lreq.Params.SeedGiven = req.Seed != nil
	s.limits.BoundParams(&lreq.Params)
	st, err := s.start(c.Request.Context(), lreq)
	if err != nil {
		s.fail(c, err)
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
	tools := req.ToolsActive()
	for i := range n {
		content := out.texts[i].String()
		ch := openai.ChatChoice{Index: i, Message: openai.AssistantMsg{Role: "assistant", Content: &content}, FinishReason: out.finish[i]}
		if tools {
			text, calls := openai.ParseToolOutput(content)
			ch.Message.Content = &text
			if len(calls) > 0 {
				ch.Message.Content, ch.Message.ToolCalls, ch.FinishReason = nil, withCallIDs(calls, false), strp("tool_calls")
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
	var toolStreams map[int]*openai.ToolStream
	if req.ToolsActive() {
		toolStreams = make(map[int]*openai.ToolStream, n)
		for i := range n {
			toolStreams[i] = &openai.ToolStream{}
		}
	}
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
		t := ev.Text
		if ts := toolStreams[ev.Index]; ts != nil {
			t = ts.Add(t)
			if ev.Finish != "" {
				rest, calls := ts.Finish()
				t += rest
				if len(calls) > 0 {
					choice.Delta.ToolCalls, choice.FinishReason = withCallIDs(calls, true), strp("tool_calls")
				}
			}
		}
		if t != "" {
			choice.Delta.Content = &t
		}
		if req.Logprobs && len(ev.Tokens) > 0 {
			lp := s.chatLogprobs(ev.Tokens)
			choice.Logprobs = &openai.ChatLogprobs{Content: lp}
		}
		if choice.Delta.Content == nil && choice.Delta.ToolCalls == nil && choice.FinishReason == nil && choice.Logprobs == nil {
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

// withCallIDs gives each parsed tool call an ID (and, for a streamed
// delta, its index among the choice's calls).
func withCallIDs(calls []openai.ToolCall, indexed bool) []openai.ToolCall {
	for i := range calls {
		calls[i].ID = newID("call_")
		if indexed {
			calls[i].Index = &i
		}
	}
	return calls
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
