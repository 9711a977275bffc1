package scheduler

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
)

// loraModel loads the tiny preset with n synthesized LoRA adapters of
// different seeds, named "a", "b", ....
func loraModel(t *testing.T, n int) (*engine.Model, map[string]AdapterSpec) {
	t.Helper()
	base := modeltest.Preset(t, "tiny")
	m, err := engine.LoadModel(base, engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	specs := map[string]AdapterSpec{}
	for i := range n {
		name := string(rune('a' + i))
		specs[name] = AdapterSpec{Path: modeltest.LoRA(t, base, models.LoRAConfig{Seed: uint64(100 + i)})}
	}
	return m, specs
}

// generate runs one greedy request to its end.
func generate(t *testing.T, s *Scheduler, prompt []int32, adapter string, n int) result {
	t.Helper()
	st, err := s.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: n, IgnoreEOS: true, Adapter: adapter})
	if err != nil {
		t.Fatal(err)
	}
	return collect(t, st)
}

// TestAdapterOutputDiffersFromBaseAndMatchesAlone: an adapter's greedy
// output differs from the base model's, and equals what the adapter gives
// served alone (a scheduler that only ever runs it).
func TestAdapterOutputDiffersFromBaseAndMatchesAlone(t *testing.T) {
	m, specs := loraModel(t, 1)
	prompt := tokenize(t, m, prompts(3)[2])
	base := generate(t, start(t, m, Options{Parallel: 1, Cells: 1024}), prompt, "", 24).tokens[0]
	alone := generate(t, start(t, m, Options{Parallel: 1, Cells: 1024, Adapters: specs}), prompt, "a", 24).tokens[0]
	if slices.Equal(base, alone) {
		t.Fatalf("adapter a and the base model agree: %v", base)
	}
	s := start(t, m, Options{Parallel: 2, Cells: 1024, Adapters: specs})
	var got [2]result
	var wg sync.WaitGroup
	for i, a := range []string{"", "a"} {
		wg.Go(func() { got[i] = generate(t, s, prompt, a, 24) })
	}
	wg.Wait()
	if !slices.Equal(got[0].tokens[0], base) || !slices.Equal(got[1].tokens[0], alone) {
		t.Fatalf("side by side:\n base %v\n want %v\n a    %v\n want %v", got[0].tokens[0], base, got[1].tokens[0], alone)
	}
}

// TestSamePromptUnderTwoAdapters: the same prompt under adapter a and then
// adapter b gives b exactly what b gives alone: b reuses no KV computed
// under a.
func TestSamePromptUnderTwoAdapters(t *testing.T) {
	m, specs := loraModel(t, 2)
	prompt := tokenize(t, m, prompts(40)[39]) // long enough to share (>= 32 tokens)
	if len(prompt) < minSharedPrefix+2 {
		t.Fatalf("prompt of %d tokens is too short to test prefix reuse", len(prompt))
	}
	want := generate(t, start(t, m, Options{Parallel: 1, Cells: 1024, Adapters: specs}), prompt, "b", 24).tokens[0]
	s := start(t, m, Options{Parallel: 2, Cells: 1024, Adapters: specs})
	a := generate(t, s, prompt, "a", 24)
	b := generate(t, s, prompt, "b", 24)
	if !slices.Equal(b.tokens[0], want) {
		t.Fatalf("b after a:\n got  %v\n want %v", b.tokens[0], want)
	}
	if b.usage.CachedTokens != 0 {
		t.Fatalf("b reused %d tokens cached under a", b.usage.CachedTokens)
	}
	if slices.Equal(a.tokens[0], want) {
		t.Fatal("adapters a and b agree; the test cannot tell them apart")
	}
	if again := generate(t, s, prompt, "b", 24); !slices.Equal(again.tokens[0], want) || again.usage.CachedTokens == 0 {
		t.Fatalf("b again: %v with %d cached tokens, want %v from its own cache", again.tokens[0], again.usage.CachedTokens, want)
	}
}

// TestFourAdaptersInterleaved: sequences of four adapters (and the base
// model) in one scheduler each give the same greedy text as alone.
func TestFourAdaptersInterleaved(t *testing.T) {
	m, specs := loraModel(t, 4)
	names := []string{"a", "b", "c", "d", ""}
	ps := prompts(10)
	const gen = 20
	want := map[string]string{}
	solo := start(t, m, Options{Parallel: 1, Cells: 2048, NoPrefixCache: true, Adapters: specs})
	for i, p := range ps {
		a := names[i%len(names)]
		want[fmt.Sprint(i)] = collectText(generate(t, solo, tokenize(t, m, p), a, gen))
	}
	s := start(t, m, Options{Parallel: 6, Cells: 2048, Adapters: specs})
	got := make([]string, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { got[i] = collectText(generate(t, s, tokenize(t, m, p), names[i%len(names)], gen)) })
	}
	wg.Wait()
	for i := range ps {
		if got[i] != want[fmt.Sprint(i)] {
			t.Errorf("request %d (adapter %q):\n got  %q\n want %q", i, names[i%len(names)], got[i], want[fmt.Sprint(i)])
		}
	}
	st := settled(s)
	t.Logf("%d steps, %d adapter switches", st.Steps, st.AdapterSwitches)
	if st.AdapterSwitches < 4 {
		t.Fatalf("%d adapter switches: the adapters did not interleave", st.AdapterSwitches)
	}
}

func collectText(r result) string { return r.text[0] }
