package chat

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/model/renderers"
	"github.com/ollama/ollama/template"

	"github.com/llmux/llmux/chat/chattest"
	"github.com/llmux/llmux/llm"
)

// TestChooseOrder walks the order in which a model's chat format is
// chosen: config, ollama store (unless the config says gguf), family by
// architecture, the GGUF template matched to the ollama index, llama.cpp's
// heuristics, nothing.
func TestChooseOrder(t *testing.T) {
	llama3 := chattest.Jinja(t, "llama3-instruct")
	withTools := "{{ range .Messages }}{{ .Content }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ range .ToolCalls }}<tool_call>{{ .Function.Name }}</tool_call>{{ end }}{{ end }}"
	cases := []struct {
		name  string
		facts Facts
		want  llm.ChatFormat
	}{
		{"nothing", Facts{Architecture: "llama"}, llm.ChatFormat{Template: "none", Source: "none", Tools: "generic"}},
		{"gguf chatml", Facts{Architecture: "llama", GGUFTemplate: chattest.Jinja(t, "chatml")},
			llm.ChatFormat{Template: "chatml", Source: "gguf", Tools: "generic", Stop: []string{"<|im_start|>", "<|im_end|>"}}},
		{"gguf llama3", Facts{Architecture: "llama", GGUFTemplate: llama3},
			llm.ChatFormat{Template: "llama3-instruct", Source: "gguf", Tools: "generic", Stop: []string{"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}}},
		{"gguf unknown", Facts{Architecture: "llama", GGUFTemplate: "{% for m in messages %}[[{{ m.content }}]]{% endfor %}" + strings.Repeat(" ", 400)},
			llm.ChatFormat{Template: "llama.cpp", Source: "llama.cpp", Tools: "generic"}},
		{"family qwen3 thinking", Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja},
			llm.ChatFormat{Template: "qwen3-vl-thinking", Source: "family", Tools: "native", Reasoning: "parser", Parser: "qwen3-vl-thinking"}},
		{"family qwen3 instruct", Facts{Architecture: "qwen3", GGUFTemplate: chattest.Jinja(t, "chatml")},
			llm.ChatFormat{Template: "qwen3-vl-instruct", Source: "family", Tools: "native", Parser: "qwen3-vl-instruct"}},
		{"tool_format generic", Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja, ToolFormat: "generic"},
			llm.ChatFormat{Template: "qwen3-vl-thinking", Source: "family", Tools: "generic", Reasoning: "parser", Parser: "qwen3-vl-thinking"}},
		{"ollama renderer", Facts{Architecture: "qwen3", GGUFTemplate: llama3, Ollama: &Ollama{Renderer: "qwen3-coder", Parser: "qwen3-coder", Stop: []string{"<|im_end|>"}}},
			llm.ChatFormat{Template: "qwen3-coder", Source: "ollama", Tools: "native", Parser: "qwen3-coder", Stop: []string{"<|im_end|>"}}},
		{"ollama template", Facts{Architecture: "llama", GGUFTemplate: llama3, Ollama: &Ollama{Template: withTools}},
			llm.ChatFormat{Template: "ollama", Source: "ollama", Tools: "native", Reasoning: "tags", Tags: []string{"<think>", "</think>"}}},
		{"config gguf over ollama", Facts{Override: "gguf", Architecture: "llama", GGUFTemplate: llama3, Ollama: &Ollama{Template: withTools}},
			llm.ChatFormat{Template: "llama3-instruct", Source: "gguf", Tools: "generic", Stop: []string{"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}}},
		{"config file", Facts{Override: "/etc/llmux/mine.tmpl", OverrideText: withTools, Ollama: &Ollama{Renderer: "qwen3-coder"}},
			llm.ChatFormat{Template: "/etc/llmux/mine.tmpl", Source: "config", Tools: "native", Reasoning: "tags", Tags: []string{"<think>", "</think>"}}},
		{"config renderer", Facts{Override: "glm-4.7", Architecture: "llama", GGUFTemplate: llama3},
			llm.ChatFormat{Template: "glm-4.7", Source: "config", Tools: "native", Reasoning: "parser", Parser: "glm-4.7"}},
		{"config llama.cpp", Facts{Override: "llama.cpp", Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja},
			llm.ChatFormat{Template: "llama.cpp", Source: "config", Tools: "generic"}},
	}
	for _, tc := range cases {
		fm, err := Choose(tc.facts)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(fm.Info, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, fm.Info, tc.want)
		}
	}
	for _, bad := range []Facts{{Override: "no-such-renderer"}, {Override: "f.tmpl", OverrideText: "{{ .Unclosed"}} {
		if _, err := Choose(bad); err == nil {
			t.Errorf("%+v: chosen without an error", bad)
		}
	}
}

// conversation is a chat with a system prompt, a call and its result, in
// both forms: as llmux's boundary carries it and as an ollama user's
// request would give it to ollama's renderers.
func conversation() ([]llm.Message, []llm.Tool, []api.Message, []api.Tool) {
	msgs := []llm.Message{
		{Role: "system", Content: "You are terse."},
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", Reasoning: "I should look it up.", ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		{Role: "tool", Content: "18 C", ToolCallID: "call_1", ToolName: "get_weather"},
		{Role: "user", Content: "And in Rome?"},
	}
	args := api.NewToolCallFunctionArguments()
	args.Set("city", "Paris")
	am := []api.Message{
		{Role: "system", Content: "You are terse."},
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", Thinking: "I should look it up.", ToolCalls: []api.ToolCall{{ID: "call_1", Function: api.ToolCallFunction{Name: "get_weather", Arguments: args}}}},
		{Role: "tool", Content: "18 C", ToolCallID: "call_1", ToolName: "get_weather"},
		{Role: "user", Content: "And in Rome?"},
	}
	props := api.NewToolPropertiesMap()
	props.Set("city", api.ToolProperty{Type: api.PropertyType{"string"}})
	at := []api.Tool{{Type: "function", Function: api.ToolFunction{Name: "get_weather", Description: "Weather now",
		Parameters: api.ToolFunctionParameters{Type: "object", Properties: props, Required: []string{"city"}}}}}
	tools := []llm.Tool{{Name: "get_weather", Description: "Weather now", Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}}
	return msgs, tools, am, at
}

// TestPromptsEqualOllamas renders the same conversation through llmux's
// chat format and through ollama's own code paths — the module's Go
// template (read from its files) for GGUF templates that match its index,
// its family renderer for Qwen3 — and wants the same prompt, with tools
// and reasoning on and off.
func TestPromptsEqualOllamas(t *testing.T) {
	msgs, tools, am, at := conversation()
	for _, name := range []string{"chatml", "llama3-instruct", "gemma-instruct", "gemma3-instruct", "mistral-instruct", "phi-3"} {
		fm, err := Choose(Facts{Architecture: "llama", GGUFTemplate: chattest.Jinja(t, name)})
		if err != nil || fm.Info.Template != name {
			t.Fatalf("%s: chose %+v, %v", name, fm.Info, err)
		}
		plan, e := fm.Prepare(&llm.Request{Messages: msgs}, nil)
		if e != nil {
			t.Fatalf("%s: %v", name, e)
		}
		tmpl, err := template.Parse(chattest.GoTemplate(t, name))
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		if err := tmpl.Execute(&want, template.Values{Messages: asGenericCalls(am)}); err != nil {
			t.Fatal(err)
		}
		if plan.Prompt != want.String() || !plan.Special {
			t.Errorf("%s:\n got %q\nwant %q", name, plan.Prompt, want.String())
		}
	}
	fm, err := Choose(Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja})
	if err != nil {
		t.Fatal(err)
	}
	for _, think := range []llm.Think{llm.ThinkDefault, llm.ThinkOff, llm.ThinkOn} {
		plan, e := fm.Prepare(&llm.Request{Messages: msgs, Tools: tools, ToolChoice: llm.ToolChoice{Mode: llm.ToolsAuto}, Think: think}, nil)
		if e != nil {
			t.Fatal(e)
		}
		want, err := renderers.RenderWithRenderer("qwen3-vl-thinking", am, at, &api.ThinkValue{Value: think != llm.ThinkOff})
		if err != nil {
			t.Fatal(err)
		}
		if think == llm.ThinkOff {
			// What Qwen3's own template writes for enable_thinking=false,
			// which the Qwen3-VL renderer leaves out.
			want += "<think>\n\n</think>\n\n"
		}
		if plan.Prompt != want {
			t.Errorf("qwen3 think %q:\n got %q\nwant %q", think, plan.Prompt, want)
		}
		if !strings.Contains(plan.Prompt, `"name": "get_weather"`) || plan.Constraint != nil {
			t.Errorf("qwen3 think %q: tools not rendered natively (constraint %v):\n%s", think, plan.Constraint, plan.Prompt)
		}
	}
}

// asGenericCalls is what a template with no tool syntax receives: earlier
// calls as the generic form's JSON content.
func asGenericCalls(am []api.Message) []api.Message {
	out := append([]api.Message(nil), am...)
	for i, m := range out {
		if len(m.ToolCalls) > 0 {
			out[i].Content, out[i].ToolCalls = `{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}`, nil
		}
	}
	return out
}

// TestForcedCallsUseTheGenericGrammar: a required or named call is held
// by the generic form's grammar, with reasoning off, even on a format
// with native tools; auto leaves the native syntax unconstrained.
func TestForcedCallsUseTheGenericGrammar(t *testing.T) {
	msgs, tools, _, _ := conversation()
	fm, _ := Choose(Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja})
	for _, c := range []llm.ToolChoice{{Mode: llm.ToolsRequired}, {Mode: llm.ToolsFunction, Name: "get_weather"}} {
		plan, e := fm.Prepare(&llm.Request{Messages: msgs, Tools: tools, ToolChoice: c}, nil)
		if e != nil {
			t.Fatal(e)
		}
		if plan.Constraint == nil || plan.Constraint.Param != "tools" || plan.think {
			t.Errorf("%+v: constraint %v, think %v", c, plan.Constraint, plan.think)
		}
		if !strings.HasSuffix(plan.Prompt, "<think>\n\n</think>\n\n") {
			t.Errorf("%+v: reasoning not closed in the prompt: %q", c, plan.Prompt[max(0, len(plan.Prompt)-60):])
		}
	}
}
