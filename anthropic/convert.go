package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// MaxBlocks bounds the content blocks of one request (all messages and
// the system prompt together).
const MaxBlocks = 4096

// Validate checks a Messages request with Anthropic's rules and the
// server's limits; errors have a param naming the field, for the log.
func (r *MessagesRequest) Validate(l openai.Limits, _ openai.ModelInfo) *openai.Error {
	if r.MaxTokens == nil {
		return openai.Invalid("max_tokens", "max_tokens: Field required")
	}
	if *r.MaxTokens < 1 {
		return openai.Invalid("max_tokens", "max_tokens: must be at least 1, got %d", *r.MaxTokens)
	}
	switch {
	case r.Temperature != nil && !(*r.Temperature >= 0 && *r.Temperature <= 2):
		return openai.Invalid("temperature", "temperature: must be between 0 and 2")
	case r.TopP != nil && !(*r.TopP >= 0 && *r.TopP <= 1):
		return openai.Invalid("top_p", "top_p: must be between 0 and 1")
	case r.TopK != nil && *r.TopK < 0:
		return openai.Invalid("top_k", "top_k: must be at least 0")
	case len(r.StopSequences) > 16:
		return openai.Invalid("stop_sequences", "stop_sequences: at most 16 are allowed, got %d", len(r.StopSequences))
	}
	for _, s := range r.StopSequences {
		if s == "" || len(s) > 256 {
			return openai.Invalid("stop_sequences", "stop_sequences: each must be 1 to 256 bytes long")
		}
	}
	c := CountTokensRequest{Model: r.Model, Messages: r.Messages, System: r.System, Tools: r.Tools, ToolChoice: r.ToolChoice, Thinking: r.Thinking}
	return c.Validate(l)
}

// Validate checks the chat part of a request (also all of a count_tokens
// request).
func (r *CountTokensRequest) Validate(l openai.Limits) *openai.Error {
	if len(r.Messages) == 0 {
		return openai.Invalid("messages", "messages: at least one message is required")
	}
	if len(r.Messages) > l.MaxMessages {
		return openai.Invalid("messages", "messages: at most %d messages are allowed, got %d", l.MaxMessages, len(r.Messages))
	}
	blocks, size := len(r.System.Blocks), 0
	for i, b := range r.System.Blocks {
		if b.Type != "text" {
			return openai.Invalid("system", "system.%d: only text blocks are allowed in system, got %q", i, b.Type)
		}
		size += len(b.Text)
	}
	uses := map[string]bool{}
	for i, m := range r.Messages {
		p := fmt.Sprintf("messages.%d", i)
		if m.Role != "user" && m.Role != "assistant" {
			return openai.Invalid(p+".role", "%s.role: must be \"user\" or \"assistant\", got %q", p, m.Role)
		}
		if len(m.Content) == 0 && !(m.Role == "assistant" && i == len(r.Messages)-1) {
			return openai.Invalid(p+".content", "%s: content must not be empty", p)
		}
		for j, b := range m.Content {
			bp := fmt.Sprintf("%s.content.%d", p, j)
			blocks++
			if blocks > MaxBlocks {
				return openai.Invalid("messages", "messages: at most %d content blocks are allowed", MaxBlocks)
			}
			switch b.Type {
			case "text":
				size += len(b.Text)
			case "image", "document":
				return openai.Invalid(bp+".type", "%s: %s blocks are not supported yet (no vision or document models are served)", bp, b.Type)
			case "tool_use":
				if m.Role != "assistant" {
					return openai.Invalid(bp+".type", "%s: tool_use blocks belong to assistant messages", bp)
				}
				if b.ID == "" || !openai.ValidFunctionName(b.Name) {
					return openai.Invalid(bp, "%s: a tool_use block needs an id and a valid name", bp)
				}
				if in := bytes.TrimSpace(b.Input); len(in) > 0 && in[0] != '{' {
					return openai.Invalid(bp+".input", "%s.input: must be an object", bp)
				}
				uses[b.ID] = true
				size += len(b.Input)
			case "tool_result":
				if m.Role != "user" {
					return openai.Invalid(bp+".type", "%s: tool_result blocks belong to user messages", bp)
				}
				if !uses[b.ToolUseID] {
					return openai.Invalid(bp+".tool_use_id", "%s: tool_result block(s) provided when previous message does not have a matching tool_use block (tool_use_id %q)", bp, b.ToolUseID)
				}
				if b.Content != nil {
					for k, inner := range *b.Content {
						if inner.Type != "text" {
							return openai.Invalid(bp+".content", "%s.content.%d: only text is supported in a tool result, got %q", bp, k, inner.Type)
						}
						size += len(inner.Text)
						blocks++
					}
				}
			case "thinking", "redacted_thinking":
				if m.Role != "assistant" {
					return openai.Invalid(bp+".type", "%s: thinking blocks belong to assistant messages", bp)
				}
				size += len(b.Thinking)
			default:
				return openai.Invalid(bp+".type", "%s.type: unknown content block type %q", bp, b.Type)
			}
		}
	}
	if e := openai.CheckPromptBytes("messages", size, l); e != nil {
		return e
	}
	if len(r.Tools) > l.MaxTools {
		return openai.Invalid("tools", "tools: at most %d tools are allowed, got %d", l.MaxTools, len(r.Tools))
	}
	names := map[string]bool{}
	for i, t := range r.Tools {
		p := fmt.Sprintf("tools.%d", i)
		if t.Type != "" && t.Type != "custom" {
			return openai.Invalid(p+".type", "%s: server tools (%q) are not supported; only client tools with an input_schema", p, t.Type)
		}
		if !openai.ValidFunctionName(t.Name) {
			return openai.Invalid(p+".name", "%s.name: tool names are 1 to 64 letters, digits, underscores or dashes, got %q", p, t.Name)
		}
		if names[t.Name] {
			return openai.Invalid(p+".name", "%s.name: tool %q is defined twice", p, t.Name)
		}
		names[t.Name] = true
		if len(t.InputSchema) == 0 {
			return openai.Invalid(p+".input_schema", "%s.input_schema: Field required", p)
		}
		if e := openai.CheckSchema(p+".input_schema", t.InputSchema, l); e != nil {
			return e
		}
	}
	if tc := r.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto", "any", "none":
		case "tool":
			if !names[tc.Name] {
				return openai.Invalid("tool_choice", "tool_choice: tool %q is not in tools", tc.Name)
			}
		default:
			return openai.Invalid("tool_choice", "tool_choice.type: must be auto, any, tool or none, got %q", tc.Type)
		}
		if tc.Type != "none" && tc.Type != "auto" && len(r.Tools) == 0 {
			return openai.Invalid("tool_choice", "tool_choice: requires tools")
		}
	}
	if t := r.Thinking; t != nil && t.Type != "enabled" && t.Type != "disabled" && t.Type != "adaptive" {
		return openai.Invalid("thinking", "thinking.type: must be enabled, disabled or adaptive, got %q", t.Type)
	}
	return nil
}

// Chat converts the validated chat: messages (tool results become tool
// messages, thinking becomes reasoning), tools, tool choice and thinking.
func (r *CountTokensRequest) Chat() ([]llm.Message, []llm.Tool, llm.ToolChoice, llm.Think) {
	var msgs []llm.Message
	if r.System.Set {
		var sys []string
		for _, b := range r.System.Blocks {
			sys = append(sys, b.Text)
		}
		if s := strings.Join(sys, "\n"); s != "" {
			msgs = append(msgs, llm.Message{Role: "system", Content: s})
		}
	}
	names := map[string]string{}
	for _, m := range r.Messages {
		var text, reasoning strings.Builder
		var calls []llm.ToolCall
		var results []llm.Message
		for _, b := range m.Content {
			switch b.Type {
			case "text":
				text.WriteString(b.Text)
			case "thinking":
				reasoning.WriteString(b.Thinking)
			case "tool_use":
				args := string(bytes.TrimSpace(b.Input))
				if args == "" {
					args = "{}"
				}
				calls = append(calls, llm.ToolCall{Index: len(calls), ID: b.ID, Name: b.Name, Arguments: args})
				names[b.ID] = b.Name
			case "tool_result":
				var out strings.Builder
				if b.Content != nil {
					for _, inner := range *b.Content {
						out.WriteString(inner.Text)
					}
				}
				content := out.String()
				if b.IsError {
					content = "Error: " + content
				}
				results = append(results, llm.Message{Role: "tool", Content: content, ToolCallID: b.ToolUseID, ToolName: names[b.ToolUseID]})
			}
		}
		msgs = append(msgs, results...)
		if text.Len() > 0 || reasoning.Len() > 0 || len(calls) > 0 || len(results) == 0 {
			msgs = append(msgs, llm.Message{Role: m.Role, Content: text.String(), Reasoning: reasoning.String(), ToolCalls: calls})
		}
	}
	var tools []llm.Tool
	for _, t := range r.Tools {
		tools = append(tools, llm.Tool{Name: t.Name, Description: t.Description, Parameters: t.InputSchema})
	}
	choice := llm.ToolChoice{Mode: llm.ToolsAuto}
	if len(tools) == 0 {
		choice.Mode = llm.ToolsNone
	}
	if tc := r.ToolChoice; tc != nil {
		switch tc.Type {
		case "any":
			choice.Mode = llm.ToolsRequired
		case "tool":
			choice = llm.ToolChoice{Mode: llm.ToolsFunction, Name: tc.Name}
		case "none":
			choice.Mode = llm.ToolsNone
		}
		choice.Single = tc.DisableParallelToolUse
	}
	think := llm.ThinkDefault
	if t := r.Thinking; t != nil {
		switch t.Type {
		case "enabled", "adaptive":
			think = llm.ThinkOn
		case "disabled":
			think = llm.ThinkOff
		}
	}
	return msgs, tools, choice, think
}

// Params converts the sampling fields. Anthropic's temperature defaults
// to 1.
func (r *MessagesRequest) Params(seed uint32) llm.Params {
	p := llm.Params{Temperature: 1, Seed: seed, Stop: r.StopSequences, N: 1, MaxTokens: *r.MaxTokens, IgnoreEOS: r.IgnoreEOS}
	if r.Temperature != nil {
		p.Temperature = float32(*r.Temperature)
	}
	if r.TopP != nil {
		p.TopP = float32(*r.TopP)
	}
	if r.TopK != nil {
		p.TopK = *r.TopK
	}
	if r.minP != nil {
		p.MinP = float32(*r.minP)
	}
	return p
}

// Chat converts the request's chat part.
func (r *MessagesRequest) Chat() ([]llm.Message, []llm.Tool, llm.ToolChoice, llm.Think) {
	c := CountTokensRequest{Model: r.Model, Messages: r.Messages, System: r.System, Tools: r.Tools, ToolChoice: r.ToolChoice, Thinking: r.Thinking}
	return c.Chat()
}

// StopReason maps a choice's finish to Anthropic's stop_reason.
func StopReason(f llm.Finish, called bool) string {
	switch {
	case called && f != llm.FinishLength:
		return "tool_use"
	case f == llm.FinishLength:
		return "max_tokens"
	}
	return "end_turn"
}

// ToolUse is a call as a tool_use block.
func ToolUse(c llm.ToolCall) Out {
	in := json.RawMessage(c.Arguments)
	if !json.Valid(in) {
		in = json.RawMessage("{}")
	}
	id := c.ID
	if rest, ok := strings.CutPrefix(id, "call_"); ok {
		id = "toolu_" + rest
	}
	return Out{Type: "tool_use", ID: id, Name: c.Name, Input: in}
}

// ApplyDefaults fills the sampling fields the request leaves out from the
// model's defaults (max_tokens is required, so never from there).
func (r *MessagesRequest) ApplyDefaults(d *llm.SamplingDefaults) {
	if d == nil {
		return
	}
	if r.Temperature == nil {
		r.Temperature = d.Temperature
	}
	if r.TopP == nil {
		r.TopP = d.TopP
	}
	if r.TopK == nil {
		r.TopK = d.TopK
	}
	r.minP = d.MinP
}
