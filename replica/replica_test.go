package replica

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"
	"go.uber.org/goleak"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// localPool serves the tiny model in this process under the name "tiny".
func localPool(t *testing.T) (*multiplex.Pool, *scheduler.Scheduler) {
	t.Helper()
	m, err := engine.LoadModel(modeltest.Preset(t, "tiny"), engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(m, scheduler.Options{Parallel: 4, Cells: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sched.Run(ctx) }()
	r := multiplex.NewRunner("tiny", sched)
	p := multiplex.NewPool(multiplex.PoolOptions{})
	if err := p.Add("tiny", nil, r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done; r.Close(); sched.Close(); m.Close() })
	return p, sched
}

// overSocket serves backend on a Unix socket in this process and returns
// a client of it.
func overSocket(t testing.TB, backend llm.Backend) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, backend, nil) }()
	c, err := Dial("r0", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return c
}

func openaiClient(t *testing.T, backend llm.Backend) *goopenai.Client {
	t.Helper()
	hs := httptest.NewServer(server.New(backend, server.Options{}).Handler())
	t.Cleanup(hs.Close)
	cfg := goopenai.DefaultConfig("")
	cfg.BaseURL = hs.URL + "/v1"
	return goopenai.NewClientWithConfig(cfg)
}

// TestOverTheSocketMatchesInProcess sends the same seeded requests to one
// model directly and through a replica connection, and expects the same
// answers: the boundary types carry everything across.
func TestOverTheSocketMatchesInProcess(t *testing.T) {
	pool, _ := localPool(t)
	direct, remote := openaiClient(t, pool), openaiClient(t, overSocket(t, pool))
	ctx := context.Background()
	run := func(c *goopenai.Client) (string, []string, string) {
		seed := 42
		chat, err := c.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{Model: "tiny", MaxTokens: 12, Seed: &seed,
			Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "the cat"}}, LogProbs: true, TopLogProbs: 2})
		if err != nil {
			t.Fatal(err)
		}
		comp, err := c.CreateCompletion(ctx, goopenai.CompletionRequest{Model: "tiny", Prompt: []string{"one", "two"}, MaxTokens: 6, Seed: &seed, N: 2})
		if err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, ch := range comp.Choices {
			texts = append(texts, ch.Text)
		}
		st, err := c.CreateCompletionStream(ctx, goopenai.CompletionRequest{Model: "tiny", Prompt: "a dog", MaxTokens: 10, Seed: &seed, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var streamed string
		for {
			r, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			streamed += r.Choices[0].Text
		}
		lp := ""
		for _, c := range chat.Choices[0].LogProbs.Content {
			lp += c.Token + "|"
		}
		return chat.Choices[0].Message.Content + "#" + lp, texts, streamed
	}
	c1, t1, s1 := run(direct)
	c2, t2, s2 := run(remote)
	if c1 != c2 || s1 != s2 || len(t1) != 4 || len(t2) != 4 {
		t.Fatalf("chat %q vs %q; stream %q vs %q; %d vs %d choices", c1, c2, s1, s2, len(t1), len(t2))
	}
	for i := range t1 {
		if t1[i] != t2[i] {
			t.Fatalf("choice %d: %q in process, %q through the replica", i, t1[i], t2[i])
		}
	}
	// Errors cross as data: an unknown model is a 404 either way.
	_, err := remote.CreateCompletion(ctx, goopenai.CompletionRequest{Model: "nope", Prompt: "x", MaxTokens: 1})
	var apiErr *goopenai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 404 {
		t.Fatalf("unknown model through the replica: %v", err)
	}
}

// TestCancellationCrossesTheSocket abandons a long stream at the client
// and expects the replica's scheduler to free the sequence.
func TestCancellationCrossesTheSocket(t *testing.T) {
	pool, sched := localPool(t)
	c := overSocket(t, pool)
	ctx, cancel := context.WithCancel(context.Background())
	st, e := c.Generate(ctx, &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "go on"}}, Params: llm.Params{MaxTokens: 100000, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	for range 3 {
		if ev, ok := st.Recv(ctx); !ok || ev.Error != nil {
			t.Fatalf("event: %+v", ev)
		}
	}
	cancel()
	st.Close()
	deadline := time.Now().Add(10 * time.Second)
	for sched.Stats().Running != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the replica still runs the abandoned request: %+v", sched.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
