package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"
	"go.uber.org/goleak"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/middleware"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

// TestMain keeps the servers' request logs and llama.cpp's warnings out of
// test output.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	goleak.VerifyTestMain(m)
}

// startPool serves one catalog model in this process, as an llm
// deployment's backend; it stops when the test ends.
func startPool(t *testing.T, name, path string) *multiplex.Pool {
	t.Helper()
	p, err := multiplex.NewLocalPool([]multiplex.ModelConfig{{Name: name, Path: path}}, scheduler.Options{Parallel: 4, Cells: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// env serves tiny as the llm deployment "chat-llm" and small as
// "code-llm", each in its own pool, with the OpenAI routes over the
// application's backend.
func env(t *testing.T, reg *Registry) Env {
	pools := map[string]*multiplex.Pool{
		"tiny":  startPool(t, "tiny", modeltest.Preset(t, "tiny")),
		"small": startPool(t, "small", modeltest.Preset(t, "small")),
	}
	return Env{Registry: reg,
		LLM: func(d DeploymentSpec) (llm.Backend, error) {
			p, ok := pools[d.Models[0]]
			if !ok {
				return nil, errors.New("no pool for " + d.Models[0])
			}
			return p, nil
		},
		Routes: func(b llm.Backend) http.Handler { return server.New(b, server.Options{}).Handler() },
	}
}

// routedApp is auth → keyword router → two LLM deployments: prompts that
// talk about code go to code-llm (asked for the small model), the rest to
// chat-llm. Key k2 may make one request per thousand seconds.
func routedApp(t *testing.T) Spec {
	t.Helper()
	spec, err := New("assist").
		LLM("chat-llm", "tiny").
		LLM("code-llm", "small").
		Deploy("router", "keyword-router", middleware.KeywordRouterConfig{
			Rules:   []middleware.KeywordRule{{Keywords: []string{"code", "function"}, To: "code-llm", Model: "small"}},
			Default: "chat-llm", DefaultModel: "tiny",
		}, "chat-llm", "code-llm").
		Ingress("router").
		Use("auth", middleware.AuthConfig{Keys: []middleware.KeyConfig{{Key: "k1"}, {Key: "k2", RequestsPerSecond: 0.001, Burst: 1}}}).
		Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func client(url, key string) *goopenai.Client {
	cfg := goopenai.DefaultConfig(key)
	cfg.BaseURL = url + "/v1"
	return goopenai.NewClientWithConfig(cfg)
}

// seed makes sampling reproducible, so an answer through the application
// can be compared with the same request made to an LLM deployment alone.
const seed = 42

func chat(model, prompt string) goopenai.ChatCompletionRequest {
	s := seed
	return goopenai.ChatCompletionRequest{Model: model, MaxTokens: 12, Seed: &s,
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: prompt}}}
}

// TestAuthKeywordRouterAndTwoLLMsOverHTTP: a three-deployment application
// behind auth answers real OpenAI clients, streamed and not: each prompt
// gets exactly the text the LLM its rule names gives when asked directly;
// a missing key is a 401 and a key over its rate a 429 with Retry-After.
func TestAuthKeywordRouterAndTwoLLMsOverHTTP(t *testing.T) {
	e := env(t, Builtin())
	a, err := Build(routedApp(t), e)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(Mount(a))
	defer hs.Close()
	ctx := context.Background()

	direct := func(deployment, model, prompt string) string {
		t.Helper()
		res, le := a.Handles[deployment].Call(ctx, &llm.Request{Model: model, Messages: []llm.Message{{Role: "user", Content: prompt}}, Params: llm.Params{MaxTokens: 12, N: 1, Temperature: 1, Seed: seed, SeedGiven: true}})
		if le != nil {
			t.Fatal(le)
		}
		return res.Texts[0]
	}
	c := client(hs.URL, "k1")
	for _, tc := range []struct{ prompt, deployment, model string }{
		{"write a function that adds two numbers", "code-llm", "small"},
		{"tell me a story about a cat", "chat-llm", "tiny"},
	} {
		want := direct(tc.deployment, tc.model, tc.prompt)
		resp, err := c.CreateChatCompletion(ctx, chat("tiny", tc.prompt))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Choices[0].Message.Content; got != want {
			t.Errorf("%q: the application answered %q, %s alone %q", tc.prompt, got, tc.deployment, want)
		}
		req := chat("tiny", tc.prompt)
		req.Stream = true
		st, err := c.CreateChatCompletionStream(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for {
			ch, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ch.Choices) > 0 {
				sb.WriteString(ch.Choices[0].Delta.Content)
			}
		}
		st.Close()
		if sb.String() != want {
			t.Errorf("%q streamed: %q, %s alone %q", tc.prompt, sb.String(), tc.deployment, want)
		}
	}

	var apiErr *goopenai.APIError
	if _, err := client(hs.URL, "").CreateChatCompletion(ctx, chat("tiny", "hi")); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("no key: %v", err)
	}
	if _, err := client(hs.URL, "k2").CreateChatCompletion(ctx, chat("tiny", "hi")); err != nil {
		t.Fatalf("k2's first request: %v", err)
	}
	r, _ := http.NewRequest(http.MethodPost, hs.URL+"/v1/chat/completions", strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`))
	r.Header.Set("Authorization", "Bearer k2")
	r.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("k2 over its rate: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// panicky panics on prompts that say "boom" and passes the rest on.
type panicky struct{ next *deploy.Handle }

func (p panicky) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	for _, m := range req.Messages {
		if strings.Contains(m.Content, "boom") {
			panic("boom")
		}
	}
	return p.next.Stream(ctx, req)
}

// TestAPanickingMiddlewareFailsOneRequest: a Go deployment that panics
// fails that request with a 500 and the application serves the next ones.
func TestAPanickingMiddlewareFailsOneRequest(t *testing.T) {
	reg := Builtin()
	reg.Register("panicky", Kind{Calls: 1, New: func(_ any, calls []*deploy.Handle) (deploy.Deployment, error) { return panicky{calls[0]}, nil }})
	spec, err := New("p").LLM("chat-llm", "tiny").Deploy("front", "panicky", nil, "chat-llm").Ingress("front").Spec()
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(spec, env(t, reg))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(Mount(a))
	defer hs.Close()
	c := client(hs.URL, "")
	var apiErr *goopenai.APIError
	if _, err := c.CreateChatCompletion(context.Background(), chat("tiny", "boom")); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 500 {
		t.Fatalf("the panicking request: %v", err)
	}
	for range 3 {
		if _, err := c.CreateChatCompletion(context.Background(), chat("tiny", "hello")); err != nil {
			t.Fatalf("after the panic: %v", err)
		}
	}
}

// TestApplicationsUnderPrefixes: two applications on one handler, each
// under its own prefix, list only their own models; a path under neither
// is an OpenAI-shaped 404.
func TestApplicationsUnderPrefixes(t *testing.T) {
	e := env(t, Builtin())
	one, err := New("one").Route("/one").LLM("chat-llm", "tiny").Spec()
	if err != nil {
		t.Fatal(err)
	}
	two, err := New("two").Route("/two/").LLM("code-llm", "small").Spec()
	if err != nil {
		t.Fatal(err)
	}
	a1, err := Build(one, e)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := Build(two, e)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(Mount(a1, a2))
	defer hs.Close()
	for prefix, want := range map[string]string{"/one": "tiny", "/two": "small"} {
		list, err := client(hs.URL+prefix, "").ListModels(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Models) != 1 || list.Models[0].ID != want {
			t.Errorf("%s lists %+v, want only %s", prefix, list.Models, want)
		}
	}
	r, err := http.Get(hs.URL + "/three/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 404 || !strings.Contains(string(body), `"type":"not_found_error"`) {
		t.Fatalf("unknown prefix: %d %s", r.StatusCode, body)
	}
}

// TestClassifierRouterRoutesByTheSmallModelsLabel: the classifier router
// asks a real (tiny) model for a label; the grammar holds its answer to
// one of the labels, and the request is answered by that label's
// deployment.
func TestClassifierRouterRoutesByTheSmallModelsLabel(t *testing.T) {
	e := env(t, Builtin())
	spec, err := New("classified").
		LLM("chat-llm", "tiny").
		LLM("code-llm", "small").
		Deploy("router", "classifier-router", middleware.ClassifierRouterConfig{
			Classifier: "chat-llm", Model: "tiny", Default: "chat-llm",
			Routes: map[string]string{"code": "code-llm", "chat": "chat-llm"}, Models: map[string]string{"code": "small", "chat": "tiny"},
		}, "chat-llm", "code-llm").
		Ingress("router").Spec()
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(spec, e)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cfg middleware.ClassifierRouterConfig
	cfg.Classifier, cfg.Model, cfg.Default, cfg.Routes = "chat-llm", "tiny", "chat-llm", map[string]string{"code": "code-llm", "chat": "chat-llm"}
	cfg.Models = map[string]string{"code": "small", "chat": "tiny"}
	router, err := middleware.NewClassifierRouter(cfg, []*deploy.Handle{a.Handles["chat-llm"], a.Handles["code-llm"]})
	if err != nil {
		t.Fatal(err)
	}
	req := &llm.Request{Model: "tiny", Messages: []llm.Message{{Role: "user", Content: "write a function that sorts a list"}},
		Params: llm.Params{MaxTokens: 12, N: 1, Temperature: 1, Seed: seed, SeedGiven: true}}
	label, le := router.Classify(ctx, req)
	if le != nil {
		t.Fatal(le)
	}
	if label != "code" && label != "chat" {
		t.Fatalf("the classifier's answer named no label: %q", label)
	}
	to := map[string]string{"code": "code-llm", "chat": "chat-llm"}[label]
	model := map[string]string{"code-llm": "small", "chat-llm": "tiny"}[to]
	direct := *req
	direct.Model = model
	want, le := a.Handles[to].Call(ctx, &direct)
	if le != nil {
		t.Fatal(le)
	}
	got, le := a.Handles["router"].Call(ctx, req)
	if le != nil {
		t.Fatal(le)
	}
	if got.Texts[0] != want.Texts[0] {
		t.Fatalf("label %q: routed answer %q, %s alone %q", label, got.Texts[0], to, want.Texts[0])
	}
}

// TestApplicationLoadCountsASharedPoolOnce: two llm deployments restricted
// to parts of one pool report the pool's load once.
func TestApplicationLoadCountsASharedPoolOnce(t *testing.T) {
	pool := startPool(t, "tiny", modeltest.Preset(t, "tiny"))
	spec, err := New("shared").LLM("a", "tiny").LLM("b", "tiny").Deploy("front", "keyword-router",
		middleware.KeywordRouterConfig{Default: "a"}, "a", "b").Ingress("front").Spec()
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(spec, Env{Registry: Builtin(), LLM: func(d DeploymentSpec) (llm.Backend, error) { return Restrict(pool, d.Models), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, e := a.Handles["front"].Call(context.Background(), &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "hi"}}, Params: llm.Params{MaxTokens: 2, N: 1}}); e != nil {
		t.Fatal(e)
	}
	got, want := a.Backend.Load(), pool.Load()
	if got.KVCells != want.KVCells || got.MaxActive != want.MaxActive {
		t.Fatalf("application load %+v, pool load %+v", got, want)
	}
}
