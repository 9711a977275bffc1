package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

// TestPerSlotContext: with a KV stream per slot, the server reports and
// enforces the per-sequence context, not the whole cache.
func TestPerSlotContext(t *testing.T) {
	ts := startServer(t, modeltest.Preset(t, "tiny"), Options{}, scheduler.Options{Parallel: 4, Cells: 2048, KVLayout: scheduler.KVPerSlot})
	resp, err := http.Get(ts.URL + "/v1/models/" + ts.model)
	if err != nil {
		t.Fatal(err)
	}
	var m openai.Model
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || m.MaxModelLen != 512 {
		t.Fatalf("max_model_len %d (%v), want 2048/4 = 512", m.MaxModelLen, err)
	}
	long := strings.Repeat("the cat saw a dog ", 200)
	status, _, e := post(t, ts.URL+"/v1/completions", "application/json", []byte(`{"model":"`+ts.model+`","prompt":"`+long+`","max_tokens":4}`), nil)
	if status != 400 || e == nil || e.Code == nil || *e.Code != "context_length_exceeded" {
		t.Fatalf("prompt over the per-slot context: %d %+v", status, e)
	}
	c, err := ts.client.CreateCompletion(context.Background(), goopenai.CompletionRequest{Model: ts.model, Prompt: "the cat", MaxTokens: 8, N: 2})
	if err != nil || len(c.Choices) != 2 {
		t.Fatalf("n=2 on per-slot KV: %+v %v", c, err)
	}
}
