package chat

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
)

var weather = llm.Tool{Name: "get_weather", Description: "Weather now", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city"]}`)}

// TestGenericGrammars compiles the generic form's schema for each tool
// choice with llama.cpp's converter: the call form always, the response
// form only under auto.
func TestGenericGrammars(t *testing.T) {
	for _, tc := range []struct {
		tools  []llm.Tool
		choice llm.ToolChoice
	}{
		{[]llm.Tool{weather}, llm.ToolChoice{Mode: llm.ToolsAuto}},
		{[]llm.Tool{weather, {Name: "noargs"}}, llm.ToolChoice{Mode: llm.ToolsRequired}},
		{[]llm.Tool{weather}, llm.ToolChoice{Mode: llm.ToolsFunction, Name: "get_weather", Single: true}},
	} {
		g, err := engine.SchemaToGrammar(genericSchema(tc.tools, tc.choice))
		if err != nil {
			t.Fatalf("%+v: %v", tc.choice, err)
		}
		if !strings.Contains(g, "get_weather") || !strings.Contains(g, "tool_calls") {
			t.Fatalf("%+v: grammar lacks the tool form:\n%s", tc.choice, g)
		}
		if auto := strings.Contains(g, "response"); auto != (tc.choice.Mode == llm.ToolsAuto) {
			t.Fatalf("%+v: response form in grammar = %v", tc.choice, auto)
		}
	}
	// A parameters schema that llama.cpp cannot turn into a grammar fails
	// behind the boundary (in the runner), attributed to tools.
	bad := []llm.Tool{{Name: "f", Parameters: json.RawMessage(`{"$ref":"#/nowhere"}`)}}
	if _, err := engine.SchemaToGrammar(genericSchema(bad, llm.ToolChoice{Mode: llm.ToolsAuto})); err == nil {
		t.Fatal("unresolvable $ref compiled")
	}
}

// TestGenericMessages checks the generic form's prompt: the tools joined
// to the first system message (or one made for them), earlier calls
// written as the JSON the model is asked for.
func TestGenericMessages(t *testing.T) {
	msgs := []llm.Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city": "Paris"}`}}},
		{Role: "tool", Content: "18 C", ToolCallID: "call_1"},
	}
	got := genericMessages(msgs, []llm.Tool{weather}, llm.ToolChoice{Mode: llm.ToolsAuto})
	if len(got) != 4 || got[0].Role != "system" || !strings.HasPrefix(got[0].Content, "Be brief.\n\n") || !strings.Contains(got[0].Content, `"name":"get_weather"`) {
		t.Fatalf("system message: %+v", got[0])
	}
	if want := `{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}`; got[2].Content != want || got[2].ToolCalls != nil {
		t.Fatalf("assistant call rendered as %+v, want content %q", got[2], want)
	}
	if got[3].Role != "tool" || got[3].Content != "18 C" {
		t.Fatalf("tool message: %+v", got[3])
	}
	plain := genericMessages(msgs[1:2], []llm.Tool{weather}, llm.ToolChoice{Mode: llm.ToolsRequired})
	if len(plain) != 2 || plain[0].Role != "system" || !strings.Contains(plain[0].Content, "must call at least one") || plain[1].Content != "Weather in Paris?" {
		t.Fatalf("no system message: %+v", plain)
	}
}

// toolAnswers are answers in the forms the grammar allows, with what they
// mean.
var toolAnswers = []struct {
	text    string
	content string
	calls   []call
}{
	{`{"response": "Hello, \"world\"\n\u00e9\ud83d\ude00 \\ done"}`, "Hello, \"world\"\n\u00e9\U0001F600 \\ done", nil},
	{` {  "response" :"plain" }`, "plain", nil},
	{`{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]}`, "", []call{{"get_weather", `{"city":"Paris","unit":"c"}`}}},
	{`{"tool_calls":[{"name":"a","arguments":{}},{"name":"b","arguments":{"x":[1,2]}}]}`, "", []call{{"a", `{}`}, {"b", `{"x":[1,2]}`}}},
	{`{"response": "cut off at max_tok\u00`, "cut off at max_tok", nil},             // the text so far
	{`{"tool_calls": [{"name": "get_wea`, `{"tool_calls": [{"name": "get_wea`, nil}, // truncated call: raw text
}

func TestParseGeneric(t *testing.T) {
	for _, a := range toolAnswers {
		content, calls := parseGeneric(a.text)
		if content != a.content || !reflect.DeepEqual(functions(calls), a.calls) {
			t.Errorf("%s: got %q %+v, want %q %+v", a.text, content, calls, a.content, a.calls)
		}
	}
}

type call struct{ name, args string }

func functions(calls []llm.ToolCall) []call {
	var out []call
	for _, c := range calls {
		out = append(out, call{c.Name, c.Arguments})
	}
	return out
}

// TestGenericStreamSplits feeds every answer cut at every pair of points, so
// escapes, surrogate pairs and the opening key arrive in pieces.
func TestGenericStreamSplits(t *testing.T) {
	for _, a := range toolAnswers {
		for i := 0; i <= len(a.text); i++ {
			for j := i; j <= len(a.text); j++ {
				var s toolStream
				got := s.Add(a.text[:i]) + s.Add(a.text[i:j]) + s.Add(a.text[j:])
				rest, calls := s.Finish()
				got += rest
				if got != a.content || !reflect.DeepEqual(functions(calls), a.calls) {
					t.Fatalf("%s split at %d,%d: got %q %+v, want %q %+v", a.text, i, j, got, calls, a.content, a.calls)
				}
			}
		}
	}
	// Text streams before the answer ends.
	var s toolStream
	if got := s.Add(`{"response": "Hel`); got != "Hel" {
		t.Fatalf("streamed %q before the end, want Hel", got)
	}
}
