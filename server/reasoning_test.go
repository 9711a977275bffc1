package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// slowStart is a scripted backend whose Generate takes a while, as a cold
// model's load does.
type slowStart struct {
	scripted
	wait time.Duration
}

func (s *slowStart) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	select {
	case <-time.After(s.wait):
	case <-ctx.Done():
		return nil, llm.Errorf(llm.CodeCancelled, "", "cancelled")
	}
	return s.scripted.Generate(ctx, req)
}

// TestStreamsKeptAliveWhileTheModelLoads: a stream whose model takes
// longer than the keep-alive interval to start gets keep-alives (SSE
// comments; Anthropic's message_start and pings) before its first event,
// on every API, and then its answer.
func TestStreamsKeptAliveWhileTheModelLoads(t *testing.T) {
	be := &slowStart{wait: 300 * time.Millisecond, scripted: scripted{events: []llm.Event{{Text: "hi", Tokens: []llm.Token{{ID: 5}}, Finish: llm.FinishStop}, {Final: true, Usage: &llm.Usage{PromptTokens: 3, CompletionTokens: 1}}}}}
	hs := httptest.NewServer(New(be, Options{KeepAliveInterval: 50 * time.Millisecond}).Handler())
	defer hs.Close()
	for _, tc := range []struct{ path, body, alive, answer string }{
		{"/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`, ": keep-alive\n\n", `"content":"hi"`},
		{"/v1/completions", `{"model":"m","stream":true,"prompt":"x"}`, ": keep-alive\n\n", `"text":"hi"`},
		{"/v1/messages", `{"model":"m","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"x"}]}`, "event: message_start\n", `"text":"hi"`},
		{"/v1/responses", `{"model":"m","stream":true,"input":"x"}`, ": keep-alive\n\n", `"delta":"hi"`},
	} {
		resp, err := http.Post(hs.URL+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		first := strings.Index(body, "data: ")
		if tc.path == "/v1/messages" {
			first = strings.Index(body, "event: content_block_start")
		}
		if !strings.HasPrefix(body, tc.alive) || strings.Count(body[:max(first, 0)], "keep-alive")+strings.Count(body[:max(first, 0)], "event: ping") < 2 || !strings.Contains(body, tc.answer) {
			t.Errorf("%s: no keep-alive before the answer:\n%s", tc.path, body)
		}
		if strings.Count(body, "event: message_start") > 1 {
			t.Errorf("%s: message_start twice:\n%s", tc.path, body)
		}
	}
}
