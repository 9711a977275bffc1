package benchmarks

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestGenerateDeterministicAndBounded(t *testing.T) {
	for _, ds := range []string{"random", "stories", "shared-prefix", "multi-turn"} {
		cfg := WorkloadConfig{Dataset: ds, InputLen: 100, OutputLen: 50, RangeRatio: 0.2, PrefixLen: 64, Turns: 3, Seed: 42}
		a, err := Generate(cfg, 30)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Generate(cfg, 30)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: same seed, different items", ds)
		}
		cfg.Seed = 43
		c, _ := Generate(cfg, 30)
		if ds != "stories" && reflect.DeepEqual(a, c) {
			t.Fatalf("%s: different seeds, same items", ds)
		}
		if len(a) != 30 {
			t.Fatalf("%s: %d items", ds, len(a))
		}
		for i, it := range a {
			if it.MaxTokens < 40 || it.MaxTokens > 60 {
				t.Fatalf("%s item %d: max_tokens %d outside [40, 60]", ds, i, it.MaxTokens)
			}
			if ds == "random" {
				if n := len(strings.Fields(it.Prompt)); n < 80 || n > 120 || n != it.PromptWords {
					t.Fatalf("random item %d: %d words (PromptWords %d), want 80..120", i, n, it.PromptWords)
				}
			}
		}
	}
}

func TestSharedPrefixAndMultiTurnShapes(t *testing.T) {
	sp, _ := Generate(WorkloadConfig{Dataset: "shared-prefix", PrefixLen: 32, Seed: 1}, 5)
	for _, it := range sp[1:] {
		if it.Messages[0].Content != sp[0].Messages[0].Content {
			t.Fatal("shared-prefix items do not share the system prompt")
		}
	}
	mt, _ := Generate(WorkloadConfig{Dataset: "multi-turn", Turns: 3, Seed: 1}, 6)
	for i := 1; i < 3; i++ {
		prev, cur := mt[i-1].Messages, mt[i].Messages
		if len(cur) != len(prev)+2 || !reflect.DeepEqual(cur[:len(prev)], prev) {
			t.Fatalf("turn %d does not extend turn %d", i, i-1)
		}
	}
	if len(mt[3].Messages) != 1 {
		t.Fatal("the fourth item should start a new conversation")
	}
}

func TestModelsAndCancellation(t *testing.T) {
	items, _ := Generate(WorkloadConfig{Models: []string{"a", "b", "c"}, Seed: 1, CancelAfter: 3, CancelShare: 1}, 6)
	for i, it := range items {
		if it.Model != []string{"a", "b", "c"}[i%3] || it.CancelAfter != 3 {
			t.Fatalf("item %d: model %q cancel %d", i, it.Model, it.CancelAfter)
		}
	}
	z, _ := Generate(WorkloadConfig{Models: []string{"hot", "warm", "cold", "colder"}, ModelDist: "zipf", Seed: 1}, 400)
	counts := map[string]int{}
	for _, it := range z {
		counts[it.Model]++
	}
	if counts["hot"] <= counts["cold"] || counts["hot"] < 100 {
		t.Fatalf("zipf counts %v: the first model should dominate", counts)
	}
}

func TestJSONL(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trace.jsonl")
	os.WriteFile(p, []byte(`{"prompt":"hello there","max_tokens":5}
{"messages":[{"role":"user","content":"hi"}],"model":"m2"}
`), 0o644)
	items, err := Generate(WorkloadConfig{Dataset: "jsonl", Path: p}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if items[0].Prompt != "hello there" || items[0].MaxTokens != 5 || items[1].Model != "m2" || items[2].Prompt != "hello there" {
		t.Fatalf("items %+v", items)
	}
	os.WriteFile(p, []byte("{not json\n"), 0o644)
	if _, err := Generate(WorkloadConfig{Dataset: "jsonl", Path: p}, 1); err == nil {
		t.Fatal("bad jsonl accepted")
	}
	if _, err := Generate(WorkloadConfig{Dataset: "nope"}, 1); err == nil {
		t.Fatal("unknown dataset accepted")
	}
}

func TestPairsModelAlternatesPerClient(t *testing.T) {
	models := []string{"a", "b", "c"}
	pick := PairsModel(models)
	for c := range 8 {
		first, second := models[c%3], models[(c+1)%3]
		for n := range 6 {
			want := first
			if n%2 == 1 {
				want = second
			}
			if got := pick(c, n); got != want {
				t.Fatalf("client %d request %d: model %q, want %q (alternating %s and %s)", c, n, got, want, first, second)
			}
		}
	}
	items, err := Generate(WorkloadConfig{Models: models, ModelDist: "pairs", Seed: 1}, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		if it.Model != "" {
			t.Fatalf("pairs item %d names model %q: the runner names it from the client", i, it.Model)
		}
	}
	if _, err := Generate(WorkloadConfig{ModelDist: "pairs"}, 1); err == nil {
		t.Fatal("pairs without models: no error")
	}
	if _, err := Generate(WorkloadConfig{Models: models, ModelDist: "round-robin"}, 1); err == nil {
		t.Fatal("unknown model distribution: no error")
	}
}
