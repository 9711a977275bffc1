package server

import (
	"errors"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

// renderChat turns messages into the prompt text with the model's chat
// template. A model without a template llama.cpp recognizes gets the
// documented fallback: the message contents joined by blank lines, with no
// role markers (so a plain language model such as stories260K continues
// the user's text).
func (s *Server) renderChat(msgs []openai.Message) (text string, templated bool) {
	cm := make([]engine.ChatMessage, len(msgs))
	for i, m := range msgs {
		cm[i] = engine.ChatMessage{Role: m.Role, Content: m.Content.Text}
	}
	if out, err := engine.ApplyChatTemplate(s.model.ChatTemplate(), cm, true); err == nil {
		return out, true
	}
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Content.Text != "" {
			parts = append(parts, m.Content.Text)
		}
	}
	return strings.Join(parts, "\n\n"), false
}

func (s *Server) handleChat(c *gin.Context) {
	var req openai.ChatRequest
	mi, ok := s.parseGeneration(c, &req, &req.Model)
	if !ok {
		return
	}
	text, templated := s.renderChat(req.TemplateMessages())
	prompt, err := s.model.Tokenize(text, true, templated)
	if err != nil {
		s.fail(c, openai.Invalid("messages", "could not tokenize the messages: %v", err))
		return
	}
	top := -1
	if req.Logprobs {
		top = 0
		if req.TopLogprobs != nil {
			top = *req.TopLogprobs
		}
	}
	sreq, e := req.Request(prompt, top, seedFor(req.Seed))
	if e != nil {
		s.fail(c, e)
		return
	}
	sreq.ID, sreq.Model = requestIDOf(c), req.Model
	if len(prompt) >= mi.Context {
		s.fail(c, openai.InvalidCode("messages", "context_length_exceeded", "the messages are %d tokens long, but this model's context holds %d", len(prompt), mi.Context))
		return
	}
	id := newID("chatcmpl-")
	created := time.Now().Unix()
	if req.Stream {
		s.streamChat(c, req, sreq, id, created)
		return
	}
	n := sreq.N
	var lps []*openai.ChatLogprobs
	var each func(choiceEvent)
	if req.Logprobs {
		lps = make([]*openai.ChatLogprobs, n)
		for i := range lps {
			lps[i] = &openai.ChatLogprobs{Content: []openai.TokenLogprob{}}
		}
		each = func(ev choiceEvent) {
			lps[ev.Index].Content = append(lps[ev.Index].Content, s.chatLogprobs(ev.Tokens)...)
		}
	}
	out, err := s.collect(c.Request.Context(), []scheduler.Request{sreq}, n, nil, each)
	if err != nil {
		s.fail(c, err)
		return
	}
	resp := openai.ChatCompletion{ID: id, Object: "chat.completion", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint, Usage: &out.gen.usage}
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
	c.Header("Server-Timing", serverTiming(out.gen.timings))
	c.JSON(200, resp)
}

func (s *Server) chatLogprobs(toks []scheduler.TokenInfo) []openai.TokenLogprob {
	out := make([]openai.TokenLogprob, 0, len(toks))
	for _, t := range toks {
		lp := openai.TokenLogprob{Token: string(t.Piece), Logprob: float64(t.Logprob), Bytes: bytesOf(t.Piece), TopLogprobs: []openai.TopLogprob{}}
		for _, alt := range t.Top {
			p := s.model.Piece(alt.Token)
			lp.TopLogprobs = append(lp.TopLogprobs, openai.TopLogprob{Token: string(p), Logprob: float64(alt.Logprob), Bytes: bytesOf(p)})
		}
		out = append(out, lp)
	}
	return out
}

func (s *Server) streamChat(c *gin.Context, req openai.ChatRequest, sreq scheduler.Request, id string, created int64) {
	chunk := func(choices []openai.ChatChunkChoice) openai.ChatChunk {
		return openai.ChatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint, Choices: choices}
	}
	var toolStreams map[int]*openai.ToolStream
	if req.ToolsActive() {
		toolStreams = make(map[int]*openai.ToolStream, sreq.N)
		for i := range sreq.N {
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
		for i := range sreq.N {
			if err := writeSSE(c, chunk([]openai.ChatChunkChoice{{Index: i, Delta: openai.ChatDelta{Role: "assistant", Content: &empty}}})); err != nil {
				return err
			}
		}
		return nil
	}
	g, err := s.generate(c.Request.Context(), []scheduler.Request{sreq}, func(ev choiceEvent) error {
		if err := begin(); err != nil {
			return err
		}
		if ev.Err != nil {
			return ev.Err
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
	s.endStream(c, started, err, func() any {
		ch := chunk([]openai.ChatChunkChoice{})
		ch.Usage = &g.usage
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
// (when asked) and [DONE].
func (s *Server) endStream(c *gin.Context, started bool, err error, usage func() any, so *openai.StreamOptions) {
	if c.Request.Context().Err() != nil {
		return // the client left; nothing to say
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
}
