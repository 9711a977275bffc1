package openai

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

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

// TestRequestToolsCrossTheBoundaryAsData checks what the model's chat
// format receives: tools with their schemas, the choice, earlier calls with
// ids, and tool results with the name of the call they answer.
func TestRequestToolsCrossTheBoundaryAsData(t *testing.T) {
	r := chatWithTools(t, `{"model":"m","tools":[`+weatherTool+`],"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false,"messages":[
		{"role":"developer","content":"Be brief."},
		{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"reasoning_content":"look it up","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
		{"role":"tool","tool_call_id":"call_1","content":"18 C"}]}`)
	if e := r.Validate(DefaultLimits(), ModelInfo{VocabSize: 512, Context: 512, Parallel: 4}); e != nil {
		t.Fatal(e)
	}
	tools, choice := r.LLMTools()
	if len(tools) != 1 || tools[0].Name != "get_weather" || !strings.Contains(string(tools[0].Parameters), `"city"`) {
		t.Fatalf("tools %+v", tools)
	}
	if choice != (llm.ToolChoice{Mode: llm.ToolsFunction, Name: "get_weather", Single: true}) {
		t.Fatalf("choice %+v", choice)
	}
	msgs := r.LLMMessages()
	want := []llm.Message{
		{Role: "developer", Content: "Be brief."},
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", Reasoning: "look it up", ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city": "Paris"}`}}},
		{Role: "tool", Content: "18 C", ToolCallID: "call_1", ToolName: "get_weather"},
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Fatalf("messages\n got %+v\nwant %+v", msgs, want)
	}
	none := chatWithTools(t, `{"model":"m","tools":[`+weatherTool+`],"tool_choice":"none","messages":[{"role":"user","content":"hi"}]}`)
	if _, c := none.LLMTools(); c.Mode != llm.ToolsNone {
		t.Fatalf("tool_choice none became %+v", c)
	}
}

// TestReasoningSwitches checks think, reasoning_effort and
// chat_template_kwargs.enable_thinking, and that anything else in the
// kwargs is refused.
func TestReasoningSwitches(t *testing.T) {
	msgs := `"model":"m","messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		extra string
		want  llm.Think
		param string
	}{
		{``, llm.ThinkDefault, ""},
		{`,"think":true`, llm.ThinkOn, ""},
		{`,"think":false`, llm.ThinkOff, ""},
		{`,"think":"high"`, llm.ThinkHigh, ""},
		{`,"reasoning_effort":"low"`, llm.ThinkLow, ""},
		{`,"reasoning_effort":"none"`, llm.ThinkOff, ""},
		{`,"chat_template_kwargs":{"enable_thinking":false}`, llm.ThinkOff, ""},
		{`,"think":"very"`, "", "think"},
		{`,"reasoning_effort":"max"`, "", "reasoning_effort"},
		{`,"chat_template_kwargs":{"add_generation_prompt":false}`, "", "chat_template_kwargs"},
		{`,"chat_template":"{{ messages }}"`, "", "chat_template"},
	} {
		r := chatWithTools(t, `{`+msgs+tc.extra+`}`)
		e := r.Validate(DefaultLimits(), ModelInfo{VocabSize: 512, Context: 512, Parallel: 4})
		switch {
		case tc.param != "":
			if e == nil || e.Param == nil || *e.Param != tc.param {
				t.Errorf("%s: got %v, want an error on %s", tc.extra, e, tc.param)
			}
		case e != nil:
			t.Errorf("%s: %v", tc.extra, e)
		case r.ThinkMode() != tc.want:
			t.Errorf("%s: think %q, want %q", tc.extra, r.ThinkMode(), tc.want)
		}
	}
}
