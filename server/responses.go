package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/middleware"
	"github.com/llmux/llmux/openai"
)

// owner identifies who may see a stored response: a digest of the
// request's API key ("" when the server runs without keys).
func owner(c *gin.Context) string {
	key, ok := middleware.RequestKey(c.Request)
	if !ok {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func (s *Server) handleResponses(c *gin.Context) {
	var req openai.ResponsesRequest
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	var history []openai.Message
	if id := req.PreviousResponseID; id != "" {
		prev, ok := s.responses.get(id, owner(c))
		if !ok {
			s.fail(c, openai.NotFound("previous_response_id", "previous_response_not_found", "Previous response with id '%s' not found.", clip(id)))
			return
		}
		history = prev.history
		if req.Model == "" && modelHeader(c) == "" {
			req.Model = prev.resp.Model
		}
	}
	chat, added, e := req.Chat(history)
	if e != nil {
		s.fail(c, e)
		return
	}
	if _, ok := s.checkGeneration(c, chat, &chat.Model); !ok {
		return
	}
	lreq := &llm.Request{ID: requestIDOf(c), TraceParent: c.GetString(traceParentKey), Model: chat.Model, Messages: chat.LLMMessages(), Params: chat.Params(-1, seedFor(nil)), Think: chat.ThinkMode()}
	lreq.Tools, lreq.ToolChoice = chat.LLMTools()
	s.limits.BoundParams(&lreq.Params)
	var ping func() error
	if req.Stream {
		ping = sseComment(c)
	}
	st, err := s.start(c, lreq, ping)
	if err != nil {
		if c.Writer.Written() {
			s.streamError(c, err, func(e *openai.Error) {
				_ = writeEvent(c, "error", gin.H{"type": "error", "sequence_number": 0, "code": errorCode(e), "message": e.Message})
			})
			return
		}
		s.fail(c, err)
		return
	}
	r := &responseRun{s: s, c: c, req: &req, chat: chat, added: added, history: history, resp: s.responseShell(&req, chat)}
	if req.Stream {
		r.stream(st)
		return
	}
	out, err := s.collect(c.Request.Context(), st, chat.Model, 1, nil, nil)
	if err != nil {
		s.fail(c, err)
		return
	}
	var items []openai.ResponseItem
	if t := out.reasoning[0].String(); t != "" {
		items = append(items, reasoningItem(t))
	}
	if t := out.texts[0].String(); t != "" {
		items = append(items, messageItem(t))
	}
	for _, call := range out.calls[0] {
		items = append(items, callItem(call))
	}
	r.finish(items, out.finish[0], out.gen)
	c.Header("Server-Timing", serverTiming(out.gen))
	c.JSON(http.StatusOK, r.resp)
}

// responseShell is the response object before any output: the request's
// settings echoed back.
func (s *Server) responseShell(req *openai.ResponsesRequest, chat *openai.ChatRequest) openai.Response {
	resp := openai.Response{ID: newID("resp_"), Object: "response", CreatedAt: time.Now().Unix(), Status: "in_progress", Model: chat.Model,
		Output: []openai.ResponseItem{}, MaxOutputTokens: req.MaxOutputTokens, Temperature: req.Temperature, TopP: req.TopP,
		ParallelToolCalls: req.ParallelToolCalls == nil || *req.ParallelToolCalls, Tools: req.Tools, Reasoning: req.Reasoning,
		Store: req.Stored(), Metadata: req.Metadata, ToolChoice: req.ToolChoice}
	if resp.Tools == nil {
		resp.Tools = []openai.ResponsesTool{}
	}
	if len(resp.ToolChoice) == 0 {
		resp.ToolChoice = json.RawMessage(`"auto"`)
	}
	if resp.Metadata == nil {
		resp.Metadata = map[string]string{}
	}
	if req.Instructions != "" {
		resp.Instructions = &req.Instructions
	}
	if req.PreviousResponseID != "" {
		resp.PreviousResponseID = &req.PreviousResponseID
	}
	resp.Text = openai.ResponsesText{Format: &openai.ResponsesFormat{Type: "text"}}
	if req.Text != nil && req.Text.Format != nil {
		resp.Text = *req.Text
	}
	return resp
}

func reasoningItem(text string) openai.ResponseItem {
	return openai.ResponseItem{ID: newID("rs_"), Type: "reasoning", Summary: []openai.ResponsesPart{}, Content: []openai.OutputPart{{Type: "reasoning_text", Text: text}}}
}

func messageItem(text string) openai.ResponseItem {
	return openai.ResponseItem{ID: newID("msg_"), Type: "message", Status: "completed", Role: "assistant", Content: []openai.OutputPart{{Type: "output_text", Text: text, Annotations: []any{}}}}
}

func callItem(call llm.ToolCall) openai.ResponseItem {
	args := call.Arguments
	return openai.ResponseItem{ID: newID("fc_"), Type: "function_call", Status: "completed", CallID: call.ID, Name: call.Name, Arguments: &args}
}

// responseRun is one Responses request being answered.
type responseRun struct {
	s       *Server
	c       *gin.Context
	req     *openai.ResponsesRequest
	chat    *openai.ChatRequest
	added   []openai.Message
	history []openai.Message
	resp    openai.Response
}

// finish completes the response object with its output and usage, and
// stores it (with the conversation it ends) unless store is false.
func (r *responseRun) finish(items []openai.ResponseItem, finish *string, g generation) {
	r.resp.Output = items
	if r.resp.Output == nil {
		r.resp.Output = []openai.ResponseItem{}
	}
	r.resp.Status = "completed"
	if finish != nil && *finish == string(llm.FinishLength) {
		r.resp.Status, r.resp.IncompleteDetails = "incomplete", &openai.Incomplete{Reason: "max_output_tokens"}
	}
	r.resp.Usage = openai.ResponsesUsageOf(g.usage)
	if !r.req.Stored() {
		return
	}
	answer := openai.Message{Role: "assistant", Content: openai.Content{Null: true}}
	for _, it := range items {
		switch it.Type {
		case "message":
			answer.Content = openai.Content{Text: it.Content[0].Text}
		case "reasoning":
			answer.ReasoningContent = it.Content[0].Text
		case "function_call":
			answer.ToolCalls = append(answer.ToolCalls, openai.ToolCall{ID: it.CallID, Type: "function", Function: openai.FunctionCall{Name: it.Name, Arguments: *it.Arguments}})
		}
	}
	history := append(append(append([]openai.Message(nil), r.history...), r.added...), answer)
	size := int64(0)
	if b, err := json.Marshal(history); err == nil {
		size += int64(len(b))
	}
	if b, err := json.Marshal(r.resp); err == nil {
		size += int64(len(b))
	}
	r.s.responses.put(&storedResponse{id: r.resp.ID, owner: owner(r.c), created: time.Now(), resp: r.resp, history: history, size: size})
}

// stream answers with the Responses API's events: the lifecycle, then per
// output item its added, deltas and done events, then completed (or
// incomplete, or failed).
func (r *responseRun) stream(st llm.Stream) {
	c := r.c
	seq := 0
	send := func(typ string, fields gin.H) error {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return writeEvent(c, typ, fields)
	}
	startSSE(c)
	var items []openai.ResponseItem
	open := "" // the kind of the item being streamed: "message" or "reasoning"
	closeItem := func() error {
		if open == "" {
			return nil
		}
		i := len(items) - 1
		it := &items[i]
		it.Status = "completed"
		part := it.Content[0]
		var err error
		if open == "message" {
			err = errors.Join(send("response.output_text.done", gin.H{"item_id": it.ID, "output_index": i, "content_index": 0, "text": part.Text}),
				send("response.content_part.done", gin.H{"item_id": it.ID, "output_index": i, "content_index": 0, "part": part}))
		} else {
			it.Status = ""
			err = send("response.reasoning_text.done", gin.H{"item_id": it.ID, "output_index": i, "content_index": 0, "text": part.Text})
		}
		open = ""
		return errors.Join(err, send("response.output_item.done", gin.H{"output_index": i, "item": *it}))
	}
	openItem := func(kind string) error {
		if err := closeItem(); err != nil {
			return err
		}
		var it openai.ResponseItem
		if kind == "message" {
			it = messageItem("")
			it.Status = "in_progress"
		} else {
			it = reasoningItem("")
		}
		items = append(items, it)
		open = kind
		i := len(items) - 1
		shell := it
		shell.Content = []openai.OutputPart{}
		if err := send("response.output_item.added", gin.H{"output_index": i, "item": shell}); err != nil {
			return err
		}
		if kind == "message" {
			return send("response.content_part.added", gin.H{"item_id": it.ID, "output_index": i, "content_index": 0, "part": it.Content[0]})
		}
		return nil
	}
	appendText := func(kind, text, event string) error {
		if open != kind {
			if err := openItem(kind); err != nil {
				return err
			}
		}
		i := len(items) - 1
		items[i].Content[0].Text += text
		return send(event, gin.H{"item_id": items[i].ID, "output_index": i, "content_index": 0, "delta": text})
	}
	err := errors.Join(send("response.created", gin.H{"response": r.resp}), send("response.in_progress", gin.H{"response": r.resp}))
	var g generation
	var finish *string
	if err == nil {
		g, err = r.s.consume(c.Request.Context(), st, r.chat.Model, func(ev llm.Event) error {
			if ev.Error != nil {
				return ev.Error
			}
			if ev.Reasoning != "" {
				if err := appendText("reasoning", ev.Reasoning, "response.reasoning_text.delta"); err != nil {
					return err
				}
			}
			if ev.Text != "" {
				if err := appendText("message", ev.Text, "response.output_text.delta"); err != nil {
					return err
				}
			}
			for _, call := range ev.ToolCalls {
				if err := closeItem(); err != nil {
					return err
				}
				it := callItem(call)
				args := *it.Arguments
				it.Status, it.Arguments = "in_progress", new(string)
				items = append(items, it)
				i := len(items) - 1
				done := it
				done.Status, done.Arguments = "completed", &args
				if err := errors.Join(send("response.output_item.added", gin.H{"output_index": i, "item": it}),
					send("response.function_call_arguments.delta", gin.H{"item_id": it.ID, "output_index": i, "delta": args}),
					send("response.function_call_arguments.done", gin.H{"item_id": it.ID, "output_index": i, "arguments": args}),
					send("response.output_item.done", gin.H{"output_index": i, "item": done})); err != nil {
					return err
				}
				items[i] = done
			}
			if ev.Finish != "" {
				finish = finishString(ev.Finish)
			}
			return nil
		})
	} else {
		st.Close()
	}
	if err == nil && c.Request.Context().Err() == nil {
		err = closeItem()
	}
	if err != nil || c.Request.Context().Err() != nil {
		r.s.streamError(c, err, func(e *openai.Error) {
			r.resp.Status, r.resp.Output = "failed", items
			r.resp.Error = &openai.ResponseError{Code: errorCode(e), Message: e.Message}
			_ = send("response.failed", gin.H{"response": r.resp})
		})
		return
	}
	r.finish(items, finish, g)
	end := "response.completed"
	if r.resp.Status == "incomplete" {
		end = "response.incomplete"
	}
	_ = send(end, gin.H{"response": r.resp})
	c.Writer.Header().Set("Server-Timing", serverTiming(g))
}

func (s *Server) handleGetResponse(c *gin.Context) {
	r, ok := s.responses.get(c.Param("id"), owner(c))
	if !ok {
		s.fail(c, openai.NotFound("id", "response_not_found", "Response with id '%s' not found.", clip(c.Param("id"))))
		return
	}
	c.JSON(http.StatusOK, r.resp)
}

func (s *Server) handleDeleteResponse(c *gin.Context) {
	id := c.Param("id")
	if !s.responses.delete(id, owner(c)) {
		s.fail(c, openai.NotFound("id", "response_not_found", "Response with id '%s' not found.", clip(id)))
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": id, "object": "response", "deleted": true})
}

// errorCode is an error's code, or its type when it has none.
func errorCode(e *openai.Error) string {
	if e.Code != nil {
		return *e.Code
	}
	return e.Type
}
