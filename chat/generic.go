package chat

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/llmux/llmux/llm"
)

// The generic tool form works with every model the same way: the tools are
// described in a system message, and grammar-constrained sampling makes
// the model answer with exactly one JSON object,
//
//	{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
//
// or, when tool_choice is "auto", alternatively {"response": "plain text"}.
// The first form becomes tool calls; the text of the second streams as
// content. Formats with no native tool syntax use it, as do forced calls
// (tool_choice required or a named function), whose grammar then
// guarantees a call that parses with arguments matching its schema.

// offered returns the tools the model may call under the choice.
func offered(tools []llm.Tool, c llm.ToolChoice) []llm.Tool {
	if c.Mode != llm.ToolsFunction {
		return tools
	}
	for _, t := range tools {
		if t.Name == c.Name {
			return []llm.Tool{t}
		}
	}
	return nil
}

// genericSchema is the JSON schema the answer must follow: the tool_calls
// form, or (auto) that or the response form.
func genericSchema(tools []llm.Tool, c llm.ToolChoice) []byte {
	var calls bytes.Buffer
	for i, t := range offered(tools, c) {
		if i > 0 {
			calls.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name)
		params := []byte(`{"type":"object"}`)
		if len(t.Parameters) > 0 {
			params = t.Parameters
		}
		calls.WriteString(`{"type":"object","properties":{"name":{"const":`)
		calls.Write(name)
		calls.WriteString(`},"arguments":`)
		calls.Write(params)
		calls.WriteString(`},"required":["name","arguments"],"additionalProperties":false}`)
	}
	most := ""
	if c.Single {
		most = `,"maxItems":1`
	}
	callForm := `{"type":"object","properties":{"tool_calls":{"type":"array","items":{"anyOf":[` + calls.String() + `]},"minItems":1` + most + `}},"required":["tool_calls"],"additionalProperties":false}`
	if c.Forced() {
		return []byte(callForm)
	}
	return []byte(`{"anyOf":[` + callForm + `,{"type":"object","properties":{"response":{"type":"string"}},"required":["response"],"additionalProperties":false}]}`)
}

// genericPrompt is the system text that describes the tools and the
// answer format.
func genericPrompt(tools []llm.Tool, c llm.ToolChoice) string {
	var b strings.Builder
	b.WriteString("You can call the following tools. Each is described by its name, what it does, and a JSON schema of its arguments:\n")
	for _, t := range offered(tools, c) {
		desc := struct {
			Name        string          `json:"name"`
			Description string          `json:"description,omitempty"`
			Parameters  json.RawMessage `json:"parameters,omitempty"`
		}{t.Name, t.Description, t.Parameters}
		line, _ := json.Marshal(desc)
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteString("\nAnswer with a single JSON object and nothing else. To call tools, answer {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]}")
	switch c.Mode {
	case llm.ToolsRequired:
		b.WriteString(". You must call at least one tool.")
	case llm.ToolsFunction:
		b.WriteString(". You must call " + c.Name + ".")
	default:
		b.WriteString("; to answer the user directly, answer {\"response\": \"<your answer>\"}.")
	}
	if c.Single {
		b.WriteString(" Call at most one tool at a time.")
	}
	return b.String()
}

// genericMessages joins the tools' description to the first system
// message (or makes it one) and writes earlier calls in the form the model
// is asked to produce, so it sees its own past calls.
func genericMessages(msgs []llm.Message, tools []llm.Tool, c llm.ToolChoice) []llm.Message {
	out := make([]llm.Message, 0, len(msgs)+1)
	sys := genericPrompt(tools, c)
	if len(msgs) > 0 && msgs[0].Role == "system" {
		first := msgs[0]
		first.Content += "\n\n" + sys
		out = append(out, first)
		msgs = msgs[1:]
	} else {
		out = append(out, llm.Message{Role: "system", Content: sys})
	}
	return append(out, callsAsText(msgs)...)
}

// renderCalls writes earlier calls as {"tool_calls": [...]}.
func renderCalls(calls []llm.ToolCall) string {
	type call struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	list := make([]call, len(calls))
	for i, c := range calls {
		args := json.RawMessage(c.Arguments)
		if !json.Valid(args) {
			args, _ = json.Marshal(c.Arguments) // not JSON: keep it as a string
		}
		list[i] = call{c.Name, args}
	}
	b, _ := json.Marshal(struct {
		ToolCalls []call `json:"tool_calls"`
	}{list})
	return string(b)
}

// parseGeneric reads a tools-constrained answer. It returns the calls of
// the tool_calls form (IDs left empty), or the text of the response form as
// content. An answer cut off (at max_tokens) gives the response text so far,
// or, when it was not the response form, the whole answer as content.
func parseGeneric(text string) (content string, calls []llm.ToolCall) {
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
		calls = append(calls, llm.ToolCall{Name: c.Name, Arguments: args.String()})
	}
	return "", calls
}

// toolStream follows a tools-constrained answer while it streams: the text
// of a {"response": "..."} answer is passed on as it is generated, decoded
// from its JSON string; anything else is held until Finish.
type toolStream struct {
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
func (s *toolStream) Add(piece string) string {
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
func (s *toolStream) Finish() (content string, calls []llm.ToolCall) {
	content, calls = parseGeneric(s.all.String())
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
