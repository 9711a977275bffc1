package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/chat/chattest"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/scheduler"
)

var weatherParams = json.RawMessage(`{"type":"object","properties":{"unit":{"enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["unit","days"],"additionalProperties":false}`)

var testTools = []goopenai.Tool{
	{Type: goopenai.ToolTypeFunction, Function: &goopenai.FunctionDefinition{Name: "get_weather", Description: "The weather forecast", Parameters: weatherParams}},
	{Type: goopenai.ToolTypeFunction, Function: &goopenai.FunctionDefinition{Name: "get_time", Description: "The time now", Parameters: json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`)}},
}

// checkCall fails unless the call is a well-formed call of a test tool with
// arguments that validate against its parameters.
func checkCall(t *testing.T, c goopenai.ToolCall) {
	t.Helper()
	if !strings.HasPrefix(c.ID, "call_") || c.Type != goopenai.ToolTypeFunction {
		t.Fatalf("tool call metadata: %+v", c)
	}
	dec := json.NewDecoder(strings.NewReader(c.Function.Arguments))
	dec.DisallowUnknownFields()
	switch c.Function.Name {
	case "get_weather":
		var a struct {
			Unit *string `json:"unit"`
			Days *int    `json:"days"`
		}
		if err := dec.Decode(&a); err != nil || a.Unit == nil || (*a.Unit != "celsius" && *a.Unit != "fahrenheit") || a.Days == nil || *a.Days < 1 || *a.Days > 7 {
			t.Fatalf("get_weather arguments %q do not validate: %v", c.Function.Arguments, err)
		}
	case "get_time":
		var a struct{}
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("get_time arguments %q: %v", c.Function.Arguments, err)
		}
	default:
		t.Fatalf("call of an unknown function %q", c.Function.Name)
	}
}

// streamChat runs a streamed chat request and gathers what a client
// accumulates: content, tool calls by index, the finish reason.
func streamChat(t *testing.T, ts *testServer, req goopenai.ChatCompletionRequest) (string, []goopenai.ToolCall, goopenai.FinishReason) {
	t.Helper()
	req.Stream = true
	st, err := ts.client.CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var content strings.Builder
	var calls []goopenai.ToolCall
	var finish goopenai.FinishReason
	for {
		ch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range ch.Choices {
			content.WriteString(c.Delta.Content)
			for _, d := range c.Delta.ToolCalls {
				if d.Index == nil {
					t.Fatalf("streamed tool call without index: %+v", d)
				}
				for len(calls) <= *d.Index {
					calls = append(calls, goopenai.ToolCall{})
				}
				acc := &calls[*d.Index]
				if d.ID != "" {
					acc.ID, acc.Type = d.ID, d.Type
				}
				acc.Function.Name += d.Function.Name
				acc.Function.Arguments += d.Function.Arguments
			}
			if c.FinishReason != "" {
				finish = c.FinishReason
			}
		}
	}
	return content.String(), calls, finish
}

// TestToolCalls runs tool calls on a model whose template has no tool
// syntax (ChatML: the generic form) and on one of the Qwen3 family (native
// Hermes calls, reasoning on by default; a forced call still goes through
// the generic form's grammar).
func TestToolCalls(t *testing.T) {
	qwen := models.Presets["small"]
	qwen.Arch, qwen.ChatTemplate = "qwen3", chattest.Qwen3Jinja
	for name, tc := range map[string]struct{ path, format string }{
		"chatml": {modeltest.Preset(t, "small"), `{"template":"chatml","source":"gguf","tools":"generic","stop":["\u003c|im_start|\u003e","\u003c|im_end|\u003e"]}`},
		"qwen3":  {modeltest.Synth(t, qwen), `{"template":"qwen3-vl-thinking","source":"family","tools":"native","reasoning":"parser","parser":"qwen3-vl-thinking"}`},
	} {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, tc.path, Options{}, scheduler.Options{})
			resp, err := http.Get(ts.URL + "/v1/models")
			if err != nil {
				t.Fatal(err)
			}
			var list struct {
				Data []struct {
					LLMux struct {
						Chat json.RawMessage `json:"chat"`
					} `json:"llmux"`
				} `json:"data"`
			}
			err = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
			if err != nil || len(list.Data) != 1 || string(list.Data[0].LLMux.Chat) != tc.format {
				t.Fatalf("/v1/models chat format %+v (%v), want %s", list, err, tc.format)
			}
			toolCalls(t, ts)
		})
	}
}

func toolCalls(t *testing.T, ts *testServer) {
	ctx := context.Background()
	ask := []goopenai.ChatCompletionMessage{{Role: "user", Content: "What will the weather be?"}}

	// A named function, non-streamed: exactly one valid call.
	named := goopenai.ChatCompletionRequest{
		Model: ts.model, MaxTokens: 600, Seed: ptr(1), Messages: ask, Tools: testTools, ParallelToolCalls: false,
		ToolChoice: goopenai.ToolChoice{Type: goopenai.ToolTypeFunction, Function: goopenai.ToolFunction{Name: "get_weather"}},
	}
	resp, err := ts.client.CreateChatCompletion(ctx, named)
	if err != nil {
		t.Fatal(err)
	}
	ch := resp.Choices[0]
	if ch.FinishReason != goopenai.FinishReasonToolCalls || len(ch.Message.ToolCalls) != 1 || ch.Message.Content != "" || ch.Message.ToolCalls[0].Function.Name != "get_weather" {
		t.Fatalf("named tool choice: %+v", ch)
	}
	checkCall(t, ch.Message.ToolCalls[0])

	// n = 2: every choice is a call of its own.
	two := named
	two.N = 2
	resp, err = ts.client.CreateChatCompletion(ctx, two)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 2 {
		t.Fatalf("n=2: %d choices", len(resp.Choices))
	}
	for _, ch := range resp.Choices {
		if ch.FinishReason != goopenai.FinishReasonToolCalls || len(ch.Message.ToolCalls) != 1 {
			t.Fatalf("n=2, choice %d: %+v", ch.Index, ch)
		}
		checkCall(t, ch.Message.ToolCalls[0])
	}

	// Required, streamed: calls arrive as indexed deltas and validate.
	required := named
	required.ToolChoice, required.ParallelToolCalls = "required", nil
	content, calls, finish := streamChat(t, ts, required)
	if finish != goopenai.FinishReasonToolCalls || len(calls) == 0 || content != "" {
		t.Fatalf("required tool choice, streamed: %q %+v %s", content, calls, finish)
	}
	for _, c := range calls {
		checkCall(t, c)
	}

	// Auto, one seed: streamed and non-streamed answers agree, whichever
	// form the model picks, cut off or not.
	auto := goopenai.ChatCompletionRequest{Model: ts.model, MaxTokens: 120, Seed: ptr(5), Messages: ask, Tools: testTools}
	one, err := ts.client.CreateChatCompletion(ctx, auto)
	if err != nil {
		t.Fatal(err)
	}
	content, calls, finish = streamChat(t, ts, auto)
	oc := one.Choices[0]
	if content != oc.Message.Content || finish != oc.FinishReason || len(calls) != len(oc.Message.ToolCalls) {
		t.Fatalf("auto: streamed %q %+v %s, non-streamed %q %+v %s", content, calls, finish, oc.Message.Content, oc.Message.ToolCalls, oc.FinishReason)
	}
	for i, c := range calls {
		if c.Function != oc.Message.ToolCalls[i].Function {
			t.Fatalf("auto call %d: streamed %+v, non-streamed %+v", i, c.Function, oc.Message.ToolCalls[i].Function)
		}
		checkCall(t, c)
	}
	if finish == goopenai.FinishReasonToolCalls && len(calls) == 0 {
		t.Fatal("finish_reason tool_calls without calls")
	}

	// The conversation goes on with the call and its result; tool_choice
	// none answers in plain text.
	history := append(ask,
		goopenai.ChatCompletionMessage{Role: "assistant", ToolCalls: []goopenai.ToolCall{{ID: "call_1", Type: goopenai.ToolTypeFunction, Function: goopenai.FunctionCall{Name: "get_weather", Arguments: `{"unit":"celsius","days":2}`}}}},
		goopenai.ChatCompletionMessage{Role: "tool", ToolCallID: "call_1", Content: "Sunny, 21 C"},
	)
	after, err := ts.client.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{Model: ts.model, MaxTokens: 10, Messages: history, Tools: testTools, ToolChoice: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Choices[0].Message.ToolCalls) != 0 || after.Choices[0].FinishReason == goopenai.FinishReasonToolCalls {
		t.Fatalf("tool_choice none made calls: %+v", after.Choices[0])
	}
}
