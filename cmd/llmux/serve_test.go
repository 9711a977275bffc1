package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "llmux.yaml")
	os.WriteFile(cfg, []byte("parallel: 6\nport: 9000\nctx_size: 1024\napi_key: [a, b]\nqueue-timeout: 5s\n"), 0o644)
	t.Setenv("LLMUX_PORT", "9100")     // env beats the file
	t.Setenv("LLMUX_THREADS", "3")     // env alone
	t.Setenv("LLMUX_PARALLEL", "oops") // ignored: the flag is given
	f := newServeFlags()
	if err := f.parse([]string{"--config", cfg, "--parallel", "2"}); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"parallel (flag)", *f.parallel, 2},
		{"port (env over file)", *f.port, 9100},
		{"threads (env)", *f.threads, 3},
		{"ctx-size (file, underscore key)", *f.ctxSize, 1024},
		{"api-key (file list)", *f.apiKeys, "a,b"},
		{"queue-timeout (file, dash key)", *f.queueTimeout, 5 * time.Second},
		{"batch (default)", *f.batch, 128},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("no_such_flag: 1\n"), 0o644)
	if err := newServeFlags().parse([]string{"--config", bad}); err == nil {
		t.Error("unknown config key accepted")
	}
	os.WriteFile(bad, []byte("port: [not, a, number]\n"), 0o644)
	if err := newServeFlags().parse([]string{"--config", bad}); err == nil {
		t.Error("bad config value accepted")
	}
	t.Setenv("LLMUX_PORT", "eighty")
	if err := newServeFlags().parse(nil); err == nil {
		t.Error("bad environment value accepted")
	}
	if err := newServeFlags().parse([]string{"--config", filepath.Join(dir, "missing.yaml")}); err == nil {
		t.Error("missing config file accepted")
	}
}
