package server

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/llm"
)

// scripted is a backend whose model "answers" with fixed events, as a
// runner emits them after its chat format split the text: what the server
// does with reasoning and tool calls, apart from any model.
type scripted struct {
	llm.Backend
	events []llm.Event
	got    *llm.Request
}

func (s *scripted) Info(_ context.Context, model string) (llm.ModelInfo, *llm.Error) {
	return llm.ModelInfo{ID: model, State: llm.StateLoaded, VocabSize: 100, Context: 4096, Parallel: 4}, nil
}
func (s *scripted) Models(context.Context) []llm.ModelInfo { return nil }
func (s *scripted) Load() llm.LoadInfo                     { return llm.LoadInfo{} }
func (s *scripted) Generate(_ context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	s.got = req
	return &replay{events: s.events}, nil
}

type replay struct {
	events []llm.Event
	i      int
}

func (r *replay) Header() llm.Header { return llm.Header{PromptTokens: []int{7}} }
func (r *replay) Recv(context.Context) (llm.Event, bool) {
	if r.i >= len(r.events) {
		return llm.Event{}, false
	}
	r.i++
	return r.events[r.i-1], true
}
func (r *replay) Close() {}

// TestReasoningAndCallsReachTheClient: reasoning comes back as
// reasoning_content (message and deltas), calls as tool_calls with ids and
// indexes and finish_reason tool_calls, reasoning tokens in usage; and the
// request's think switch and tools reach the backend as data.
func TestReasoningAndCallsReachTheClient(t *testing.T) {
	tok := []llm.Token{{ID: 5}}
	be := &scripted{events: []llm.Event{
		{Reasoning: "Think", Tokens: tok},
		{Reasoning: "ing.", Tokens: tok},
		{Text: "Calling.", Tokens: tok},
		{ToolCalls: []llm.ToolCall{{Index: 0, ID: "call_a", Name: "get_weather", Arguments: `{"unit":"celsius","days":1}`}}, Tokens: tok},
		{ToolCalls: []llm.ToolCall{{Index: 1, ID: "call_b", Name: "get_time", Arguments: `{}`}}, Tokens: tok, Finish: llm.FinishStop},
		{Final: true, Usage: &llm.Usage{PromptTokens: 7, CompletionTokens: 5, ReasoningTokens: 2}},
	}}
	hs := httptest.NewServer(New(be, Options{}).Handler())
	defer hs.Close()
	cfg := goopenai.DefaultConfig("")
	cfg.BaseURL = hs.URL + "/v1"
	client := goopenai.NewClientWithConfig(cfg)
	req := goopenai.ChatCompletionRequest{Model: "m", Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi"}}, Tools: testTools, ReasoningEffort: "high"}
	resp, err := client.CreateChatCompletion(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if be.got.Think != llm.ThinkHigh || len(be.got.Tools) != 2 || be.got.ToolChoice.Mode != llm.ToolsAuto {
		t.Fatalf("the backend got think %q, tools %+v, choice %+v", be.got.Think, be.got.Tools, be.got.ToolChoice)
	}
	m := resp.Choices[0].Message
	if m.ReasoningContent != "Thinking." || m.Content != "Calling." || len(m.ToolCalls) != 2 || m.ToolCalls[1].ID != "call_b" || resp.Choices[0].FinishReason != goopenai.FinishReasonToolCalls {
		t.Fatalf("message %+v, finish %s", m, resp.Choices[0].FinishReason)
	}
	if d := resp.Usage.CompletionTokensDetails; d == nil || d.ReasoningTokens != 2 {
		t.Fatalf("usage %+v", resp.Usage)
	}

	st, err := client.CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var reasoning, content strings.Builder
	var ids []string
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
			reasoning.WriteString(c.Delta.ReasoningContent)
			content.WriteString(c.Delta.Content)
			for _, d := range c.Delta.ToolCalls {
				if d.Index == nil || *d.Index != len(ids) {
					t.Fatalf("delta index %v after %d calls", d.Index, len(ids))
				}
				ids = append(ids, d.ID)
			}
			if c.FinishReason != "" {
				finish = c.FinishReason
			}
		}
	}
	if reasoning.String() != "Thinking." || content.String() != "Calling." || strings.Join(ids, ",") != "call_a,call_b" || finish != goopenai.FinishReasonToolCalls {
		t.Fatalf("streamed reasoning %q content %q calls %v finish %s", reasoning.String(), content.String(), ids, finish)
	}
}
