package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestNodeSDKConformance runs test/conformance (the official OpenAI Node
// SDK and Anthropic TypeScript SDK, installed by `make setup`) against a
// live server. Under `make test`
// LLMUX_REQUIRE_NODE=1 makes a missing SDK a failure, not a skip.
func TestNodeSDKConformance(t *testing.T) {
	dir, _ := filepath.Abs("../test/conformance")
	_, errSDK := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@anthropic-ai", "sdk", "package.json")); err != nil {
		errSDK = err
	}
	node, errNode := exec.LookPath("node")
	if errSDK != nil || errNode != nil {
		msg := "the OpenAI Node SDK or the Anthropic SDK is not installed (run `make setup`): skipping the conformance test"
		if os.Getenv("LLMUX_REQUIRE_NODE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ts := tinyServer(t, Options{APIKeys: []string{"conformance-key", "other-key"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "conformance.test.mjs", "anthropic.test.mjs", "responses.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LLMUX_BASE_URL="+ts.URL+"/v1", "LLMUX_MODEL="+ts.model, "LLMUX_API_KEY=conformance-key", "LLMUX_OTHER_KEY=other-key")
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("conformance failed: %v", err)
	}
}
