package anthropic

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// TestChatConversion: a conversation with a system prompt, thinking, a
// tool use and its (failed) result becomes the boundary's messages, with
// the call answered by name; tool_choice and thinking map across.
func TestChatConversion(t *testing.T) {
	var r MessagesRequest
	body := `{"model":"m","max_tokens":10,"system":[{"type":"text","text":"Be brief."}],
	  "tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
	  "tool_choice":{"type":"any","disable_parallel_tool_use":true},"thinking":{"type":"disabled"},
	  "messages":[
	    {"role":"user","content":"Weather?"},
	    {"role":"assistant","content":[{"type":"thinking","thinking":"look it up","signature":""},{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Rome"}}]},
	    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"no network"}],"is_error":true},{"type":"text","text":"Try again?"}]}]}`
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if e := r.Validate(openai.DefaultLimits(), openai.ModelInfo{}); e != nil {
		t.Fatal(e)
	}
	msgs, tools, choice, think := r.Chat()
	want := []llm.Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Weather?"},
		{Role: "assistant", Content: "Checking.", Reasoning: "look it up", ToolCalls: []llm.ToolCall{{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"Rome"}`}}},
		{Role: "tool", Content: "Error: no network", ToolCallID: "toolu_1", ToolName: "get_weather"},
		{Role: "user", Content: "Try again?"},
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Fatalf("messages\n got %+v\nwant %+v", msgs, want)
	}
	if len(tools) != 1 || choice != (llm.ToolChoice{Mode: llm.ToolsRequired, Single: true}) || think != llm.ThinkOff {
		t.Fatalf("tools %+v choice %+v think %q", tools, choice, think)
	}
	if p := r.Params(7); p.MaxTokens != 10 || p.Temperature != 1 || p.Seed != 7 {
		t.Fatalf("params %+v", p)
	}
}

// TestErrorTypes maps statuses to Anthropic's error types.
func TestErrorTypes(t *testing.T) {
	for status, want := range map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
		404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"} {
		if got := ErrorType(status); got != want {
			t.Errorf("%d: %s, want %s", status, got, want)
		}
	}
}
