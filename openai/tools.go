package openai

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"

	"github.com/llmux/llmux/llm"
)

// Tools are validated here and cross the boundary as plain data; the
// model's chat format (package chat, behind the boundary) writes them in
// the model's native syntax or in llmux's generic JSON form and reads its
// calls back.

// Tool is one entry of a chat request's tools.
type Tool struct {
	Type     string      `json:"type"`
	Function FunctionDef `json:"function"`
}

// FunctionDef describes a function the model may call.
type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ToolCall is a call of a function: in responses, in streamed deltas (with
// Index), and in earlier assistant messages sent back by the client.
type ToolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is the function a tool call names and its arguments, a JSON
// object encoded as a string.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ToolChoice modes.
const (
	ToolChoiceNone     = "none"
	ToolChoiceAuto     = "auto"
	ToolChoiceRequired = "required"
	ToolChoiceFunction = "function" // one named function
)

// toolChoice is a parsed tool_choice.
type toolChoice struct {
	mode string
	name string // mode function
}

var functionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// parseToolChoice reads "none", "auto", "required" or
// {"type":"function","function":{"name":...}}; absent means auto when there
// are tools and none otherwise.
func parseToolChoice(raw json.RawMessage, haveTools bool) (toolChoice, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		if haveTools {
			return toolChoice{mode: ToolChoiceAuto}, nil
		}
		return toolChoice{mode: ToolChoiceNone}, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case ToolChoiceNone, ToolChoiceAuto, ToolChoiceRequired:
			return toolChoice{mode: s}, nil
		}
		return toolChoice{}, Invalid("tool_choice", `tool_choice must be "none", "auto", "required" or {"type":"function","function":{"name":...}}, got %q`, s)
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Type != "function" || named.Function.Name == "" {
		return toolChoice{}, Invalid("tool_choice", `tool_choice must be "none", "auto", "required" or {"type":"function","function":{"name":...}}`)
	}
	return toolChoice{mode: ToolChoiceFunction, name: named.Function.Name}, nil
}

// validateTools checks tools, tool_choice and the tool calls of earlier
// assistant messages.
func (r *ChatRequest) validateTools(l Limits) *Error {
	if len(r.Tools) > l.MaxTools {
		return Invalid("tools", "at most %d tools are allowed, got %d", l.MaxTools, len(r.Tools))
	}
	seen := make(map[string]bool, len(r.Tools))
	schemaBytes := 0
	for i, t := range r.Tools {
		p := "tools[" + strconv.Itoa(i) + "]"
		if t.Type != "function" {
			return Invalid(p+".type", "tool type must be \"function\", got %q", t.Type)
		}
		if !functionName.MatchString(t.Function.Name) {
			return Invalid(p+".function.name", "function names are 1 to 64 letters, digits, underscores or dashes, got %q", t.Function.Name)
		}
		if seen[t.Function.Name] {
			return Invalid(p+".function.name", "function %q is defined twice", t.Function.Name)
		}
		seen[t.Function.Name] = true
		if len(t.Function.Parameters) > 0 {
			schemaBytes += len(t.Function.Parameters)
			var obj map[string]any
			if err := json.Unmarshal(t.Function.Parameters, &obj); err != nil {
				return Invalid(p+".function.parameters", "parameters must be a JSON schema object")
			}
			if e := checkSchema(p+".function.parameters", t.Function.Parameters, l); e != nil {
				return e
			}
		}
	}
	if schemaBytes > l.MaxSchemaBytes {
		return Invalid("tools", "the tools' parameter schemas exceed %d bytes", l.MaxSchemaBytes)
	}
	tc, e := parseToolChoice(r.ToolChoice, len(r.Tools) > 0)
	if e != nil {
		return e
	}
	if len(r.Tools) == 0 && tc.mode != ToolChoiceNone {
		return Invalid("tool_choice", "tool_choice is only allowed when tools are specified")
	}
	if tc.mode == ToolChoiceFunction && !seen[tc.name] {
		return Invalid("tool_choice", "tool_choice names function %q, which is not in tools", tc.name)
	}
	if tc.mode != ToolChoiceNone && r.ResponseFormat != nil && r.ResponseFormat.Type != "text" {
		return Invalid("response_format", "response_format %q cannot be combined with tools unless tool_choice is \"none\"", r.ResponseFormat.Type)
	}
	for i, m := range r.Messages {
		if len(m.ToolCalls) > 0 && m.Role != "assistant" {
			return Invalid("messages["+strconv.Itoa(i)+"].tool_calls", "only assistant messages carry tool_calls")
		}
		for j, c := range m.ToolCalls {
			p := "messages[" + strconv.Itoa(i) + "].tool_calls[" + strconv.Itoa(j) + "]"
			if c.Type != "" && c.Type != "function" {
				return Invalid(p+".type", "tool call type must be \"function\", got %q", c.Type)
			}
			if c.Function.Name == "" {
				return Invalid(p+".function.name", "a tool call needs a function name")
			}
		}
	}
	return nil
}

// ToolsActive reports whether the model is offered tools: there are tools
// and tool_choice is not "none".
func (r *ChatRequest) ToolsActive() bool {
	if len(r.Tools) == 0 {
		return false
	}
	tc, e := parseToolChoice(r.ToolChoice, true)
	return e == nil && tc.mode != ToolChoiceNone
}

// LLMTools converts the validated tools and tool_choice.
func (r *ChatRequest) LLMTools() ([]llm.Tool, llm.ToolChoice) {
	tc, _ := parseToolChoice(r.ToolChoice, len(r.Tools) > 0)
	choice := llm.ToolChoice{Mode: llm.ToolChoiceMode(tc.mode), Name: tc.name, Single: r.ParallelToolCalls != nil && !*r.ParallelToolCalls}
	if len(r.Tools) == 0 {
		return nil, choice
	}
	tools := make([]llm.Tool, len(r.Tools))
	for i, t := range r.Tools {
		tools[i] = llm.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters}
	}
	return tools, choice
}

// LLMMessages converts the validated messages: text, the reasoning and
// tool calls of assistant turns, and which call a tool message answers
// (its name found from the call id among earlier calls).
func (r *ChatRequest) LLMMessages() []llm.Message {
	out := make([]llm.Message, len(r.Messages))
	names := map[string]string{}
	for i, m := range r.Messages {
		lm := llm.Message{Role: m.Role, Content: m.Content.Text, Reasoning: m.ReasoningContent, ToolCallID: m.ToolCallID, ToolName: m.Name}
		if lm.Reasoning == "" {
			lm.Reasoning = m.Reasoning
		}
		for j, c := range m.ToolCalls {
			lm.ToolCalls = append(lm.ToolCalls, llm.ToolCall{Index: j, ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
			if c.ID != "" {
				names[c.ID] = c.Function.Name
			}
		}
		if m.Role == "tool" && lm.ToolName == "" {
			lm.ToolName = names[m.ToolCallID]
		}
		out[i] = lm
	}
	return out
}

// ToolCalls converts calls from the boundary to OpenAI's form; indexed
// adds each call's index (streamed deltas).
func ToolCalls(calls []llm.ToolCall, indexed bool) []ToolCall {
	out := make([]ToolCall, len(calls))
	for i, c := range calls {
		out[i] = ToolCall{ID: c.ID, Type: "function", Function: FunctionCall{Name: c.Name, Arguments: c.Arguments}}
		if indexed {
			idx := c.Index
			out[i].Index = &idx
		}
	}
	return out
}

// ValidFunctionName reports whether name is a function name OpenAI (and
// Anthropic) accept: 1 to 64 letters, digits, underscores or dashes.
func ValidFunctionName(name string) bool { return functionName.MatchString(name) }
