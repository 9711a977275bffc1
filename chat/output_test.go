package chat

import (
	"strings"
	"testing"

	"github.com/llmux/llmux/chat/chattest"
	"github.com/llmux/llmux/llm"
)

// qwenTemplate is an ollama-syntax template in Qwen3's style: reasoning in
// <think> tags, calls in <tool_call> tags (what a store's template layer
// looks like).
const qwenTemplate = `{{- if .Tools }}<|im_start|>system
# Tools
{{ range .Tools }}{{ . }}
{{ end }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}{{ if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
`

// split is one choice's output read in pieces: what came out of each
// kind, whole.
type split struct {
	content, reasoning string
	calls              []llm.ToolCall
}

func readAll(o *Output, pieces []string) split {
	var s split
	var c, r strings.Builder
	for i, p := range pieces {
		got := o.Add(p, i == len(pieces)-1)
		c.WriteString(got.Content)
		r.WriteString(got.Reasoning)
		s.calls = append(s.calls, got.Calls...)
	}
	s.content, s.reasoning = strings.TrimSpace(c.String()), strings.TrimSpace(r.String())
	return s
}

// TestOutputSplitsReasoningContentAndCalls feeds scripted model outputs
// through the formats' parsers cut at every pair of points (so tags and
// JSON arrive split across tokens) and wants the same reasoning, content
// and calls as read whole: for Qwen3's family parser (the prompt opens the
// reasoning) and for a template's tags and tool-call tag.
func TestOutputSplitsReasoningContentAndCalls(t *testing.T) {
	msgs := []llm.Message{{Role: "user", Content: "Weather in Rome?"}}
	tools := []llm.Tool{{Name: "get_weather", Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"}}}`)}}
	family, _ := Choose(Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja})
	tmpl, err := Choose(Facts{Ollama: &Ollama{Template: qwenTemplate}})
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.Info.Tools != "native" || tmpl.Info.Reasoning != "tags" {
		t.Fatalf("template format %+v", tmpl.Info)
	}
	want := split{reasoning: "I need the weather.", content: "Let me check.", calls: []llm.ToolCall{{Name: "get_weather", Arguments: `{"city":"Rome"}`}}}
	for _, tc := range []struct {
		name   string
		fm     Format
		output string
	}{
		{"family", family, "I need the weather.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"},
		{"template", tmpl, "<think>I need the weather.</think>Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"},
	} {
		plan, e := tc.fm.Prepare(&llm.Request{Messages: msgs, Tools: tools, ToolChoice: llm.ToolChoice{Mode: llm.ToolsAuto}}, nil)
		if e != nil {
			t.Fatal(e)
		}
		check := func(how string, got split) {
			t.Helper()
			if got.content != want.content || got.reasoning != want.reasoning || len(got.calls) != 1 ||
				got.calls[0].Name != want.calls[0].Name || got.calls[0].Arguments != want.calls[0].Arguments ||
				got.calls[0].Index != 0 || !strings.HasPrefix(got.calls[0].ID, "call_") {
				t.Fatalf("%s %s: got %+v, want %+v", tc.name, how, got, want)
			}
		}
		check("whole", readAll(plan.Output(), []string{tc.output}))
		o := tc.output
		for i := 0; i <= len(o); i++ {
			for j := i; j <= len(o); j += 3 {
				check("split", readAll(plan.Output(), []string{o[:i], o[i:j], o[j:]}))
			}
		}
	}
}

// TestOutputWithoutToolsOrReasoning: with reasoning off and no tools the
// text is content as it came, and a format with no parser passes text
// through untouched.
func TestOutputWithoutToolsOrReasoning(t *testing.T) {
	family, _ := Choose(Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja})
	plan, _ := family.Prepare(&llm.Request{Messages: []llm.Message{{Role: "user", Content: "hi"}}, Think: llm.ThinkOff}, nil)
	if got := readAll(plan.Output(), []string{"Hel", "lo ", "there"}); got.content != "Hello there" || got.reasoning != "" || got.calls != nil {
		t.Fatalf("reasoning off: %+v", got)
	}
	none, _ := Choose(Facts{})
	plan, _ = none.Prepare(&llm.Request{Messages: []llm.Message{{Role: "user", Content: "hi"}}}, nil)
	if got := readAll(plan.Output(), []string{"<think>a</think>", "<tool_call>{}</tool_call>"}); got.content != "<think>a</think><tool_call>{}</tool_call>" {
		t.Fatalf("no format: %+v", got)
	}
}

// TestMalformedCallComesBackAsText: an unforced call the parser cannot
// read (not JSON, an unknown function) yields no call and no error, and
// its text comes back as content.
func TestMalformedCallComesBackAsText(t *testing.T) {
	family, _ := Choose(Facts{Architecture: "qwen3", GGUFTemplate: chattest.Qwen3Jinja})
	tools := []llm.Tool{{Name: "get_weather"}}
	for _, out := range []string{
		"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \n</tool_call>",
		"<tool_call>\nnot json at all\n</tool_call>",
	} {
		plan, _ := family.Prepare(&llm.Request{Messages: []llm.Message{{Role: "user", Content: "hi"}}, Tools: tools, ToolChoice: llm.ToolChoice{Mode: llm.ToolsAuto}, Think: llm.ThinkOff}, nil)
		got := readAll(plan.Output(), []string{out})
		if len(got.calls) != 0 || !strings.Contains(got.content, "tool_call") {
			t.Errorf("%q: got %+v, want the text as content", out, got)
		}
	}
}
