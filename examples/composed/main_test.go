package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"reflect"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/config"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
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
	cfg.BaseURL = hs.URL + "/assistant/v1"
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
	cfg.BaseURL = hs.URL + "/assistant/v1"
	var apiErr *goopenai.APIError
	if _, err := goopenai.NewClientWithConfig(cfg).ListModels(ctx); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("without the key: %v", err)
	}
}

// TestTheYAMLIsTheSameApplication: llmux.yaml beside the program, read as
// llmux serve reads it, resolves to the same spec as assistant() builds.
func TestTheYAMLIsTheSameApplication(t *testing.T) {
	data, err := os.ReadFile("llmux.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, probs := config.Parse("llmux.yaml", data, config.Options[multiplex.ModelConfig]{Registry: app.Builtin()})
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	want, err := assistant("secret")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Applications) != 1 || !reflect.DeepEqual(f.Applications[0], want) {
		t.Fatalf("YAML:\n%+v\nGo:\n%+v", f.Applications, want)
	}
}
