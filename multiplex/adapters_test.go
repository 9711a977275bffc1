package multiplex

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/scheduler"
)

// TestPoolServesAdapters: through the pool, BASE:ADAPTER and the adapter's
// own name run the base model with the adapter; its greedy text differs
// from the base's and from another adapter's; adapters are listed with
// their parent; an adapter registered while the base is loaded is served
// by name on first use.
func TestPoolServesAdapters(t *testing.T) {
	base := modeltest.Preset(t, "tiny")
	lora := func(seed uint64) string { return modeltest.LoRA(t, base, models.LoRAConfig{Seed: seed}) }
	pa, pb, pc := lora(201), lora(202), lora(203)
	cat, err := NewCatalog(CatalogOptions{
		Models:      []ModelConfig{{Name: "tiny", Path: base, Adapters: []AdapterConfig{{Name: "a", Path: pa}, {Name: "b", Path: pb}}}},
		AdapterDirs: []string{filepath.Dir(pc)},
	})
	if err != nil {
		t.Fatal(err)
	}
	el := &EngineLoader{Catalog: cat, Defaults: scheduler.Options{Parallel: 4, Cells: 1024}}
	p := NewPool(PoolOptions{Catalog: cat, Load: el.Load, Size: el.Size})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const prompt = "the cat saw a big red ball"
	gen := func(model string) string {
		t.Helper()
		text, _, e := complete(context.Background(), p, model, prompt, 16)
		if e != nil {
			t.Fatalf("%s: %v", model, e)
		}
		return text
	}
	baseText, viaBase, own, other := gen("tiny"), gen("tiny:a"), gen("a"), gen("tiny:b")
	if viaBase != own {
		t.Fatalf("tiny:a gave %q, a gave %q", viaBase, own)
	}
	if viaBase == baseText || viaBase == other {
		t.Fatalf("adapters do not change the output: tiny %q, tiny:a %q, tiny:b %q", baseText, viaBase, other)
	}
	if again := gen("tiny"); again != baseText {
		t.Fatalf("the base model after its adapters gave %q, before %q", again, baseText)
	}

	parents := map[string]string{}
	for _, mi := range p.Models(context.Background()) {
		parents[mi.ID] = mi.Parent
	}
	if parents["a"] != "tiny" || parents["b"] != "tiny" || parents["tiny"] != "" {
		t.Fatalf("listed parents: %v", parents)
	}
	if mi, e := p.Info(context.Background(), "tiny:b"); e != nil || mi.Parent != "tiny" {
		t.Fatalf("info of tiny:b: %+v, %v", mi, e)
	}

	if _, err := cat.AddAdapter("tiny", AdapterConfig{Name: "c", Path: pc}); err != nil {
		t.Fatal(err)
	}
	if c := gen("tiny:c"); c == baseText || c == viaBase {
		t.Fatalf("runtime adapter c gave %q (base %q, a %q)", c, baseText, viaBase)
	}

	// The load lists the resident base and the adapters loaded on it, each
	// under both its names; the bound is the one base plus the catalog's
	// three adapters, twice; nothing runs, so no KV cell is active.
	// (The scheduler publishes its counts after a step, which may be just
	// after the last request's end reached the test.)
	l := p.Load()
	for deadline := time.Now().Add(10 * time.Second); (l.Running != 0 || l.KVCellsActive != 0) && time.Now().Before(deadline); l = p.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	if !slices.Equal(l.Active, []string{"a", "b", "c", "tiny", "tiny:a", "tiny:b", "tiny:c"}) || l.MaxActive != 7 || len(l.Loading) != 0 {
		t.Fatalf("load: active %v loading %v max %d", l.Active, l.Loading, l.MaxActive)
	}
	if l.KVCells <= 0 || l.KVCellsActive != 0 || l.Running != 0 || l.Waiting != 0 || l.Unready != "" {
		t.Fatalf("idle load: %+v", l)
	}
}
