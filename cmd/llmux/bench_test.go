package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/llmux/llmux/benchmarks"
	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

// TestBenchEndToEnd runs `llmux bench` with 20 requests against a live
// llmux on a synthesized model and checks the JSON result, then compare and
// plot on it. Goodput is checked against an SLO every request meets (a
// first token within 60 s) and one none can (1 µs).
func TestBenchEndToEnd(t *testing.T) {
	m, err := engine.LoadModel(modeltest.Preset(t, "tiny"), engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sched, err := scheduler.New(m, scheduler.Options{Parallel: 4, Cells: 2048})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go sched.Run(ctx)
	defer func() { cancel(); sched.Close() }()
	runner := multiplex.NewRunner("tiny", sched)
	defer runner.Close()
	pool := multiplex.NewPool(multiplex.PoolOptions{})
	if err := pool.Add("tiny", nil, runner); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(server.New(pool, server.Options{}).Handler())
	defer hs.Close()

	dir := t.TempDir()
	out := filepath.Join(dir, "r.json")
	err = runBench(context.Background(), []string{"--base-url", hs.URL, "--model", "tiny", "--num-prompts", "20", "--max-concurrency", "2,4",
		"--random-input-len", "16", "--random-output-len", "8", "--ignore-eos", "--goodput", "ttft:60000", "--seed", "3", "--output", out, "--label", "llmux"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	points := res["points"].([]any)
	if len(points) != 2 {
		t.Fatalf("%d points, want 2", len(points))
	}
	for i, p := range points {
		pt := p.(map[string]any)
		s := pt["summary"].(map[string]any)
		if s["completed"].(float64) != 20 || s["total_output_tokens"].(float64) != 20*8 {
			t.Fatalf("point %d: %v", i, s)
		}
		for _, k := range []string{"ttft", "tpot", "itl", "e2el"} {
			d := s[k].(map[string]any)
			for _, f := range []string{"mean_ms", "median_ms", "p90_ms", "p99_ms"} {
				if v, ok := d[f].(float64); !ok || v <= 0 {
					t.Fatalf("point %d: %s.%s = %v", i, k, f, d[f])
				}
			}
		}
		if s["output_throughput"].(float64) <= 0 || s["request_goodput"].(float64) <= 0 || s["good_fraction"].(float64) != 1 {
			t.Fatalf("point %d throughput/goodput: %v", i, s)
		}
		if int(pt["max_concurrency"].(float64)) != []int{2, 4}[i] {
			t.Fatalf("point %d concurrency %v", i, pt["max_concurrency"])
		}
	}
	if err := runBenchCompare([]string{out, out}); err != nil {
		t.Fatal(err)
	}
	svg := filepath.Join(dir, "p.svg")
	if err := runBenchPlot([]string{"-o", svg, out}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(svg)
	if !strings.HasPrefix(string(b), "<svg") || !strings.Contains(string(b), "polyline") {
		t.Fatalf("plot is not an SVG with lines: %.80s", b)
	}

	// The same goodput check with an SLO no request can meet (a first token
	// within 1 µs): every request completes, none is good.
	outMiss := filepath.Join(dir, "miss.json")
	err = runBench(context.Background(), []string{"--base-url", hs.URL, "--model", "tiny", "--num-prompts", "4", "--max-concurrency", "2", "--warmup", "0",
		"--random-input-len", "16", "--random-output-len", "8", "--ignore-eos", "--goodput", "ttft:0.001", "--seed", "3", "--output", outMiss})
	if err != nil {
		t.Fatal(err)
	}
	miss, err := benchmarks.Load(outMiss)
	if err != nil {
		t.Fatal(err)
	}
	if s := miss.Points[0].Summary; s.Completed != 4 || s.Goodput != 0 || s.GoodFraction != 0 {
		t.Fatalf("TTFT SLO of 1µs: %d completed, goodput %v, good fraction %v; want 4, 0, 0", s.Completed, s.Goodput, s.GoodFraction)
	}

	// Every API the bench drives counts the same tokens (6 requests of 8
	// tokens each) and times their arrivals.
	for _, api := range []string{"completions", "chat", "messages", "responses"} {
		outAPI := filepath.Join(dir, api+".json")
		err = runBench(context.Background(), []string{"--base-url", hs.URL, "--model", "tiny", "--api", api, "--num-prompts", "6", "--max-concurrency", "2", "--warmup", "0",
			"--random-input-len", "8", "--random-output-len", "8", "--ignore-eos", "--seed", "3", "--output", outAPI})
		if err != nil {
			t.Fatalf("--api %s: %v", api, err)
		}
		r, err := benchmarks.Load(outAPI)
		if err != nil {
			t.Fatal(err)
		}
		if s := r.Points[0].Summary; s.Completed != 6 || s.OutputTokens != 6*8 || s.TTFT.Median <= 0 || s.ITL.N < 6*4 {
			t.Fatalf("--api %s: %+v", api, s)
		}
	}
	if err := runBench(context.Background(), []string{"--base-url", hs.URL, "--api", "grpc"}); err == nil {
		t.Fatal("--api grpc accepted")
	}

	// Without --model, bench takes the model the server lists.
	out2 := filepath.Join(dir, "default-model.json")
	err = runBench(context.Background(), []string{"--base-url", hs.URL, "--num-prompts", "2", "--warmup", "0",
		"--random-input-len", "4", "--random-output-len", "2", "--output", out2})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := benchmarks.Load(out2)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Model != "tiny" || r2.Points[0].Summary.Completed != 2 {
		t.Fatalf("without --model: model %q, %d completed", r2.Model, r2.Points[0].Summary.Completed)
	}
}

// TestBenchPairs pairs A and B result files by name and checks the ratios
// it writes.
func TestBenchPairs(t *testing.T) {
	dir := t.TempDir()
	save := func(name string, conc int, out float64) {
		r := &benchmarks.Result{Points: []benchmarks.Point{{MaxConcurrency: conc, Summary: benchmarks.Summary{OutputRate: out}}}}
		if err := r.Save(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range []float64{12, 9, 10} {
		save(fmt.Sprintf("a-%d.json", i+1), 4, a)
		save(fmt.Sprintf("b-%d.json", i+1), 4, 10)
	}
	out := filepath.Join(dir, "pairs.json")
	err := runBenchPairs([]string{"--metric", "output_throughput", "--a", filepath.Join(dir, "a-*.json"), "--b", filepath.Join(dir, "b-*.json"), "--output", out})
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Metric string
		A      []string
		Levels []struct {
			MaxConcurrency int `json:"max_concurrency"`
			Pairs          struct {
				Ratios           []float64
				Median, Min, Max float64
			}
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Levels) != 1 || len(rep.A) != 3 || filepath.Base(rep.A[1]) != "a-2.json" {
		t.Fatalf("report %s", data)
	}
	p := rep.Levels[0].Pairs
	if rep.Levels[0].MaxConcurrency != 4 || fmt.Sprint(p.Ratios) != "[1.2 0.9 1]" || p.Median != 1 || p.Min != 0.9 || p.Max != 1.2 {
		t.Fatalf("report %s", data)
	}
	err = runBenchPairs([]string{"--a", filepath.Join(dir, "a-*.json"), "--b", filepath.Join(dir, "b-1.json")})
	if err == nil || !strings.Contains(err.Error(), "3 A files") {
		t.Fatalf("3 A files and 1 B file: %v", err)
	}
}

// TestBenchModelDistPairs runs `llmux bench --model-dist pairs` against a
// fake server that accepts any model name and checks the result's
// per-request models and per-model counts.
func TestBenchModelDistPairs(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string `json:"model"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		seen[req.Model]++
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer hs.Close()
	out := filepath.Join(t.TempDir(), "pairs.json")
	args := []string{"--base-url", hs.URL, "--models", "a,b,c", "--model-dist", "pairs", "--max-concurrency", "4",
		"--num-prompts", "24", "--warmup", "0", "--dataset-name", "stories", "--goodput", "ttft:2000", "--output", out}
	if err := runBench(context.Background(), args); err != nil {
		t.Fatal(err)
	}
	res, err := benchmarks.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Points[0]
	if len(p.Requests) != 24 {
		t.Fatalf("%d request records, want 24", len(p.Requests))
	}
	models := []string{"a", "b", "c"}
	next := map[int]int{}
	counts := map[string]int{}
	for i, r := range p.Requests {
		if want := models[(r.Client+next[r.Client]%2)%3]; r.Model != want {
			t.Fatalf("request %d: client %d's request %d named %q, want %q", i, r.Client, next[r.Client], r.Model, want)
		}
		next[r.Client]++
		counts[r.Model]++
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range models {
		if p.Summary.PerModel[m] != counts[m] || seen[m] != counts[m] {
			t.Errorf("model %s: summary %d, records %d, server %d", m, p.Summary.PerModel[m], counts[m], seen[m])
		}
	}
	if p.Summary.Goodput <= 0 {
		t.Errorf("goodput %v", p.Summary.Goodput)
	}
	// Pairs needs clients.
	err = runBench(context.Background(), []string{"--base-url", hs.URL, "--models", "a,b", "--model-dist", "pairs", "--num-prompts", "2", "--warmup", "0"})
	if err == nil || !strings.Contains(err.Error(), "--max-concurrency") {
		t.Errorf("pairs without --max-concurrency: %v", err)
	}
}

// TestSweepLevelsDrawTheirOwnPrompts: in a sweep, no prompt of one level
// (or of the warm-up) is sent again by another level, so a server's prompt
// cache cannot skip a later level's prefill; with --same-prompts every level
// sends the same prompts and the warm-up is the first of them, as before.
func TestSweepLevelsDrawTheirOwnPrompts(t *testing.T) {
	cfg := benchmarks.WorkloadConfig{Dataset: "random", InputLen: 32, OutputLen: 8, Seed: 1}
	seen := map[string]string{}
	for i := range 3 {
		items, warm, err := levelPrompts(cfg, i, 16, 2, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != 16 || len(warm) != 2 {
			t.Fatalf("level %d: %d prompts and %d warm-up, want 16 and 2", i, len(items), len(warm))
		}
		for k, it := range append(items, warm...) {
			who := fmt.Sprintf("level %d item %d", i, k)
			if k >= len(items) {
				who = fmt.Sprintf("level %d warm-up %d", i, k-len(items))
			}
			if prev, dup := seen[it.Prompt]; dup {
				t.Fatalf("%s repeats the prompt of %s", who, prev)
			}
			seen[it.Prompt] = who
		}
	}
	a, wa, err := levelPrompts(cfg, 0, 16, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := levelPrompts(cfg, 2, 16, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	for k := range a {
		if a[k].Prompt != b[k].Prompt {
			t.Fatalf("--same-prompts: level 2 item %d differs from level 0's", k)
		}
	}
	if wa[0].Prompt != a[0].Prompt {
		t.Fatal("--same-prompts: the warm-up is not the first of the level's prompts")
	}
}
