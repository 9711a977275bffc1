package openai

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
)

func chatWithTools(t *testing.T, body string) *ChatRequest {
	t.Helper()
	var r ChatRequest
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return &r
}

const weatherTool = `{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city"]}}}`

func TestToolValidation(t *testing.T) {
	msgs := `"model":"m","messages":[{"role":"user","content":"hi"}]`
	cases := []struct {
		body, param string // param "" means valid
	}{
		{`{` + msgs + `,"tools":[` + weatherTool + `]}`, ""},
		{`{` + msgs + `,"tools":[` + weatherTool + `],"tool_choice":"required","parallel_tool_calls":false}`, ""},
		{`{` + msgs + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`, ""},
		{`{` + msgs + `,"tool_choice":"none"}`, ""},
		{`{` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none","response_format":{"type":"json_object"}}`, ""},
		{`{` + msgs + `,"tools":[{"type":"retrieval","function":{"name":"f"}}]}`, "tools[0].type"},
		{`{` + msgs + `,"tools":[{"type":"function","function":{"name":"bad name"}}]}`, "tools[0].function.name"},
		{`{` + msgs + `,"tools":[{"type":"function","function":{"name":""}}]}`, "tools[0].function.name"},
		{`{` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]}`, "tools[1].function.name"},
		{`{` + msgs + `,"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]}`, "tools[0].function.parameters"},
		{`{` + msgs + `,"tool_choice":"auto"}`, "tool_choice"},
		{`{` + msgs + `,"tools":[` + weatherTool + `],"tool_choice":"sometimes"}`, "tool_choice"},
		{`{` + msgs + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"other"}}}`, "tool_choice"},
		{`{` + msgs + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function"}}`, "tool_choice"},
		{`{` + msgs + `,"tools":[` + weatherTool + `],"response_format":{"type":"json_object"}}`, "response_format"},
		{`{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_calls"},
		{`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"","arguments":"{}"}}]}]}`, "messages[0].tool_calls[0].function.name"},
	}
	for _, tc := range cases {
		e := chatWithTools(t, tc.body).Validate(DefaultLimits(), ModelInfo{VocabSize: 512, Context: 512, Parallel: 4})
		switch {
		case tc.param == "" && e != nil:
			t.Errorf("%s: unexpected error %v", tc.body, e)
		case tc.param != "" && (e == nil || e.Param == nil || *e.Param != tc.param):
			t.Errorf("%s: got %+v, want an error on %s", tc.body, e, tc.param)
		}
	}
	many := make([]string, DefaultLimits().MaxTools+1)
	for i := range many {
		many[i] = `{"type":"function","function":{"name":"f` + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + `"}}`
	}
	if e := chatWithTools(t, `{`+msgs+`,"tools":[`+strings.Join(many, ",")+`]}`).Validate(DefaultLimits(), ModelInfo{VocabSize: 512, Parallel: 4}); e == nil || *e.Param != "tools" {
		t.Errorf("too many tools: %v", e)
	}
}

func TestToolGrammars(t *testing.T) {
	msgs := `"model":"m","messages":[{"role":"user","content":"hi"}]`
	for _, extra := range []string{
		`"tools":[` + weatherTool + `]`,
		`"tools":[` + weatherTool + `,{"type":"function","function":{"name":"noargs"}}],"tool_choice":"required"`,
		`"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false`,
	} {
		r := chatWithTools(t, `{`+msgs+`,`+extra+`}`)
		if !r.ToolsActive() {
			t.Fatalf("%s: tools not active", extra)
		}
		p := r.Params(-1, 1)
		if p.Constraint == nil || p.Constraint.Kind != llm.JSONSchema || p.Constraint.Param != "tools" {
			t.Fatalf("%s: constraint %+v", extra, p.Constraint)
		}
		g, err := engine.SchemaToGrammar(p.Constraint.Schema)
		if err != nil {
			t.Fatalf("%s: %v", extra, err)
		}
		if !strings.Contains(g, "get_weather") || !strings.Contains(g, "tool_calls") {
			t.Fatalf("%s: grammar lacks the tool form:\n%s", extra, g)
		}
		if auto := strings.Contains(g, "response"); auto != (r.ToolChoice == nil) {
			t.Fatalf("%s: response form in grammar = %v", extra, auto)
		}
	}
	// A parameters schema that llama.cpp cannot turn into a grammar fails
	// behind the boundary, attributed to tools.
	bad := chatWithTools(t, `{`+msgs+`,"tools":[{"type":"function","function":{"name":"f","parameters":{"$ref":"#/nowhere"}}}]}`)
	p := bad.Params(-1, 1)
	if _, err := engine.SchemaToGrammar(p.Constraint.Schema); err == nil || p.Constraint.Param != "tools" {
		t.Fatalf("unresolvable $ref: %v, param %q", err, p.Constraint.Param)
	}
}

func TestTemplateMessagesWithTools(t *testing.T) {
	r := chatWithTools(t, `{"model":"m","tools":[`+weatherTool+`],"messages":[
		{"role":"developer","content":"Be brief."},
		{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
		{"role":"tool","tool_call_id":"call_1","content":"18 C"}]}`)
	got := r.TemplateMessages()
	if len(got) != 4 || got[0].Role != "system" || !strings.HasPrefix(got[0].Content.Text, "Be brief.\n\n") || !strings.Contains(got[0].Content.Text, `"name":"get_weather"`) {
		t.Fatalf("system message: %+v", got[0])
	}
	if want := `{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}`; got[2].Content.Text != want {
		t.Fatalf("assistant call rendered as %q, want %q", got[2].Content.Text, want)
	}
	if got[3].Role != "tool" || got[3].Content.Text != "18 C" {
		t.Fatalf("tool message: %+v", got[3])
	}
	r.ToolChoice = json.RawMessage(`"none"`)
	if got := r.TemplateMessages(); len(got) != 4 || strings.Contains(got[0].Content.Text, "get_weather") {
		t.Fatalf("tool_choice none still describes tools: %+v", got[0])
	}
	dev := chatWithTools(t, `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"developer","content":"be brief"}]}`)
	if got := dev.TemplateMessages(); got[1].Role != "system" || got[1].Content.Text != "be brief" {
		t.Fatalf("developer message rendered as %+v", got[1])
	}
	plain := chatWithTools(t, `{"model":"m","tools":[`+weatherTool+`],"messages":[{"role":"user","content":"hi"}]}`)
	if got := plain.TemplateMessages(); len(got) != 2 || got[0].Role != "system" || got[1].Content.Text != "hi" {
		t.Fatalf("no system message: %+v", got)
	}
}

// toolAnswers are answers in the forms the grammar allows, with what they
// mean.
var toolAnswers = []struct {
	text    string
	content string
	calls   []FunctionCall
}{
	{`{"response": "Hello, \"world\"\n\u00e9\ud83d\ude00 \\ done"}`, "Hello, \"world\"\n\u00e9\U0001F600 \\ done", nil},
	{` {  "response" :"plain" }`, "plain", nil},
	{`{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]}`, "", []FunctionCall{{"get_weather", `{"city":"Paris","unit":"c"}`}}},
	{`{"tool_calls":[{"name":"a","arguments":{}},{"name":"b","arguments":{"x":[1,2]}}]}`, "", []FunctionCall{{"a", `{}`}, {"b", `{"x":[1,2]}`}}},
	{`{"response": "cut off at max_tok\u00`, "cut off at max_tok", nil},             // the text so far
	{`{"tool_calls": [{"name": "get_wea`, `{"tool_calls": [{"name": "get_wea`, nil}, // truncated call: raw text
}

func TestParseToolOutput(t *testing.T) {
	for _, a := range toolAnswers {
		content, calls := ParseToolOutput(a.text)
		if content != a.content || !reflect.DeepEqual(functions(calls), a.calls) {
			t.Errorf("%s: got %q %+v, want %q %+v", a.text, content, calls, a.content, a.calls)
		}
	}
}

func functions(calls []ToolCall) []FunctionCall {
	var out []FunctionCall
	for _, c := range calls {
		if c.Type != "function" {
			return nil
		}
		out = append(out, c.Function)
	}
	return out
}

// TestToolStreamSplits feeds every answer cut at every pair of points, so
// escapes, surrogate pairs and the opening key arrive in pieces.
func TestToolStreamSplits(t *testing.T) {
	for _, a := range toolAnswers {
		for i := 0; i <= len(a.text); i++ {
			for j := i; j <= len(a.text); j++ {
				var s ToolStream
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
	var s ToolStream
	if got := s.Add(`{"response": "Hel`); got != "Hel" {
		t.Fatalf("streamed %q before the end, want Hel", got)
	}
}
