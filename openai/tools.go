package openai

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Tool calling works with every model the same way: the tools are described
// in a system message, and grammar-constrained sampling makes the model
// answer with exactly one JSON object,
//
//	{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
//
// or, when tool_choice is "auto", alternatively {"response": "plain text"}.
// The server turns the first form into OpenAI tool_calls (finish_reason
// "tool_calls") and streams the text of the second form as ordinary content.
// Models with their own native tool-call syntax are driven through this
// generic form too; the grammar guarantees it parses.

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

// parallelCalls reports whether one answer may hold several calls.
func (r *ChatRequest) parallelCalls() bool {
	return r.ParallelToolCalls == nil || *r.ParallelToolCalls
}

// offered returns the tools the model may call under tool_choice.
func (r *ChatRequest) offered() ([]Tool, toolChoice) {
	tc, _ := parseToolChoice(r.ToolChoice, true)
	if tc.mode != ToolChoiceFunction {
		return r.Tools, tc
	}
	for _, t := range r.Tools {
		if t.Function.Name == tc.name {
			return []Tool{t}, tc
		}
	}
	return nil, tc
}

// toolSchema is the JSON schema the answer must follow while tools are
// active: the tool_calls form, or (auto) that or the response form.
func (r *ChatRequest) toolSchema() []byte {
	tools, tc := r.offered()
	var calls bytes.Buffer
	for i, t := range tools {
		if i > 0 {
			calls.WriteByte(',')
		}
		name, _ := json.Marshal(t.Function.Name)
		params := []byte(`{"type":"object"}`)
		if len(t.Function.Parameters) > 0 {
			params = t.Function.Parameters
		}
		calls.WriteString(`{"type":"object","properties":{"name":{"const":`)
		calls.Write(name)
		calls.WriteString(`},"arguments":`)
		calls.Write(params)
		calls.WriteString(`},"required":["name","arguments"],"additionalProperties":false}`)
	}
	most := ""
	if !r.parallelCalls() {
		most = `,"maxItems":1`
	}
	callForm := `{"type":"object","properties":{"tool_calls":{"type":"array","items":{"anyOf":[` + calls.String() + `]},"minItems":1` + most + `}},"required":["tool_calls"],"additionalProperties":false}`
	if tc.mode != ToolChoiceAuto {
		return []byte(callForm)
	}
	return []byte(`{"anyOf":[` + callForm + `,{"type":"object","properties":{"response":{"type":"string"}},"required":["response"],"additionalProperties":false}]}`)
}

// toolsPrompt is the system text that describes the tools and the answer
// format.
func (r *ChatRequest) toolsPrompt() string {
	tools, tc := r.offered()
	var b strings.Builder
	b.WriteString("You can call the following tools. Each is described by its name, what it does, and a JSON schema of its arguments:\n")
	for _, t := range tools {
		desc := struct {
			Name        string          `json:"name"`
			Description string          `json:"description,omitempty"`
			Parameters  json.RawMessage `json:"parameters,omitempty"`
		}{t.Function.Name, t.Function.Description, t.Function.Parameters}
		line, _ := json.Marshal(desc)
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteString("\nAnswer with a single JSON object and nothing else. To call tools, answer {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]}")
	switch tc.mode {
	case ToolChoiceAuto:
		b.WriteString("; to answer the user directly, answer {\"response\": \"<your answer>\"}.")
	case ToolChoiceRequired:
		b.WriteString(". You must call at least one tool.")
	case ToolChoiceFunction:
		b.WriteString(". You must call " + tc.name + ".")
	}
	if !r.parallelCalls() {
		b.WriteString(" Call at most one tool at a time.")
	}
	return b.String()
}

// TemplateMessages returns the messages to render with the chat template:
// "developer" messages become "system" ones; while tools are active, their description joins the first system message
// (or becomes one); earlier assistant tool calls are written in the form
// the model is asked to produce, so it sees its own past calls.
func (r *ChatRequest) TemplateMessages() []Message {
	out := make([]Message, 0, len(r.Messages)+1)
	rest := r.Messages
	if r.ToolsActive() {
		sys := r.toolsPrompt()
		if len(rest) > 0 && (rest[0].Role == "system" || rest[0].Role == "developer") {
			first := rest[0]
			first.Role = "system"
			first.Content = Content{Text: first.Content.Text + "\n\n" + sys}
			out = append(out, first)
			rest = rest[1:]
		} else {
			out = append(out, Message{Role: "system", Content: Content{Text: sys}})
		}
	}
	for _, m := range rest {
		if m.Role == "developer" {
			m.Role = "system" // OpenAI's newer name; chat templates know "system"
		}
		if len(m.ToolCalls) > 0 {
			m.Content = Content{Text: renderCalls(m.ToolCalls)}
		}
		out = append(out, m)
	}
	return out
}

// renderCalls writes earlier calls as {"tool_calls": [...]}.
func renderCalls(calls []ToolCall) string {
	type call struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	list := make([]call, len(calls))
	for i, c := range calls {
		args := json.RawMessage(c.Function.Arguments)
		if !json.Valid(args) {
			args, _ = json.Marshal(c.Function.Arguments) // not JSON: keep it as a string
		}
		list[i] = call{c.Function.Name, args}
	}
	b, _ := json.Marshal(struct {
		ToolCalls []call `json:"tool_calls"`
	}{list})
	return string(b)
}

// ParseToolOutput reads a tools-constrained answer. It returns the calls of
// the tool_calls form (IDs left empty), or the text of the response form as
// content. An answer cut off (at max_tokens) gives the response text so far,
// or, when it was not the response form, the whole answer as content.
func ParseToolOutput(text string) (content string, calls []ToolCall) {
	var out struct {
		ToolCalls []struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"tool_calls"`
		Response *string `json:"response"`
	}
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		if n, _ := responsePrefix(text); n > 0 {
			content, _, _ = unquotePartial(text[n:])
			return content, nil
		}
		return text, nil
	}
	if len(out.ToolCalls) == 0 {
		if out.Response != nil {
			return *out.Response, nil
		}
		return text, nil
	}
	for _, c := range out.ToolCalls {
		var args bytes.Buffer
		if len(c.Arguments) == 0 || json.Compact(&args, c.Arguments) != nil {
			args.Reset()
			args.WriteString("{}")
		}
		calls = append(calls, ToolCall{Type: "function", Function: FunctionCall{Name: c.Name, Arguments: args.String()}})
	}
	return "", calls
}

// ToolStream follows a tools-constrained answer while it streams: the text
// of a {"response": "..."} answer is passed on as it is generated, decoded
// from its JSON string; anything else is held until Finish.
type ToolStream struct {
	all     strings.Builder
	state   int    // streamLooking, streamInText, streamHeld
	pending string // in streamInText: text not yet decoded
	entered bool   // the response form was recognized; its text streams
}

const (
	streamLooking = iota // not yet known which form
	streamInText         // inside the response string
	streamHeld           // tool calls, or past the response string
)

// Add takes the next piece of generated text and returns the content that
// can be passed on now (often "").
func (s *ToolStream) Add(piece string) string {
	s.all.WriteString(piece)
	switch s.state {
	case streamLooking:
		switch n, ok := responsePrefix(s.all.String()); {
		case n > 0:
			s.state, s.pending, s.entered = streamInText, s.all.String()[n:], true
		case !ok:
			s.state = streamHeld
			return ""
		default:
			return ""
		}
	case streamInText:
		s.pending += piece
	default:
		return ""
	}
	text, rest, closed := unquotePartial(s.pending)
	s.pending = rest
	if closed {
		s.state = streamHeld
	}
	return text
}

// Finish ends the answer. It returns the calls of a tool_calls answer, or
// the content not yet passed on: nothing once the response form was
// entered (its text already went out; a string cut off at max_tokens ends
// there), otherwise the whole answer (or its response text).
func (s *ToolStream) Finish() (content string, calls []ToolCall) {
	content, calls = ParseToolOutput(s.all.String())
	if len(calls) > 0 {
		return "", calls
	}
	if s.entered {
		return "", nil
	}
	return content, nil
}

// responsePrefix matches `{ "response" : "` with optional whitespace at the
// start of s. It returns the length of the match when complete, or ok=false
// when s can no longer be that.
func responsePrefix(s string) (n int, ok bool) {
	want := []string{"{", `"response"`, ":", `"`}
	i := 0
	for _, w := range want {
		for i < len(s) && strings.IndexByte(" \t\n\r", s[i]) >= 0 {
			i++
		}
		rest := s[i:]
		if len(rest) < len(w) {
			return 0, strings.HasPrefix(w, rest)
		}
		if !strings.HasPrefix(rest, w) {
			return 0, false
		}
		i += len(w)
	}
	return i, true
}

// unquotePartial decodes the body of a JSON string as far as it is
// complete: it returns the decoded text, the undecoded rest (an escape cut
// in two), and whether the closing quote was reached.
func unquotePartial(s string) (text, rest string, closed bool) {
	var b strings.Builder
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), "", true
		case c != '\\':
			j := i + 1
			for j < len(s) && s[j] != '"' && s[j] != '\\' {
				j++
			}
			b.WriteString(s[i:j])
			i = j
			continue
		}
		if i+1 >= len(s) {
			return b.String(), s[i:], false
		}
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			b.WriteByte(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			if i+6 > len(s) {
				return b.String(), s[i:], false
			}
			r1, err := strconv.ParseUint(s[i+2:i+6], 16, 16)
			if err != nil {
				b.WriteRune(utf8.RuneError)
				i += 6
				continue
			}
			if utf16.IsSurrogate(rune(r1)) {
				if i+12 > len(s) && strings.HasPrefix(`\u`, s[i+6:min(i+8, len(s))]) {
					return b.String(), s[i:], false // the low half may follow
				}
				if i+12 <= len(s) && s[i+6:i+8] == `\u` {
					if r2, err := strconv.ParseUint(s[i+8:i+12], 16, 16); err == nil {
						if r := utf16.DecodeRune(rune(r1), rune(r2)); r != utf8.RuneError {
							b.WriteRune(r)
							i += 12
							continue
						}
					}
				}
				b.WriteRune(utf8.RuneError)
				i += 6
				continue
			}
			b.WriteRune(rune(r1))
			i += 6
			continue
		default:
			b.WriteByte(e)
		}
		i += 2
	}
	return b.String(), "", false
}
