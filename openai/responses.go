package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The Responses API (POST /v1/responses) is turned into a chat request:
// its input items become chat messages (after the stored conversation of
// previous_response_id, when there is one), its function tools and
// tool_choice the chat's, text.format the response_format, so one set of
// validation and one conversion to the model boundary serve both APIs.

// ResponsesRequest is POST /v1/responses.
type ResponsesRequest struct {
	Model              string            `json:"model"`
	Input              ResponsesInput    `json:"input"`
	Instructions       string            `json:"instructions"`
	Tools              []ResponsesTool   `json:"tools"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls"`
	Text               *ResponsesText    `json:"text"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	Temperature        *float64          `json:"temperature"`
	TopP               *float64          `json:"top_p"`
	Reasoning          *ResponsesReason  `json:"reasoning"`
	Store              *bool             `json:"store"`
	PreviousResponseID string            `json:"previous_response_id"`
	Stream             bool              `json:"stream"`
	Metadata           map[string]string `json:"metadata"`
	User               string            `json:"user"`
	Background         bool              `json:"background"`
	Conversation       json.RawMessage   `json:"conversation"`
	// IgnoreEOS is llmux's extension (as on chat): for benchmarks.
	IgnoreEOS bool `json:"ignore_eos"`
}

// Stored reports whether the response is to be kept (the default).
func (r *ResponsesRequest) Stored() bool { return r.Store == nil || *r.Store }

// ResponsesInput is a string (one user message) or a list of items.
type ResponsesInput struct {
	Items []ResponsesItem
	Set   bool
}

// UnmarshalJSON accepts a string or an array of items.
func (in *ResponsesInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*in = ResponsesInput{Items: []ResponsesItem{{Type: "message", Role: "user", Content: ResponsesContent{Parts: []ResponsesPart{{Type: "input_text", Text: s}}}}}, Set: true}
		return nil
	}
	var items []ResponsesItem
	if err := json.Unmarshal(b, &items); err != nil {
		return fmt.Errorf("input must be a string or an array of input items")
	}
	*in = ResponsesInput{Items: items, Set: true}
	return nil
}

// ResponsesItem is one input item: a message (Role, Content), a
// function_call (CallID, Name, Arguments), a function_call_output
// (CallID, Output) or a reasoning item (Summary, Content).
type ResponsesItem struct {
	Type      string           `json:"type"`
	ID        string           `json:"id,omitempty"`
	Role      string           `json:"role,omitempty"`
	Content   ResponsesContent `json:"content"`
	CallID    string           `json:"call_id,omitempty"`
	Name      string           `json:"name,omitempty"`
	Arguments string           `json:"arguments,omitempty"`
	Output    json.RawMessage  `json:"output,omitempty"`
	Summary   []ResponsesPart  `json:"summary,omitempty"`
}

// ResponsesContent is a message's content: a string or parts.
type ResponsesContent struct {
	Parts []ResponsesPart
}

// UnmarshalJSON accepts a string, null or an array of parts.
func (c *ResponsesContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		c.Parts = []ResponsesPart{{Type: "input_text", Text: s}}
		return nil
	}
	return json.Unmarshal(b, &c.Parts)
}

// MarshalJSON writes the parts.
func (c ResponsesContent) MarshalJSON() ([]byte, error) {
	if c.Parts == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(c.Parts)
}

// ResponsesPart is a content part: input_text, output_text,
// summary_text or reasoning_text (Text); input_image and input_file are
// refused.
type ResponsesPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// ResponsesTool is a tool: only type "function" is served.
type ResponsesTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ResponsesText is the text field: its format.
type ResponsesText struct {
	Format *ResponsesFormat `json:"format"`
}

// ResponsesFormat is text, json_object or json_schema (Name, Schema,
// Strict).
type ResponsesFormat struct {
	Type   string          `json:"type"`
	Name   string          `json:"name,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict *bool           `json:"strict,omitempty"`
}

// ResponsesReason is the reasoning field.
type ResponsesReason struct {
	Effort  string `json:"effort,omitempty"`
	Summary string `json:"summary,omitempty"`
}

// Chat turns the request into a chat request after the conversation so
// far (history: the stored messages of previous_response_id), and returns
// the messages this request adds, to be stored with the answer. The chat
// request is validated by its own Validate.
func (r *ResponsesRequest) Chat(history []Message) (chat *ChatRequest, added []Message, e *Error) {
	switch {
	case r.Background:
		return nil, nil, Invalid("background", "background responses are not supported")
	case len(r.Conversation) > 0 && !bytes.Equal(bytes.TrimSpace(r.Conversation), []byte("null")):
		return nil, nil, Invalid("conversation", "conversations are not supported: use previous_response_id")
	case !r.Input.Set || len(r.Input.Items) == 0:
		return nil, nil, Invalid("input", "input must be a non-empty string or array of input items")
	}
	if r.Instructions != "" {
		// Instructions hold for this response only: they are not stored.
		history = append([]Message{{Role: "system", Content: Content{Text: r.Instructions}}}, history...)
	}
	var pending *Message // the assistant turn being gathered (text, reasoning, calls)
	flush := func() {
		if pending != nil {
			added = append(added, *pending)
			pending = nil
		}
	}
	assistant := func() *Message {
		if pending == nil {
			pending = &Message{Role: "assistant", Content: Content{Null: true}}
		}
		return pending
	}
	for i, it := range r.Input.Items {
		p := fmt.Sprintf("input[%d]", i)
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		switch typ {
		case "message":
			text, e := partsText(p+".content", it.Content.Parts)
			if e != nil {
				return nil, nil, e
			}
			switch it.Role {
			case "assistant":
				a := assistant()
				if len(a.ToolCalls) > 0 {
					flush()
					a = assistant()
				}
				a.Content = Content{Text: a.Content.Text + text}
			case "user", "system", "developer":
				flush()
				added = append(added, Message{Role: it.Role, Content: Content{Text: text}})
			default:
				return nil, nil, Invalid(p+".role", "role must be user, assistant, system or developer, got %q", it.Role)
			}
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return nil, nil, Invalid(p, "a function_call item needs call_id and name")
			}
			a := assistant()
			a.ToolCalls = append(a.ToolCalls, ToolCall{ID: it.CallID, Type: "function", Function: FunctionCall{Name: it.Name, Arguments: it.Arguments}})
		case "function_call_output":
			flush()
			out, e := outputText(p+".output", it.Output)
			if e != nil {
				return nil, nil, e
			}
			if !answers(history, added, it.CallID) {
				return nil, nil, Invalid(p+".call_id", "no function_call with call_id %q precedes this output", it.CallID)
			}
			added = append(added, Message{Role: "tool", ToolCallID: it.CallID, Content: Content{Text: out}})
		case "reasoning":
			var b strings.Builder
			for _, s := range it.Summary {
				b.WriteString(s.Text)
			}
			for _, c := range it.Content.Parts {
				b.WriteString(c.Text)
			}
			a := assistant()
			a.ReasoningContent += b.String()
		case "item_reference":
			return nil, nil, Invalid(p+".type", "item references are not supported")
		default:
			return nil, nil, Invalid(p+".type", "unknown input item type %q", it.Type)
		}
	}
	flush()
	chat = &ChatRequest{Model: r.Model, Messages: append(append([]Message(nil), history...), added...), MaxCompletionTokens: r.MaxOutputTokens, ParallelToolCalls: r.ParallelToolCalls}
	chat.Temperature, chat.TopP, chat.User, chat.IgnoreEOS = r.Temperature, r.TopP, r.User, r.IgnoreEOS
	if r.Reasoning != nil && r.Reasoning.Effort != "" {
		chat.ReasoningEffort = r.Reasoning.Effort
	}
	for i, t := range r.Tools {
		if t.Type != "function" {
			return nil, nil, Invalid(fmt.Sprintf("tools[%d].type", i), "only function tools are served, got %q", t.Type)
		}
		chat.Tools = append(chat.Tools, Tool{Type: "function", Function: FunctionDef{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict}})
	}
	if tc := bytes.TrimSpace(r.ToolChoice); len(tc) > 0 && tc[0] == '{' {
		var named struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}
		if err := json.Unmarshal(tc, &named); err != nil || named.Type != "function" || named.Name == "" {
			return nil, nil, Invalid("tool_choice", `tool_choice must be "none", "auto", "required" or {"type":"function","name":...}`)
		}
		chat.ToolChoice, _ = json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": named.Name}})
	} else {
		chat.ToolChoice = r.ToolChoice
	}
	if r.Text != nil && r.Text.Format != nil {
		f := r.Text.Format
		rf := &ResponseFormat{Type: f.Type}
		if f.Type == "json_schema" {
			rf.JSONSchema = &JSONSchema{Name: f.Name, Schema: f.Schema, Strict: f.Strict != nil && *f.Strict}
		}
		chat.ResponseFormat = rf
	}
	return chat, added, nil
}

// partsText joins a message's text parts; images and files are refused.
func partsText(param string, parts []ResponsesPart) (string, *Error) {
	var b strings.Builder
	for j, c := range parts {
		switch c.Type {
		case "input_text", "output_text", "text":
			b.WriteString(c.Text)
		case "refusal":
		case "input_image", "input_file", "input_audio":
			return "", Invalid(fmt.Sprintf("%s[%d].type", param, j), "%s parts are not supported yet (no vision or file models are served)", c.Type)
		default:
			return "", Invalid(fmt.Sprintf("%s[%d].type", param, j), "unknown content part type %q", c.Type)
		}
	}
	return b.String(), nil
}

// outputText is a function_call_output's output: a string, or text parts.
func outputText(param string, raw json.RawMessage) (string, *Error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []ResponsesPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", Invalid(param, "output must be a string or an array of text parts")
	}
	return partsText(param, parts)
}

// answers reports whether a call with that id precedes, in the stored
// conversation or this request.
func answers(history, added []Message, id string) bool {
	for _, list := range [][]Message{history, added} {
		for _, m := range list {
			for _, c := range m.ToolCalls {
				if c.ID == id {
					return true
				}
			}
		}
	}
	return false
}

// Response is a response object (GET, non-streamed POST, and the stream's
// lifecycle events).
type Response struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"` // "response"
	CreatedAt          int64             `json:"created_at"`
	Status             string            `json:"status"` // in_progress, completed, incomplete, failed
	Model              string            `json:"model"`
	Output             []ResponseItem    `json:"output"`
	Error              *ResponseError    `json:"error"`
	IncompleteDetails  *Incomplete       `json:"incomplete_details"`
	Instructions       *string           `json:"instructions"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Temperature        *float64          `json:"temperature"`
	TopP               *float64          `json:"top_p"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              []ResponsesTool   `json:"tools"`
	Text               ResponsesText     `json:"text"`
	Reasoning          *ResponsesReason  `json:"reasoning"`
	Store              bool              `json:"store"`
	Metadata           map[string]string `json:"metadata"`
	Usage              *ResponsesUsage   `json:"usage"`
}

// ResponseItem is an output item: a message (Content), a function_call
// (CallID, Name, Arguments) or a reasoning item (Content of
// reasoning_text parts, Summary).
type ResponseItem struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Status    string          `json:"status,omitempty"`
	Role      string          `json:"role,omitempty"`
	Content   []OutputPart    `json:"content,omitempty"`
	Summary   []ResponsesPart `json:"summary,omitempty"`
	CallID    string          `json:"call_id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Arguments *string         `json:"arguments,omitempty"`
}

// OutputPart is a part of an output message or reasoning item.
type OutputPart struct {
	Type        string `json:"type"` // output_text, reasoning_text
	Text        string `json:"text"`
	Annotations []any  `json:"annotations,omitempty"`
}

// ResponseError says why a response failed.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Incomplete says why a response stopped early.
type Incomplete struct {
	Reason string `json:"reason"` // max_output_tokens
}

// ResponsesUsage counts a response's tokens.
type ResponsesUsage struct {
	InputTokens         int                `json:"input_tokens"`
	InputTokensDetails  InputTokenDetails  `json:"input_tokens_details"`
	OutputTokens        int                `json:"output_tokens"`
	OutputTokensDetails OutputTokenDetails `json:"output_tokens_details"`
	TotalTokens         int                `json:"total_tokens"`
}

// InputTokenDetails counts cached prompt tokens.
type InputTokenDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// OutputTokenDetails counts reasoning tokens.
type OutputTokenDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// ResponsesUsageOf converts chat usage.
func ResponsesUsageOf(u Usage) *ResponsesUsage {
	out := &ResponsesUsage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
	if d := u.PromptTokensDetails; d != nil {
		out.InputTokensDetails.CachedTokens = d.CachedTokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		out.OutputTokensDetails.ReasoningTokens = d.ReasoningTokens
	}
	return out
}
