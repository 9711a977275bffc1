package server

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

func TestRegisteringAnAdapterAtRunTime(t *testing.T) {
	base := modeltest.Preset(t, "tiny")
	lora := modeltest.LoRA(t, base, models.LoRAConfig{Seed: 77})
	cat, err := multiplex.NewCatalog(multiplex.CatalogOptions{Models: []multiplex.ModelConfig{{Name: "tiny", Path: base}}, AdapterDirs: []string{filepath.Dir(lora)}})
	if err != nil {
		t.Fatal(err)
	}
	el := &multiplex.EngineLoader{Catalog: cat, Defaults: scheduler.Options{Parallel: 2, Cells: 512}}
	pool := multiplex.NewPool(multiplex.PoolOptions{Catalog: cat, Load: el.Load, Size: el.Size})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pool.Run(ctx) }()
	defer func() { cancel(); <-done }()
	hs := httptest.NewServer(New(pool, Options{AdminKeys: []string{"adm"}}).Handler())
	defer hs.Close()
	admin := map[string]string{"Authorization": "Bearer adm"}
	load := func(body string, hdr map[string]string) (int, *openai.Error) {
		status, _, e := post(t, hs.URL+"/v1/load_lora_adapter", "application/json", []byte(body), hdr)
		return status, e
	}
	complete := func(model string) int {
		status, _, _ := post(t, hs.URL+"/v1/completions", "application/json", []byte(`{"model":"`+model+`","prompt":"the cat","max_tokens":3}`), nil)
		return status
	}
	good, _ := json.Marshal(map[string]string{"lora_name": "dyn", "lora_path": filepath.Base(lora), "base_model_name": "tiny"})
	if status, _ := load(string(good), nil); status != 401 {
		t.Fatalf("without the admin key: %d, want 401", status)
	}
	// A real adapter file, but outside the adapter directories.
	elsewhere := filepath.Join(t.TempDir(), "elsewhere.gguf")
	if data, err := os.ReadFile(lora); err != nil || os.WriteFile(elsewhere, data, 0o644) != nil {
		t.Fatal("copying the adapter")
	}
	outside, _ := json.Marshal(map[string]string{"lora_name": "evil", "lora_path": elsewhere})
	if status, e := load(string(outside), admin); status != 400 || e == nil || strings.Contains(e.Message, filepath.Dir(lora)) {
		t.Fatalf("a path outside the adapter directories: %d %+v", status, e)
	}
	if status, e := load(`{"lora_name":"x","lora_path":"../../etc/passwd"}`, admin); status != 400 {
		t.Fatalf("a traversal: %d %+v", status, e)
	}
	if complete("dyn") != 404 {
		t.Fatal("an adapter served before it was registered")
	}
	if status, e := load(string(good), admin); status != 200 {
		t.Fatalf("registering: %d %+v", status, e)
	}
	if s := complete("dyn"); s != 200 {
		t.Fatalf("the registered adapter: %d", s)
	}
	if s := complete("tiny:dyn"); s != 200 {
		t.Fatalf("the registered adapter as BASE:ADAPTER: %d", s)
	}
	status, _, e := post(t, hs.URL+"/v1/unload_lora_adapter", "application/json", []byte(`{"lora_name":"dyn"}`), admin)
	if status != 200 {
		t.Fatalf("unloading: %d %+v", status, e)
	}
	if s := complete("dyn"); s != 404 {
		t.Fatalf("the unloaded adapter: %d, want 404", s)
	}
}
