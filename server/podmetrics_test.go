package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// loadOnly is a backend whose load the test sets; it serves nothing else.
type loadOnly struct {
	llm.Backend
	mu sync.Mutex
	l  llm.LoadInfo
}

func (b *loadOnly) Load() llm.LoadInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.l
}
func (b *loadOnly) set(l llm.LoadInfo)                     { b.mu.Lock(); b.l = l; b.mu.Unlock() }
func (b *loadOnly) Models(context.Context) []llm.ModelInfo { return nil }

// TestPodSeriesRenderTheBackendsLoad: the protocol's five series carry
// the backend's figures with no model label; the adapter info's value
// changes only when its labels do; the KV ratio is active over all cells.
func TestPodSeriesRenderTheBackendsLoad(t *testing.T) {
	b := &loadOnly{l: llm.LoadInfo{Running: 2, Waiting: 3, KVCellsActive: 256, KVCells: 1024,
		Active: []string{"a", "tiny"}, Loading: []string{"big"}, MaxActive: 4}}
	c := newPodCollector(b)
	clock := time.Unix(1700000000, 0)
	c.now = func() time.Time { return clock }
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	want := `
# HELP llmux_num_requests_running Sequences running on this server (holding a KV slot).
# TYPE llmux_num_requests_running gauge
llmux_num_requests_running 2
# HELP llmux_num_requests_waiting Requests queued on this server: sequences waiting for admission plus requests waiting for their model to load.
# TYPE llmux_num_requests_waiting gauge
llmux_num_requests_waiting 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "llmux_num_requests_running", "llmux_num_requests_waiting"); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, f := range families {
		var sb strings.Builder
		if _, err := expfmt.MetricFamilyToText(&sb, f); err != nil {
			t.Fatal(err)
		}
		byName[f.GetName()] = sb.String()
	}
	for name, wantLine := range map[string]string{
		"llmux_kv_cache_usage_ratio": "llmux_kv_cache_usage_ratio 0.25",
		"llmux_lora_requests_info":   `llmux_lora_requests_info{max_lora="4",running_lora_adapters="a,tiny",waiting_lora_adapters="big"} 1.7e+09`,
		"llmux_cache_config_info":    `llmux_cache_config_info{block_size="16",num_gpu_blocks="64"} 1`,
	} {
		if !strings.Contains(byName[name], wantLine) {
			t.Errorf("%s:\n%s\nwant a line %s", name, byName[name], wantLine)
		}
	}

	// The same labels later keep their date; a change re-dates them.
	clock = clock.Add(time.Minute)
	if got := infoValue(t, reg); got != 1.7e9 {
		t.Fatalf("unchanged adapters re-dated to %v", got)
	}
	l := b.Load()
	l.Loading = nil
	b.set(l)
	if got := infoValue(t, reg); got != 1.7e9+60 {
		t.Fatalf("changed adapters dated %v, want %v", got, 1.7e9+60)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}

func infoValue(t *testing.T, reg prometheus.Gatherer) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "llmux_lora_requests_info" {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no llmux_lora_requests_info")
	return 0
}

// TestKVRatioStaysWithinZeroAndOne: no cells is 0, and a count above the
// cells (replicas reporting at different instants) is capped at 1.
func TestKVRatioStaysWithinZeroAndOne(t *testing.T) {
	for _, c := range []struct {
		l    llm.LoadInfo
		want float64
	}{
		{llm.LoadInfo{}, 0},
		{llm.LoadInfo{KVCellsActive: 10, KVCells: 40}, 0.25},
		{llm.LoadInfo{KVCellsActive: 50, KVCells: 40}, 1},
	} {
		if got := kvRatio(c.l); got != c.want {
			t.Errorf("kvRatio(%+v) = %v, want %v", c.l, got, c.want)
		}
	}
}

// TestReadyIsUnavailableWhileTheBackendIsUnready: /ready answers 503 with
// the backend's reason (a pinned model still loading) and 200 after.
func TestReadyIsUnavailableWhileTheBackendIsUnready(t *testing.T) {
	b := &loadOnly{l: llm.LoadInfo{Unready: "pinned model big is not loaded yet"}}
	hs := httptest.NewServer(New(b, Options{}).Handler())
	defer hs.Close()
	r, err := http.Get(hs.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("unready backend: /ready answered %d", r.StatusCode)
	}
	b.set(llm.LoadInfo{})
	r, err = http.Get(hs.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("ready backend: /ready answered %d", r.StatusCode)
	}
}

// TestResponsesSayWhereTheirTimeWent: a non-streamed response carries a
// Server-Timing header with its phases and reused tokens; a stream with
// include_usage ends with a timings object whose counts match its usage,
// and a Server-Timing trailer.
func TestResponsesSayWhereTheirTimeWent(t *testing.T) {
	ts := tinyServer(t, Options{})
	body := `{"model":"` + ts.model + `","prompt":"the cat saw a big red ball","max_tokens":6}`
	r, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	h := r.Header.Get("Server-Timing")
	for _, want := range []string{"queue;dur=", "prefill;dur=", "decode;dur=", "reused;desc="} {
		if !strings.Contains(h, want) {
			t.Errorf("Server-Timing %q lacks %s", h, want)
		}
	}

	body = `{"model":"` + ts.model + `","prompt":"the cat saw a big red ball","max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}`
	r, err = http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(r.Body) // trailers arrive after the body
	r.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if tr := r.Trailer.Get("Server-Timing"); !strings.Contains(tr, "decode;dur=") {
		t.Errorf("stream trailer Server-Timing = %q", tr)
	}
	var final struct {
		Usage   *openai.Usage   `json:"usage"`
		Timings *openai.Timings `json:"timings"`
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "data: "); ok && rest != "[DONE]" && strings.Contains(rest, `"usage"`) {
			if err := json.Unmarshal([]byte(rest), &final); err != nil {
				t.Fatal(err)
			}
		}
	}
	if final.Usage == nil || final.Timings == nil {
		t.Fatalf("no final chunk with usage and timings in:\n%s", data)
	}
	tm, u := final.Timings, final.Usage
	if tm.PredictedN != u.CompletionTokens || tm.PromptN+tm.CacheN != u.PromptTokens {
		t.Errorf("timings %+v do not match usage %+v", tm, u)
	}
	if tm.TTFTMs <= 0 || tm.PromptMs <= 0 || tm.TTFTMs < tm.QueueMs+tm.PromptMs-0.1 {
		t.Errorf("timings %+v: TTFT should cover queue and prefill", tm)
	}
}

// TestRequestLogCarriesTraceModelTokensAndPhases: the access log line of a
// generation is structured (JSON here) with the request id, a valid W3C
// traceparent, the model, its tokens and phase timings; an invalid
// traceparent is dropped.
func TestRequestLogCarriesTraceModelTokensAndPhases(t *testing.T) {
	var logs syncBuffer
	ts := tinyServer(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	send := func(traceparent string) {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/completions",
			strings.NewReader(`{"model":"`+ts.model+`","prompt":"the cat","max_tokens":4,"ignore_eos":true}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", traceparent)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	send(tp)
	send("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	// A request is logged once its handler has returned, which may be
	// just after the client has its answer.
	var lines []map[string]any
	for deadline := time.Now().Add(10 * time.Second); len(lines) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
				lines = append(lines, m)
			}
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d request lines in:\n%s", len(lines), logs.String())
	}
	first := lines[0]
	tokens, _ := first["tokens"].(map[string]any)
	ms, _ := first["ms"].(map[string]any)
	if first["traceparent"] != tp || first["model"] != ts.model || first["id"] == "" || tokens["completion"] != 4.0 || ms["decode"] == nil {
		t.Fatalf("request line: %v", first)
	}
	if _, ok := lines[1]["traceparent"]; ok {
		t.Fatalf("an all-zero trace id was logged: %v", lines[1])
	}
}
