package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/models/modeltest"
)

// TestTheExampleServesBehindAuth runs the example's application on the
// synthesized models: a client with the key gets answers from both
// routes; one without gets a 401.
func TestTheExampleServesBehindAuth(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); time.Sleep(50 * time.Millisecond) }()
	h, err := build(ctx, modeltest.Preset(t, "tiny"), modeltest.Preset(t, "small"), "k", false)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	defer hs.Close()
	cfg := goopenai.DefaultConfig("k")
	cfg.BaseURL = hs.URL + "/v1"
	c := goopenai.NewClientWithConfig(cfg)
	for _, prompt := range []string{"fix this bug in my code", "tell me about cats"} {
		resp, err := c.CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{Model: "chat", MaxTokens: 4,
			Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: prompt}}})
		if err != nil {
			t.Fatalf("%q: %v", prompt, err)
		}
		if resp.Usage.CompletionTokens == 0 {
			t.Fatalf("%q: no tokens", prompt)
		}
	}
	cfg = goopenai.DefaultConfig("")
	cfg.BaseURL = hs.URL + "/v1"
	var apiErr *goopenai.APIError
	if _, err := goopenai.NewClientWithConfig(cfg).ListModels(ctx); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("without the key: %v", err)
	}
}
