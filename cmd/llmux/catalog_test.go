package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

// ollamaStore lays a GGUF file out as ollama stores a pulled model
// (manifests/registry.ollama.ai/library/NAME/TAG → blobs/sha256-DIGEST),
// with a template layer beside the model layer, and returns the store's
// root.
func ollamaStore(t *testing.T, gguf, name, tag string) string {
	t.Helper()
	data, err := os.ReadFile(gguf)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	blob := func(b []byte) string {
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		if err := os.MkdirAll(filepath.Join(root, "blobs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "blobs", "sha256-"+d), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + d
	}
	model, tmpl, config := blob(data), blob([]byte("{{ .Prompt }}")), blob([]byte(`{"model_format":"gguf","model_family":"llama"}`))
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":%q,"size":13},"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":%q,"size":%d},{"mediaType":"application/vnd.ollama.image.template","digest":%q,"size":13}]}`,
		config, model, len(data), tmpl)
	dir := filepath.Join(root, "manifests", "registry.ollama.ai", "library", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tag), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestServeAnOllamaModelByItsName(t *testing.T) {
	store := ollamaStore(t, modeltest.Preset(t, "tiny"), "llama3.2", "latest")
	f := newServeFlags()
	if err := f.parse([]string{"--model", "llama3.2", "--ollama-models", store}); err != nil {
		t.Fatal(err)
	}
	cat, err := f.catalog(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	loader := &multiplex.EngineLoader{Defaults: scheduler.Options{Parallel: 2, Cells: 512}}
	pool := multiplex.NewPool(multiplex.PoolOptions{Catalog: cat, Load: loader.Load, Size: loader.Size})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pool.Run(ctx) }()
	defer func() { cancel(); <-done }()
	hs := httptest.NewServer(server.New(pool, server.Options{}).Handler())
	defer hs.Close()
	cfg := goopenai.DefaultConfig("")
	cfg.BaseURL = hs.URL + "/v1"
	client := goopenai.NewClientWithConfig(cfg)
	for _, name := range []string{"llama3.2", "llama3.2:latest"} {
		resp, err := client.CreateChatCompletion(context.Background(), goopenai.ChatCompletionRequest{
			Model: name, MaxTokens: 4, Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
		})
		if err != nil || len(resp.Choices) != 1 {
			t.Fatalf("%s: %v", name, err)
		}
	}
	list, err := client.ListModels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Models {
		ids = append(ids, m.ID)
	}
	// The configured model takes ollama's full name, and the store's own
	// entry for the same file is not listed twice.
	if strings.Join(ids, ",") != "llama3.2:latest" {
		t.Fatalf("listed models %v, want llama3.2:latest alone", ids)
	}
}

func TestServeModelsFromFlagsAndConfig(t *testing.T) {
	tiny := modeltest.Preset(t, "tiny")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "llmux.yaml")
	os.WriteFile(cfg, []byte("parallel: 2\nmodels:\n  - name: story\n    path: "+tiny+"\n    ctx_size: 512\n    aliases: [tale]\n"), 0o644)
	f := newServeFlags()
	if err := f.parse([]string{"--config", cfg, "--model", "first=" + tiny, "--ollama-models", filepath.Join(dir, "none")}); err != nil {
		t.Fatal(err)
	}
	if *f.parallel != 2 {
		t.Fatalf("flat key beside models: parallel %d", *f.parallel)
	}
	cat, err := f.catalog(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range cat.Entries() {
		got = append(got, fmt.Sprintf("%s:%v:%d", e.Name, e.Config.Pinned, e.Config.CtxSize))
	}
	if want := "first:false:0,story:false:512"; strings.Join(got, ",") != want {
		t.Fatalf("entries %v, want %s", got, want)
	}
	if b, _, err := cat.Resolve("tale"); err != nil || b.Name != "story" {
		t.Fatalf("alias: %v %v", b.Name, err)
	}
}

func TestServeConfigModelsErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, yaml string }{
		{"unknown key in a model", "models:\n  - name: a\n    path: x.gguf\n    colour: red\n"},
		{"models not a list", "models: 3\n"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(c.yaml), 0o644)
		if err := newServeFlags().parse([]string{"--config", p}); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	// Two models under one name are refused at start.
	tiny := modeltest.Preset(t, "tiny")
	f := newServeFlags()
	if err := f.parse([]string{"--model", "a=" + tiny, "--model", "a=" + tiny + "x", "--ollama-models", filepath.Join(dir, "none")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.catalog(slog.Default()); err == nil {
		t.Error("two models named a accepted")
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1000": 1000, "512MiB": 512 << 20, "12GiB": 12 << 30, "8G": 8 << 30, "1.5GB": 1_500_000_000} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"lots", "-1G", "12XB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}
