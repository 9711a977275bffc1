package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/models/modeltest"
)

// exampleConfig is examples/composed/llmux.yaml with its model paths
// pointed at synthesized models, served in process on port, and with the
// auth keys given.
func exampleConfig(t *testing.T, port int, keys ...string) string {
	t.Helper()
	data, err := os.ReadFile("../../examples/composed/llmux.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(data), "path: chat.gguf", "path: "+modeltest.Preset(t, "tiny"), 1)
	s = strings.Replace(s, "path: code.gguf", "path: "+modeltest.Preset(t, "small"), 1)
	var kl strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&kl, "            - key: %s\n", k)
	}
	s = strings.Replace(s, "            - key: secret\n", kl.String(), 1)
	return fmt.Sprintf("replicas: 0\nport: %d\nlog-level: error\nparallel: 4\nollama-models: /nonexistent\n", port) + s
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serveConfig runs llmux serve -f path (listening on port) until the test
// ends, and waits until it is ready. It returns the serving context (for
// the test's requests) and the server's base URL.
func serveConfig(t *testing.T, path string, port int) (context.Context, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- runServe(ctx, []string{"-f", path}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := http.Get(base + "/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return ctx, base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeTheExampleConfigAndReloadItUnderLoad serves the example's YAML
// with llmux serve: the application answers at its prefix behind its key
// while the root serves every model; a SIGHUP with a second key added
// applies while clients stream through the application, and none of
// their requests fails.
func TestServeTheExampleConfigAndReloadItUnderLoad(t *testing.T) {
	port := freePort(t)
	path := filepath.Join(t.TempDir(), "llmux.yaml")
	if err := os.WriteFile(path, []byte(exampleConfig(t, port, "secret")), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, base := serveConfig(t, path, port)
	client := func(prefix, key string) *goopenai.Client {
		cfg := goopenai.DefaultConfig(key)
		cfg.BaseURL = base + prefix + "/v1"
		return goopenai.NewClientWithConfig(cfg)
	}
	ask := func(c *goopenai.Client, prompt string) error {
		st, err := c.CreateChatCompletionStream(ctx, goopenai.ChatCompletionRequest{Model: "chat", MaxTokens: 6, Stream: true,
			Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: prompt}}})
		if err != nil {
			return err
		}
		defer st.Close()
		for {
			if _, err := st.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	if list, err := client("/assistant", "secret").ListModels(ctx); err != nil || len(list.Models) != 2 {
		t.Fatalf("the application's models: %+v %v", list, err)
	}
	if err := ask(client("/assistant", "secret"), "fix the bug in this function"); err != nil {
		t.Fatalf("through the application: %v", err)
	}
	var apiErr *goopenai.APIError
	if err := ask(client("/assistant", ""), "hi"); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("the application without its key: %v", err)
	}
	if err := ask(client("/assistant", "second"), "hi"); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("a key not yet configured: %v", err)
	}
	if list, err := client("", "").ListModels(ctx); err != nil || len(list.Models) != 2 {
		t.Fatalf("the root's models: %+v %v", list, err)
	}

	// Load through the application while the config changes under it.
	var failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := ask(client("/assistant", "secret"), fmt.Sprintf("client %d asks %d", i, n)); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	if err := os.WriteFile(path, []byte(exampleConfig(t, port, "secret", "second")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for ask(client("/assistant", "second"), "hi") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the reloaded config's key was never accepted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d requests failed across the reload; first: %v", n, firstErr.Load())
	}
}

// TestApplySendsAConfigToARunningServer: llmux apply with the admin key
// makes the file's applications the running ones (a new key works at
// once); a file with a mistake is refused before it is sent, and one the
// server cannot build changes nothing; without the admin key nothing is
// applied.
func TestApplySendsAConfigToARunningServer(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	start := write("llmux.yaml", "admin-key: adm\n"+exampleConfig(t, port, "secret"))
	ctx, base := serveConfig(t, start, port)
	listWith := func(key string) error {
		cfg := goopenai.DefaultConfig(key)
		cfg.BaseURL = base + "/assistant/v1"
		_, err := goopenai.NewClientWithConfig(cfg).ListModels(ctx)
		return err
	}
	if listWith("third") == nil {
		t.Fatal("a key not yet applied was accepted")
	}
	next := write("next.yaml", exampleConfig(t, port, "secret", "third"))
	if err := runApply(ctx, []string{"--base-url", base, "--admin-key", "wrong", next}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("apply with a wrong admin key: %v", err)
	}
	if listWith("third") == nil {
		t.Fatal("a refused apply changed the running config")
	}
	bad := write("bad.yaml", strings.Replace(exampleConfig(t, port, "secret"), "kind: keyword-router", "kind: keyword-ruoter", 1))
	if err := runApply(ctx, []string{"--base-url", base, "--admin-key", "adm", bad}); err == nil || !strings.Contains(err.Error(), "keyword-ruoter") || !strings.Contains(err.Error(), "not sent") {
		t.Fatalf("apply of a file with a mistake: %v", err)
	}
	missing := write("missing.yaml", strings.Replace(exampleConfig(t, port, "secret", "third"), "models: [code]", "models: [nowhere]", 1))
	if err := runApply(ctx, []string{"--base-url", base, "--admin-key", "adm", missing}); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("apply of a file naming a model the server lacks: %v", err)
	}
	if listWith("third") == nil {
		t.Fatal("a failed apply changed the running config")
	}
	if err := runApply(ctx, []string{"--base-url", base, "--admin-key", "adm", next}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := listWith("third"); err != nil {
		t.Fatalf("the applied key: %v", err)
	}
}
