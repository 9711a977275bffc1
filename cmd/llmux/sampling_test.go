package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/models/modeltest"
)

// TestPerModelSamplingDefaultsApplyWhereTheRequestIsSilent: a model's
// sampling: settings (max_tokens 3, temperature 0) shape requests that
// leave them out — three tokens, the same greedy text each time — and a
// request's own max_tokens wins.
func TestPerModelSamplingDefaultsApplyWhereTheRequestIsSilent(t *testing.T) {
	port := freePort(t)
	cfg := fmt.Sprintf(`replicas: 0
port: %d
log-level: error
ollama-models: /nonexistent
models:
  - name: tiny
    path: %s
    sampling: {max_tokens: 3, temperature: 0}
`, port, modeltest.Preset(t, "tiny"))
	path := filepath.Join(t.TempDir(), "llmux.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, base := serveConfig(t, path, port)
	complete := func(maxTokens int) goopenai.CompletionResponse {
		t.Helper()
		body := `{"model":"tiny","prompt":"the cat saw","ignore_eos":true}`
		if maxTokens > 0 {
			body = fmt.Sprintf(`{"model":"tiny","prompt":"the cat saw","ignore_eos":true,"max_tokens":%d}`, maxTokens)
		}
		r, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var resp goopenai.CompletionResponse
		if err := json.NewDecoder(r.Body).Decode(&resp); err != nil || r.StatusCode != 200 {
			t.Fatalf("status %d: %v", r.StatusCode, err)
		}
		return resp
	}
	a, b := complete(0), complete(0)
	if a.Usage.CompletionTokens != 3 {
		t.Fatalf("without max_tokens: %d tokens, want the model's 3", a.Usage.CompletionTokens)
	}
	if a.Choices[0].Text != b.Choices[0].Text {
		t.Fatalf("without temperature, two requests differ (%q, %q): the model's temperature 0 was not applied", a.Choices[0].Text, b.Choices[0].Text)
	}
	if got := complete(5).Usage.CompletionTokens; got != 5 {
		t.Fatalf("max_tokens 5: %d tokens", got)
	}
}
