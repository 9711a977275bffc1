package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/anthropic"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// anthropicPath says a request is on Anthropic's API, whose errors have
// Anthropic's shape.
func anthropicPath(c *gin.Context) bool { return strings.HasPrefix(c.Request.URL.Path, "/v1/messages") }

// anthropicError is an error in Anthropic's shape.
func anthropicError(e *openai.Error) anthropic.ErrorBody {
	return anthropic.ErrorBody{Type: "error", Error: anthropic.ErrorDetail{Type: anthropic.ErrorType(e.Status), Message: e.Message}}
}

func (s *Server) handleMessages(c *gin.Context) {
	var req anthropic.MessagesRequest
	if _, ok := s.parseGeneration(c, &req, &req.Model); !ok {
		return
	}
	msgs, tools, choice, think := req.Chat()
	lreq := &llm.Request{ID: requestIDOf(c), TraceParent: c.GetString(traceParentKey), Model: req.Model, Messages: msgs, Tools: tools, ToolChoice: choice, Think: think, Params: req.Params(seedFor(nil))}
	s.limits.BoundParams(&lreq.Params)
	id := newID("msg_")
	var ping func() error
	opened := false // message_start sent while the model loaded
	if req.Stream {
		// A stream kept alive opens with message_start (its input_tokens
		// not known yet: message_delta's usage has them), then pings.
		ping = func() error {
			if !opened {
				opened = true
				shell := anthropic.Response{ID: id, Type: "message", Role: "assistant", Model: req.Model, Content: []anthropic.Out{}}
				if err := writeEvent(c, "message_start", gin.H{"type": "message_start", "message": shell}); err != nil {
					return err
				}
			}
			return writeEvent(c, "ping", gin.H{"type": "ping"})
		}
	}
	st, err := s.start(c, lreq, ping)
	if err != nil {
		if c.Writer.Written() {
			s.streamError(c, err, func(e *openai.Error) { _ = writeEvent(c, "error", anthropicError(e)) })
			return
		}
		s.fail(c, err)
		return
	}
	if req.Stream {
		s.streamMessages(c, req.Model, id, st, opened)
		return
	}
	out, err := s.collect(c.Request.Context(), st, req.Model, 1, nil, nil)
	if err != nil {
		s.fail(c, err)
		return
	}
	resp := anthropic.Response{ID: id, Type: "message", Role: "assistant", Model: req.Model, Content: []anthropic.Out{}, Usage: anthropicUsage(out.gen)}
	if r := out.reasoning[0].String(); r != "" {
		resp.Content = append(resp.Content, anthropic.ThinkingOut(r))
	}
	if t := out.texts[0].String(); t != "" {
		resp.Content = append(resp.Content, anthropic.TextOut(t))
	}
	for _, call := range out.calls[0] {
		resp.Content = append(resp.Content, anthropic.ToolUse(call))
	}
	finish := llm.FinishStop
	if f := out.finish[0]; f != nil {
		finish = llm.Finish(*f)
	}
	stop := anthropic.StopReason(finish, len(out.calls[0]) > 0)
	resp.StopReason = &stop
	c.Header("Server-Timing", serverTiming(out.gen))
	c.JSON(http.StatusOK, resp)
}

// streamError ends a stream that has started with an error, written by
// send in its API's shape; nothing when the client left.
func (s *Server) streamError(c *gin.Context, err error, send func(*openai.Error)) {
	if ctx := c.Request.Context(); ctx.Err() != nil {
		cause := endedByServer(ctx)
		if cause == nil {
			return // the client left; nothing to say
		}
		err = cause
	}
	var ae *openai.Error
	if !errors.As(err, &ae) {
		ae = errorFor(err)
	}
	send(ae)
}

// anthropicUsage counts as Anthropic does: input_tokens leaves out the
// prompt tokens read from the prefix cache.
func anthropicUsage(g generation) anthropic.Usage {
	cached := g.cached()
	return anthropic.Usage{InputTokens: max(g.usage.PromptTokens-cached, 0), OutputTokens: g.usage.CompletionTokens, CacheReadInputTokens: cached}
}

// writeEvent sends one named SSE event, as Anthropic's API does.
func writeEvent(c *gin.Context, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(b)+len(name)+16)
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, b...)
	buf = append(buf, '\n', '\n')
	if _, err := c.Writer.Write(buf); err != nil {
		return err
	}
	c.Writer.Flush()
	return nil
}

// messageStream writes a Messages stream: a content block per run of one
// kind (thinking, text) and one per tool use, in Anthropic's event order.
type messageStream struct {
	c      *gin.Context
	index  int    // the open block's index
	open   string // its type ("" when none is open)
	pinged bool
	called bool
	finish llm.Finish
}

func (m *messageStream) start(kind string, block anthropic.Out) error {
	if m.open != "" {
		if err := writeEvent(m.c, "content_block_stop", gin.H{"type": "content_block_stop", "index": m.index}); err != nil {
			return err
		}
		m.index++
	}
	m.open = kind
	if err := writeEvent(m.c, "content_block_start", gin.H{"type": "content_block_start", "index": m.index, "content_block": block}); err != nil {
		return err
	}
	if !m.pinged {
		m.pinged = true
		return writeEvent(m.c, "ping", gin.H{"type": "ping"})
	}
	return nil
}

func (m *messageStream) delta(d any) error {
	return writeEvent(m.c, "content_block_delta", gin.H{"type": "content_block_delta", "index": m.index, "delta": d})
}

func (m *messageStream) event(ev llm.Event) error {
	if ev.Reasoning != "" {
		if m.open != "thinking" {
			if err := m.start("thinking", anthropic.ThinkingOut("")); err != nil {
				return err
			}
		}
		if err := m.delta(gin.H{"type": "thinking_delta", "thinking": ev.Reasoning}); err != nil {
			return err
		}
	}
	if ev.Text != "" {
		if m.open != "text" {
			if err := m.start("text", anthropic.TextOut("")); err != nil {
				return err
			}
		}
		if err := m.delta(gin.H{"type": "text_delta", "text": ev.Text}); err != nil {
			return err
		}
	}
	for _, call := range ev.ToolCalls {
		m.called = true
		use := anthropic.ToolUse(call)
		args := string(use.Input)
		use.Input = json.RawMessage("{}")
		if err := m.start("tool_use", use); err != nil {
			return err
		}
		if err := m.delta(gin.H{"type": "input_json_delta", "partial_json": args}); err != nil {
			return err
		}
	}
	if ev.Finish != "" {
		m.finish = ev.Finish
	}
	return nil
}

// streamMessages streams a message; opened says message_start (and a
// ping) went out while the model loaded.
func (s *Server) streamMessages(c *gin.Context, model, id string, st llm.Stream, opened bool) {
	m := &messageStream{c: c, pinged: opened}
	startSSE(c)
	var err error
	if !opened {
		shell := anthropic.Response{ID: id, Type: "message", Role: "assistant", Model: model, Content: []anthropic.Out{},
			Usage: anthropic.Usage{InputTokens: sum(st.Header().PromptTokens)}}
		err = writeEvent(c, "message_start", gin.H{"type": "message_start", "message": shell})
	}
	var g generation
	if err == nil {
		g, err = s.consume(c.Request.Context(), st, model, func(ev llm.Event) error {
			if ev.Error != nil {
				return ev.Error
			}
			return m.event(ev)
		})
	} else {
		st.Close()
	}
	if err != nil || c.Request.Context().Err() != nil {
		s.streamError(c, err, func(e *openai.Error) { _ = writeEvent(c, "error", anthropicError(e)) })
		return
	}
	if m.open != "" {
		_ = writeEvent(c, "content_block_stop", gin.H{"type": "content_block_stop", "index": m.index})
	}
	if m.finish == "" {
		m.finish = llm.FinishStop
	}
	u := anthropicUsage(g)
	_ = writeEvent(c, "message_delta", gin.H{"type": "message_delta",
		"delta": gin.H{"stop_reason": anthropic.StopReason(m.finish, m.called), "stop_sequence": nil},
		"usage": gin.H{"output_tokens": u.OutputTokens, "input_tokens": u.InputTokens, "cache_read_input_tokens": u.CacheReadInputTokens}})
	_ = writeEvent(c, "message_stop", gin.H{"type": "message_stop"})
	c.Writer.Header().Set("Server-Timing", serverTiming(g))
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func (s *Server) handleCountTokens(c *gin.Context) {
	var req anthropic.CountTokensRequest
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if !s.settleModel(c, &req.Model) {
		return
	}
	if e := req.Validate(s.limits); e != nil {
		s.fail(c, e)
		return
	}
	msgs, tools, choice, think := req.Chat()
	res, e := s.backend.Tokenize(c.Request.Context(), &llm.TokenizeRequest{Model: req.Model, Messages: msgs, Tools: tools, ToolChoice: choice, Think: think})
	if e != nil {
		s.fail(c, e)
		return
	}
	c.JSON(http.StatusOK, gin.H{"input_tokens": len(res.Tokens)})
}
