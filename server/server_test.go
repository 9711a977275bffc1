package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

type testServer struct {
	*httptest.Server
	srv    *Server
	sched  *scheduler.Scheduler
	client *goopenai.Client
	model  string
}

// loadScheduler loads the model at path and builds a scheduler over it
// (4 sequences and 2048 cells unless so says otherwise), not yet running.
func loadScheduler(t testing.TB, path string, so scheduler.Options) (*engine.Model, *scheduler.Scheduler) {
	t.Helper()
	m, err := engine.LoadModel(path, engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if so.Parallel == 0 {
		so.Parallel = 4
	}
	if so.Cells == 0 {
		so.Cells = 2048
	}
	sched, err := scheduler.New(m, so)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, sched
}

func startServer(t testing.TB, path string, opts Options, so scheduler.Options) *testServer {
	t.Helper()
	m, sched := loadScheduler(t, path, so)
	ctx, cancel := context.WithCancel(context.Background())
	go sched.Run(ctx)
	name := strings.TrimSuffix(filepath.Base(path), ".gguf")
	srv := New(backendFor(t, sched, name), opts)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		cancel()
		sched.Close()
		m.Close()
	})
	cfg := goopenai.DefaultConfig("")
	if len(opts.APIKeys) > 0 {
		cfg = goopenai.DefaultConfig(opts.APIKeys[0])
	}
	cfg.BaseURL = hs.URL + "/v1"
	return &testServer{Server: hs, srv: srv, sched: sched, client: goopenai.NewClientWithConfig(cfg), model: name}
}

// backendFor serves sched's model under name through the multiplex
// boundary, as llmux serve does.
func backendFor(t testing.TB, sched *scheduler.Scheduler, name string) *multiplex.Pool {
	t.Helper()
	r := multiplex.NewRunner(name, sched)
	t.Cleanup(r.Close)
	p := multiplex.NewPool(multiplex.PoolOptions{})
	if err := p.Add(name, nil, r); err != nil {
		t.Fatal(err)
	}
	return p
}

func tinyServer(t testing.TB, opts Options) *testServer {
	return startServer(t, modeltest.Preset(t, "tiny"), opts, scheduler.Options{})
}

func TestChatAndCompletionsWithGoOpenAI(t *testing.T) {
	paths := map[string]string{"synth": modeltest.Preset(t, "small")}
	if p := modeltest.StoriesPath(); p != "" {
		paths["stories260K"] = p
	} else {
		t.Log("stories260K absent: running on the synthesized model only")
	}
	for name, path := range paths {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, path, Options{}, scheduler.Options{})
			ctx := context.Background()
			models, err := ts.client.ListModels(ctx)
			if err != nil || len(models.Models) != 1 || models.Models[0].ID != ts.model {
				t.Fatalf("list models: %+v %v", models, err)
			}
			// Chat, non-streaming.
			resp, err := ts.client.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{
				Model: ts.model, MaxTokens: 20, Temperature: 0,
				Messages: []goopenai.ChatCompletionMessage{{Role: "system", Content: "You tell stories."}, {Role: "user", Content: "Once upon a time"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Choices) != 1 || resp.Choices[0].Message.Role != "assistant" || resp.Usage.CompletionTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
				t.Fatalf("chat response: %+v", resp)
			}
			if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Object != "chat.completion" || resp.SystemFingerprint == "" {
				t.Fatalf("chat metadata: %+v", resp)
			}
			if fr := resp.Choices[0].FinishReason; fr != "stop" && fr != "length" {
				t.Fatalf("finish reason %q", fr)
			}
			// Chat, streaming, with usage.
			stream, err := ts.client.CreateChatCompletionStream(ctx, goopenai.ChatCompletionRequest{
				Model: ts.model, MaxTokens: 12, Stream: true, StreamOptions: &goopenai.StreamOptions{IncludeUsage: true},
				Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "Once upon a time"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			var usage *goopenai.Usage
			var finish goopenai.FinishReason
			for {
				ch, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if ch.Usage != nil {
					usage = ch.Usage
				}
				for _, c := range ch.Choices {
					text.WriteString(c.Delta.Content)
					if c.FinishReason != "" {
						finish = c.FinishReason
					}
				}
			}
			stream.Close()
			if usage == nil || usage.CompletionTokens == 0 || finish == "" {
				t.Fatalf("stream: usage %+v finish %q text %q", usage, finish, text.String())
			}
			// Completions with seed: the same seed gives the same text.
			creq := goopenai.CompletionRequest{Model: ts.model, Prompt: "Once upon a time", MaxTokens: 16, Temperature: 0.9, Seed: ptr(1234)}
			a, err := ts.client.CreateCompletion(ctx, creq)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ts.client.CreateCompletion(ctx, creq)
			if err != nil {
				t.Fatal(err)
			}
			if a.Choices[0].Text != b.Choices[0].Text {
				t.Fatalf("same seed, different text: %q vs %q", a.Choices[0].Text, b.Choices[0].Text)
			}
			// n=2 with logprobs.
			nreq := goopenai.CompletionRequest{Model: ts.model, Prompt: "Once upon a time", MaxTokens: 6, N: 2, Temperature: 1, LogProbs: 2}
			nr, err := ts.client.CreateCompletion(ctx, nreq)
			if err != nil {
				t.Fatal(err)
			}
			if len(nr.Choices) != 2 || nr.Choices[0].Index != 0 || nr.Choices[1].Index != 1 || nr.Usage.CompletionTokens == 0 {
				t.Fatalf("n=2: %+v", nr)
			}
			lp := nr.Choices[0].LogProbs
			if len(lp.Tokens) == 0 || len(lp.TokenLogprobs) != len(lp.Tokens) || len(lp.TopLogprobs) != len(lp.Tokens) || len(lp.TopLogprobs[0]) == 0 {
				t.Fatalf("completion logprobs: %+v", lp)
			}
			for _, v := range lp.TokenLogprobs {
				if v > 0 {
					t.Fatalf("positive logprob %v", v)
				}
			}
			// Completions streaming.
			cs, err := ts.client.CreateCompletionStream(ctx, goopenai.CompletionRequest{Model: ts.model, Prompt: "Once upon a time", MaxTokens: 8, Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			chunks := 0
			for {
				_, err := cs.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				chunks++
			}
			cs.Close()
			if chunks == 0 {
				t.Fatal("no completion chunks")
			}
			// Chat logprobs.
			lr, err := ts.client.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{
				Model: ts.model, MaxTokens: 5, LogProbs: true, TopLogProbs: 3,
				Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "Once"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if c := lr.Choices[0].LogProbs; c == nil || len(c.Content) == 0 || len(c.Content[0].TopLogProbs) != 3 {
				t.Fatalf("chat logprobs: %+v", lr.Choices[0].LogProbs)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestStopAndJSONSchema(t *testing.T) {
	ts := startServer(t, modeltest.Preset(t, "small"), Options{}, scheduler.Options{})
	ctx := context.Background()
	free, err := ts.client.CreateCompletion(ctx, goopenai.CompletionRequest{Model: ts.model, Prompt: "the dog", MaxTokens: 30, Seed: ptr(7)})
	if err != nil {
		t.Fatal(err)
	}
	full := free.Choices[0].Text
	if len(full) < 8 {
		t.Fatalf("free text too short: %q", full)
	}
	stop := full[4:7]
	cut, err := ts.client.CreateCompletion(ctx, goopenai.CompletionRequest{Model: ts.model, Prompt: "the dog", MaxTokens: 30, Seed: ptr(7), Stop: []string{stop}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cut.Choices[0].Text, full[:strings.Index(full, stop)]; got != want || cut.Choices[0].FinishReason != "stop" {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, got, cut.Choices[0].FinishReason, want)
	}
	schema := `{"type":"object","properties":{"answer":{"type":"boolean"},"count":{"type":"integer","minimum":0,"maximum":9}},"required":["answer","count"],"additionalProperties":false}`
	resp, err := ts.client.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{
		Model: ts.model, MaxTokens: 200,
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "answer in JSON"}},
		ResponseFormat: &goopenai.ChatCompletionResponseFormat{Type: goopenai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &goopenai.ChatCompletionResponseFormatJSONSchema{Name: "a", Schema: json.RawMessage(schema), Strict: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Answer *bool `json:"answer"`
		Count  *int  `json:"count"`
	}
	dec := json.NewDecoder(strings.NewReader(resp.Choices[0].Message.Content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil || out.Answer == nil || out.Count == nil || *out.Count < 0 || *out.Count > 9 {
		t.Fatalf("json_schema output %q does not validate: %v", resp.Choices[0].Message.Content, err)
	}
	obj, err := ts.client.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{
		Model: ts.model, MaxTokens: 60, Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "json"}},
		ResponseFormat: &goopenai.ChatCompletionResponseFormat{Type: goopenai.ChatCompletionResponseFormatTypeJSONObject},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := obj.Choices[0]; c.FinishReason == "stop" {
		var anyObj map[string]any
		if err := json.Unmarshal([]byte(c.Message.Content), &anyObj); err != nil {
			t.Fatalf("json_object output %q: %v", c.Message.Content, err)
		}
	} else if !strings.HasPrefix(strings.TrimSpace(c.Message.Content), "{") {
		t.Fatalf("json_object output %q does not start an object", c.Message.Content)
	}
}

// post sends a raw request and decodes an OpenAI error body if any.
func post(t testing.TB, url, ctype string, body []byte, hdr map[string]string) (int, http.Header, *openai.Error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 400 {
		return resp.StatusCode, resp.Header, nil
	}
	var eb struct {
		Error *openai.Error `json:"error"`
	}
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error == nil || eb.Error.Message == "" || eb.Error.Type == "" {
		t.Fatalf("status %d body %q is not an OpenAI error", resp.StatusCode, data)
	}
	return resp.StatusCode, resp.Header, eb.Error
}

func TestBadRequests(t *testing.T) {
	ts := tinyServer(t, Options{MaxBodyBytes: 64 << 10})
	chat := ts.URL + "/v1/chat/completions"
	comp := ts.URL + "/v1/completions"
	m := ts.model
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	long := strings.Repeat("the cat saw the dog ", 800)
	cases := []struct {
		name   string
		url    string
		body   string
		status int
		param  string
	}{
		{"malformed json", chat, `{"model":`, 400, ""},
		{"not an object", chat, `[1,2]`, 400, ""},
		{"empty body", chat, ``, 400, ""},
		{"trailing garbage", chat, `{"model":"` + m + `",` + msgs + `} x`, 400, ""},
		{"unknown model", chat, `{"model":"nope",` + msgs + `}`, 404, "model"},
		{"model wrong type", chat, `{"model":5,` + msgs + `}`, 400, "model"},
		{"no messages", chat, `{"model":"` + m + `"}`, 400, "messages"},
		{"empty messages", chat, `{"model":"` + m + `","messages":[]}`, 400, "messages"},
		{"messages not array", chat, `{"model":"` + m + `","messages":"hi"}`, 400, "messages"},
		{"unknown role", chat, `{"model":"` + m + `","messages":[{"role":"wizard","content":"hi"}]}`, 400, "messages[0].role"},
		{"null content", chat, `{"model":"` + m + `","messages":[{"role":"user","content":null}]}`, 400, "messages[0].content"},
		{"content wrong type", chat, `{"model":"` + m + `","messages":[{"role":"user","content":5}]}`, 400, ""},
		{"image part", chat, `{"model":"` + m + `","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, ""},
		{"max_tokens negative", chat, `{"model":"` + m + `",` + msgs + `,"max_tokens":-1}`, 400, "max_tokens"},
		{"max_tokens zero", chat, `{"model":"` + m + `",` + msgs + `,"max_tokens":0}`, 400, "max_tokens"},
		{"max_tokens huge", chat, `{"model":"` + m + `",` + msgs + `,"max_tokens":100000000}`, 400, "max_tokens"},
		{"max_tokens string", chat, `{"model":"` + m + `",` + msgs + `,"max_tokens":"ten"}`, 400, "max_tokens"},
		{"max_completion_tokens bad", chat, `{"model":"` + m + `",` + msgs + `,"max_completion_tokens":-5}`, 400, "max_completion_tokens"},
		{"n too large", chat, `{"model":"` + m + `",` + msgs + `,"n":100}`, 400, "n"},
		{"n zero", chat, `{"model":"` + m + `",` + msgs + `,"n":0}`, 400, "n"},
		{"temperature too high", chat, `{"model":"` + m + `",` + msgs + `,"temperature":5}`, 400, "temperature"},
		{"temperature negative", chat, `{"model":"` + m + `",` + msgs + `,"temperature":-1}`, 400, "temperature"},
		{"top_p zero", chat, `{"model":"` + m + `",` + msgs + `,"top_p":0}`, 400, "top_p"},
		{"top_p above one", chat, `{"model":"` + m + `",` + msgs + `,"top_p":1.5}`, 400, "top_p"},
		{"presence penalty", chat, `{"model":"` + m + `",` + msgs + `,"presence_penalty":3}`, 400, "presence_penalty"},
		{"frequency penalty", chat, `{"model":"` + m + `",` + msgs + `,"frequency_penalty":-3}`, 400, "frequency_penalty"},
		{"too many stops", chat, `{"model":"` + m + `",` + msgs + `,"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, 400, "stop"},
		{"empty stop", chat, `{"model":"` + m + `",` + msgs + `,"stop":[""]}`, 400, "stop"},
		{"stop wrong type", chat, `{"model":"` + m + `",` + msgs + `,"stop":5}`, 400, ""},
		{"logit_bias bad key", chat, `{"model":"` + m + `",` + msgs + `,"logit_bias":{"abc":1}}`, 400, "logit_bias"},
		{"logit_bias out of vocab", chat, `{"model":"` + m + `",` + msgs + `,"logit_bias":{"999999":1}}`, 400, "logit_bias"},
		{"logit_bias value", chat, `{"model":"` + m + `",` + msgs + `,"logit_bias":{"5":500}}`, 400, "logit_bias"},
		{"top_logprobs without logprobs", chat, `{"model":"` + m + `",` + msgs + `,"top_logprobs":2}`, 400, "top_logprobs"},
		{"top_logprobs too many", chat, `{"model":"` + m + `",` + msgs + `,"logprobs":true,"top_logprobs":50}`, 400, "top_logprobs"},
		{"stream_options without stream", chat, `{"model":"` + m + `",` + msgs + `,"stream_options":{"include_usage":true}}`, 400, "stream_options"},
		{"bad response_format type", chat, `{"model":"` + m + `",` + msgs + `,"response_format":{"type":"yaml"}}`, 400, "response_format.type"},
		{"json_schema missing", chat, `{"model":"` + m + `",` + msgs + `,"response_format":{"type":"json_schema"}}`, 400, "response_format.json_schema"},
		{"json_schema not object", chat, `{"model":"` + m + `",` + msgs + `,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":[1]}}}`, 400, "response_format.json_schema"},
		{"tool of another type", chat, `{"model":"` + m + `",` + msgs + `,"tools":[{"type":"code_interpreter","function":{"name":"f"}}]}`, 400, "tools[0].type"},
		{"tool name with spaces", chat, `{"model":"` + m + `",` + msgs + `,"tools":[{"type":"function","function":{"name":"f g"}}]}`, 400, "tools[0].function.name"},
		{"tool parameters not an object", chat, `{"model":"` + m + `",` + msgs + `,"tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]}`, 400, "tools[0].function.parameters"},
		{"tool_choice without tools", chat, `{"model":"` + m + `",` + msgs + `,"tool_choice":"required"}`, 400, "tool_choice"},
		{"tool_choice names a missing tool", chat, `{"model":"` + m + `",` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}`, 400, "tool_choice"},
		{"tool parameters with a dangling $ref", chat, `{"model":"` + m + `",` + msgs + `,"tools":[{"type":"function","function":{"name":"f","parameters":{"$ref":"#/defs/x"}}}]}`, 400, "tools"},
		{"prompt over context", chat, `{"model":"` + m + `","messages":[{"role":"user","content":"` + long + `"}]}`, 400, "messages"},
		{"min_p out of range", chat, `{"model":"` + m + `",` + msgs + `,"min_p":2}`, 400, "min_p"},
		{"top_k below -1", chat, `{"model":"` + m + `",` + msgs + `,"top_k":-5}`, 400, "top_k"},
		{"repeat_penalty zero", chat, `{"model":"` + m + `",` + msgs + `,"repeat_penalty":0}`, 400, "repeat_penalty"},
		{"oversize body", chat, `{"model":"` + m + `","messages":[{"role":"user","content":"` + strings.Repeat("a", 70<<10) + `"}]}`, 413, ""},
		{"completions no prompt", comp, `{"model":"` + m + `"}`, 400, "prompt"},
		{"completions empty tokens", comp, `{"model":"` + m + `","prompt":[[]]}`, 400, "prompt"},
		{"completions bad token id", comp, `{"model":"` + m + `","prompt":[1,2,99999]}`, 400, "prompt"},
		{"completions negative token", comp, `{"model":"` + m + `","prompt":[1,-2]}`, 400, "prompt"},
		{"completions prompt object", comp, `{"model":"` + m + `","prompt":{"a":1}}`, 400, ""},
		{"completions logprobs range", comp, `{"model":"` + m + `","prompt":"hi","logprobs":99}`, 400, "logprobs"},
		{"completions suffix", comp, `{"model":"` + m + `","prompt":"hi","suffix":"x"}`, 400, "suffix"},
		{"completions prompt too long", comp, `{"model":"` + m + `","prompt":"` + long + `"}`, 400, "prompt"},
		{"completions unknown model", comp, `{"model":"gpt-4","prompt":"hi"}`, 404, "model"},
		{"unknown route", ts.URL + "/v1/nothing", `{}`, 404, ""},
		{"embeddings no input", ts.URL + "/v1/embeddings", `{"model":"` + m + `"}`, 400, "input"},
		{"embeddings bad format", ts.URL + "/v1/embeddings", `{"model":"` + m + `","input":"hi","encoding_format":"hex"}`, 400, "encoding_format"},
		{"embeddings bad dimensions", ts.URL + "/v1/embeddings", `{"model":"` + m + `","input":"hi","dimensions":100000}`, 400, "dimensions"},
		{"detokenize bad id", ts.URL + "/detokenize", `{"tokens":[99999]}`, 400, "tokens"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, _, e := post(t, c.url, "application/json", []byte(c.body), nil)
			if status != c.status {
				t.Fatalf("status %d, want %d (%v)", status, c.status, e)
			}
			got := ""
			if e.Param != nil {
				got = *e.Param
			}
			if c.param != "" && got != c.param {
				t.Fatalf("param %q, want %q (%s)", got, c.param, e.Message)
			}
		})
	}
	// A logit_bias that bans every token: nothing may be emitted, which is
	// the request's fault (400), not a crash or a 500.
	ban := map[string]float64{}
	for i := 0; i < ts.sched.Model().VocabSize(); i++ {
		ban[strconv.Itoa(i)] = -100
	}
	banBody, _ := json.Marshal(map[string]any{"model": m, "prompt": "hi", "max_tokens": 3, "logit_bias": ban})
	if status, _, e := post(t, comp, "application/json", banBody, nil); status != 400 || e == nil || e.Param == nil || *e.Param != "logit_bias" {
		t.Fatalf("logit_bias banning everything: status %d, %+v", status, e)
	}
	// Invalid UTF-8 in the body.
	if status, _, _ := post(t, chat, "application/json", []byte("{\"model\":\""+m+"\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), nil); status != 400 {
		t.Fatalf("invalid UTF-8: status %d", status)
	}
	// The server still serves a good request.
	resp, err := ts.client.CreateCompletion(context.Background(), goopenai.CompletionRequest{Model: m, Prompt: "the cat", MaxTokens: 4})
	if err != nil || len(resp.Choices) != 1 {
		t.Fatalf("good request after bad ones: %v", err)
	}
}

func TestAuthAndOverload(t *testing.T) {
	ts := tinyServer(t, Options{APIKeys: []string{"sekret"}})
	body := []byte(`{"model":"` + ts.model + `","prompt":"hi","max_tokens":2}`)
	if status, _, _ := post(t, ts.URL+"/v1/completions", "application/json", body, nil); status != 401 {
		t.Fatalf("no key: %d", status)
	}
	if status, _, _ := post(t, ts.URL+"/v1/completions", "application/json", body, map[string]string{"Authorization": "Bearer wrong"}); status != 401 {
		t.Fatalf("wrong key: %d", status)
	}
	if status, _, _ := post(t, ts.URL+"/v1/completions", "application/json", body, map[string]string{"Authorization": "Bearer sekret"}); status != 200 {
		t.Fatalf("right key: %d", status)
	}
	if r, err := http.Get(ts.URL + "/health"); err != nil || r.StatusCode != 200 {
		t.Fatalf("health needs no key: %v %v", r, err)
	}

	// Overload: a scheduler that is not running keeps its queue full.
	m, err := engine.LoadModel(modeltest.Preset(t, "tiny"), engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sched, err := scheduler.New(m, scheduler.Options{Parallel: 1, Cells: 256, MaxQueue: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		go sched.Run(ctx)
		sched.Close()
	}()
	if _, err := sched.Submit(context.Background(), scheduler.Request{Prompt: []int32{1, 5}}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(New(backendFor(t, sched, "tiny"), Options{}).Handler())
	defer hs.Close()
	status, hdr, e := post(t, hs.URL+"/v1/completions", "application/json", []byte(`{"model":"tiny","prompt":"hi"}`), nil)
	if status != 429 || hdr.Get("Retry-After") == "" || e.Type != openai.TypeRateLimit {
		t.Fatalf("overload: status %d Retry-After %q err %+v", status, hdr.Get("Retry-After"), e)
	}
}

func TestClientDisconnectCancels(t *testing.T) {
	ts := tinyServer(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// ignore_eos and a long max_tokens: the stream cannot end on its own
	// before the client hangs up.
	body := `{"model":"` + ts.model + `","prompt":"the cat","max_tokens":2000,"ignore_eos":true,"stream":true}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(30 * time.Second) // liveness bound, not a speed target
	for ts.sched.Stats().Cancelled == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the scheduler never saw the client leave: %+v", ts.sched.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for ts.sched.Stats().KV.SlotsActive != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slot still active after disconnect: %+v", ts.sched.Stats().KV)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g := ts.sched.Stats().GeneratedTokens; g >= 1999 {
		t.Fatalf("the request ran to completion (%d tokens) instead of being cancelled", g)
	}
	// Still serving.
	if _, err := ts.client.CreateCompletion(context.Background(), goopenai.CompletionRequest{Model: ts.model, Prompt: "hi", MaxTokens: 2}); err != nil {
		t.Fatal(err)
	}
}

func TestMiscEndpoints(t *testing.T) {
	ts := tinyServer(t, Options{CORSOrigins: []string{"https://app.example"}})
	status, _, _ := post(t, ts.URL+"/tokenize", "application/json", []byte(`{"content":"the cat"}`), nil)
	if status != 200 {
		t.Fatalf("tokenize: %d", status)
	}
	resp, err := http.Post(ts.URL+"/tokenize", "application/json", strings.NewReader(`{"prompt":"the cat"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Tokens []int32 `json:"tokens"`
		Count  int     `json:"count"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.Count == 0 || tok.Count != len(tok.Tokens) {
		t.Fatalf("tokenize: %+v", tok)
	}
	b, _ := json.Marshal(map[string]any{"tokens": tok.Tokens})
	resp, err = http.Post(ts.URL+"/detokenize", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var det struct {
		Content string `json:"content"`
	}
	json.NewDecoder(resp.Body).Decode(&det)
	resp.Body.Close()
	if !strings.Contains(det.Content, "cat") {
		t.Fatalf("detokenize: %q", det.Content)
	}
	for _, path := range []string{"/health", "/ready", "/v1/models/" + ts.model} {
		r, err := http.Get(ts.URL + path)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, r, err)
		}
		if r.Header.Get("X-Request-Id") == "" {
			t.Fatalf("%s: no request id", path)
		}
		r.Body.Close()
	}
	// Metrics after a request.
	if _, err := ts.client.CreateCompletion(context.Background(), goopenai.CompletionRequest{Model: ts.model, Prompt: "hi", MaxTokens: 2}); err != nil {
		t.Fatal(err)
	}
	r, _ := http.Get(ts.URL + "/metrics")
	data, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, want := range []string{"llmux_generation_tokens_total", "llmux_time_to_first_token_seconds_bucket", "llmux_kv_cells", "# TYPE llmux_engine_steps_total counter", "llmux_handoff_timeouts_total", `route="/v1/completions",status="200"`} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	// CORS preflight.
	req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	r, err = http.DefaultClient.Do(req)
	if err != nil || r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("preflight: %v %v", r, err)
	}
	req.Header.Set("Origin", "https://evil.example")
	r, _ = http.DefaultClient.Do(req)
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed an unlisted origin")
	}
	_ = fmt.Sprint()
}

func TestEmbeddings(t *testing.T) {
	ts := tinyServer(t, Options{})
	ctx := context.Background()
	resp, err := ts.client.CreateEmbeddings(ctx, goopenai.EmbeddingRequestStrings{Model: goopenai.EmbeddingModel(ts.model), Input: []string{"the cat saw the dog", "a big red ball", "the cat saw the dog"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 3 || resp.Usage.PromptTokens == 0 {
		t.Fatalf("embeddings response: %d items, usage %+v", len(resp.Data), resp.Usage)
	}
	dim := len(resp.Data[0].Embedding)
	if dim != 64 { // the tiny preset's width
		t.Fatalf("dimension %d, want 64", dim)
	}
	dot := func(a, b []float32) (d float64) {
		for i := range a {
			d += float64(a[i]) * float64(b[i])
		}
		return d
	}
	for i, d := range resp.Data {
		if n := dot(d.Embedding, d.Embedding); n < 0.999 || n > 1.001 || d.Index != i {
			t.Fatalf("item %d: index %d, squared norm %v", i, d.Index, n)
		}
	}
	if s := dot(resp.Data[0].Embedding, resp.Data[2].Embedding); s < 0.9999 {
		t.Fatalf("same input, cosine %v", s)
	}
	if s := dot(resp.Data[0].Embedding, resp.Data[1].Embedding); s > 0.9999 {
		t.Fatalf("different inputs, cosine %v", s)
	}
	// base64 and truncated dimensions.
	b64, err := ts.client.CreateEmbeddings(ctx, goopenai.EmbeddingRequest{Model: goopenai.EmbeddingModel(ts.model), Input: "the cat saw the dog", EncodingFormat: goopenai.EmbeddingEncodingFormatBase64, Dimensions: 16})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(b64.Data[0].Embedding); got != 16 {
		t.Fatalf("base64 with 16 dimensions decoded to %d values", got)
	}
}

// TestOneServedModelNeedsNoName: with one model served, a request without
// model uses it on every route; with two, the name is required.
func TestOneServedModelNeedsNoName(t *testing.T) {
	ts := tinyServer(t, Options{})
	for _, r := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`},
		{"/v1/completions", `{"prompt":"hi","max_tokens":2}`},
		{"/v1/embeddings", `{"input":"hi"}`},
		{"/tokenize", `{"content":"hi"}`},
		{"/detokenize", `{"tokens":[5,6]}`},
	} {
		if status, _, e := post(t, ts.URL+r.path, "application/json", []byte(r.body), nil); status != 200 {
			t.Errorf("%s without model: %d %v", r.path, status, e)
		}
	}
	resp, err := ts.client.CreateChatCompletion(context.Background(), goopenai.ChatCompletionRequest{Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi"}}, MaxTokens: 2})
	if err != nil || resp.Model != ts.model {
		t.Fatalf("chat without model answered as %q (%v), want %q", resp.Model, err, ts.model)
	}

	m, sched := loadScheduler(t, modeltest.Preset(t, "tiny"), scheduler.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go sched.Run(ctx)
	t.Cleanup(func() {
		cancel()
		sched.Close()
		m.Close()
	})
	r := multiplex.NewRunner("a", sched)
	t.Cleanup(r.Close)
	two := multiplex.NewPool(multiplex.PoolOptions{})
	if err := two.Add("a", nil, r); err != nil {
		t.Fatal(err)
	}
	if err := two.Add("b", nil, r); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(New(two, Options{}).Handler())
	t.Cleanup(hs.Close)
	for _, path := range []string{"/v1/chat/completions", "/tokenize"} {
		status, _, e := post(t, hs.URL+path, "application/json", []byte(`{"messages":[{"role":"user","content":"hi"}],"content":"hi"}`), nil)
		if status != 400 || e == nil || e.Param == nil || *e.Param != "model" {
			t.Errorf("%s without model, two served: %d %+v", path, status, e)
		}
	}
}
