package replica_test

// This test serves a replica through the HTTP server, which imports
// (through middleware and deploy) this package: it lives in the external
// test package so that the import is not a cycle.

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/replica"
	"github.com/llmux/llmux/server"
)

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
	pool, _ := replica.LocalPool(t)
	direct, remote := openaiClient(t, pool), openaiClient(t, replica.OverSocket(t, pool))
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
