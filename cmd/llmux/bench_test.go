package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

// TestBenchEndToEnd runs `llmux bench` with 20 requests against a live
// llmux on a synthesized model and checks the JSON result, then compare and
// plot on it.
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
	pool := multiplex.NewPool()
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
}
