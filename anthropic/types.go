// Package anthropic is Anthropic's Messages API over llmux's model
// boundary: the request and response types, validation with Anthropic's
// rules (max_tokens required, tool results that answer a tool use), the
// conversion to an llm.Request, and the shapes of its stream events and
// errors. Like openai, it is pure: the server wires it to a backend.
package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MessagesRequest is POST /v1/messages.
type MessagesRequest struct {
	Model         string          `json:"model"`
	MaxTokens     *int            `json:"max_tokens"`
	Messages      []Message       `json:"messages"`
	System        Text            `json:"system"`
	Stream        bool            `json:"stream"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	TopK          *int            `json:"top_k"`
	StopSequences []string        `json:"stop_sequences"`
	Tools         []Tool          `json:"tools"`
	ToolChoice    *ToolChoice     `json:"tool_choice"`
	Thinking      *Thinking       `json:"thinking"`
	Metadata      json.RawMessage `json:"metadata"`
	ServiceTier   string          `json:"service_tier"`
	// IgnoreEOS (an llmux extension, as on the OpenAI routes) generates
	// max_tokens tokens whatever the model says: for benchmarks.
	IgnoreEOS bool `json:"ignore_eos"`

	minP *float64 // the model's default (Anthropic has no min_p)
}

// CountTokensRequest is POST /v1/messages/count_tokens.
type CountTokensRequest struct {
	Model      string      `json:"model"`
	Messages   []Message   `json:"messages"`
	System     Text        `json:"system"`
	Tools      []Tool      `json:"tools"`
	ToolChoice *ToolChoice `json:"tool_choice"`
	Thinking   *Thinking   `json:"thinking"`
}

// Message is one turn: its content a string or content blocks.
type Message struct {
	Role    string  `json:"role"`
	Content Content `json:"content"`
}

// Content is a message's blocks; a plain string is one text block.
type Content []Block

// UnmarshalJSON accepts a string or an array of blocks.
func (c *Content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = Content{{Type: "text", Text: s}}
		return nil
	}
	var blocks []Block
	if err := json.Unmarshal(b, &blocks); err != nil {
		return err
	}
	*c = blocks
	return nil
}

// Block is one content block. Which fields mean something depends on
// Type: text (Text), tool_use (ID, Name, Input), tool_result (ToolUseID,
// Content, IsError), thinking (Thinking, Signature), redacted_thinking,
// image and document (refused until supported).
type Block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   *Content        `json:"content,omitempty"`
	IsError   bool            `json:"is_error,omitempty"`
	Thinking  string          `json:"thinking,omitempty"`
	Signature string          `json:"signature,omitempty"`
	Data      string          `json:"data,omitempty"`
}

// Text is the system prompt: a string or text blocks.
type Text struct {
	Blocks []Block
	Set    bool
}

// UnmarshalJSON accepts a string, null or an array of blocks.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = Text{Blocks: []Block{{Type: "text", Text: s}}, Set: true}
		return nil
	}
	var blocks []Block
	if err := json.Unmarshal(b, &blocks); err != nil {
		return fmt.Errorf("system must be a string or an array of text blocks")
	}
	*t = Text{Blocks: blocks, Set: true}
	return nil
}

// Tool is a client tool: a name, a description and the input's schema.
type Tool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// ToolChoice is auto, any, tool (with Name) or none.
type ToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
}

// Thinking turns extended thinking on ("enabled", with a budget) or off.
type Thinking struct {
	Type         string `json:"type"`
	BudgetTokens int    `json:"budget_tokens"`
}

// Response is a whole message (non-streamed, and message_start's shell).
type Response struct {
	ID           string  `json:"id"`
	Type         string  `json:"type"` // "message"
	Role         string  `json:"role"` // "assistant"
	Model        string  `json:"model"`
	Content      []Out   `json:"content"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
	Usage        Usage   `json:"usage"`
}

// Out is a content block of a response: text (Text), thinking (Thinking,
// Signature) or tool_use (ID, Name, Input).
type Out struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text,omitempty"`
	Thinking  *string         `json:"thinking,omitempty"`
	Signature *string         `json:"signature,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
}

// TextOut is a text block.
func TextOut(s string) Out { return Out{Type: "text", Text: &s} }

// ThinkingOut is a thinking block (llmux signs nothing: the signature is
// empty).
func ThinkingOut(s string) Out {
	sig := ""
	return Out{Type: "thinking", Thinking: &s, Signature: &sig}
}

// Usage counts tokens as Anthropic does: input_tokens excludes the prompt
// tokens read from the cache.
type Usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

// ErrorBody is Anthropic's error response and error event.
type ErrorBody struct {
	Type  string      `json:"type"` // "error"
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the error's type and message.
type ErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// ErrorType is Anthropic's error type for an HTTP status.
func ErrorType(status int) string {
	switch status {
	case 413:
		return "request_too_large"
	case 400, 415, 431, 408, 499:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404, 405:
		return "not_found_error"
	case 429:
		return "rate_limit_error"
	case 503, 529:
		return "overloaded_error"
	case 504:
		return "timeout_error"
	}
	return "api_error"
}
