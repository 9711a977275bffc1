package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/llmux/llmux/gpu"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/replica"
	"github.com/llmux/llmux/server"
)

// oneGPU is a node with one device, for the GPU series.
type oneGPU struct{}

func (oneGPU) Node() (gpu.Node, error) {
	return gpu.Node{Devices: []gpu.Device{{Index: 0, UUID: "GPU-0", Name: "test", MemTotal: 80 << 30, MemUsed: 1 << 30, MemFree: 79 << 30, Utilization: 50}}}, nil
}

// TestMetricsAfterAKnownWorkloadAreCountedDocumentedAndLintClean serves
// the tiny model through the catalog pool, as llmux serve --replicas 0
// does, with every collector serve registers; runs one completion and one
// streamed chat; then checks the scraped counters and histogram counts
// against the responses' usage, that every exported llmux series is in
// docs/metrics.md with its type, and client_golang's lint over all of
// them.
func TestMetricsAfterAKnownWorkloadAreCountedDocumentedAndLintClean(t *testing.T) {
	f := newServeFlags()
	if err := f.parse([]string{"--model", "tiny=" + modeltest.Preset(t, "tiny"), "--parallel", "2", "--ollama-models", filepath.Join(t.TempDir(), "none")}); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool, _, _, err := f.pool(logger, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pool.Run(ctx) }()
	defer func() { cancel(); <-done }()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g := gpu.NewCollector(oneGPU{})
	g.SetPlan(gpu.Plan{Assignments: []gpu.Assignment{{Replica: "replica-0", GPUs: []string{"GPU-0"}, Share: 1}}})
	reg.MustRegister(g)
	reg.MustRegister(deploymentCollector{status: func() []deploymentStatus {
		return []deploymentStatus{{Name: "llm", Kind: "llm", Replicas: []replica.ReplicaStatus{{Name: "replica-0", State: "ready", Ongoing: 1, Restarts: 2}}}}
	}})
	hs := httptest.NewServer(server.New(pool, server.Options{Registry: reg, Logger: logger}).Handler())
	defer hs.Close()
	cfg := goopenai.DefaultConfig("")
	cfg.BaseURL = hs.URL + "/v1"
	client := goopenai.NewClientWithConfig(cfg)

	comp, err := client.CreateCompletion(ctx, goopenai.CompletionRequest{Model: "tiny", Prompt: "the cat saw a big red ball", MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.CreateChatCompletionStream(ctx, goopenai.ChatCompletionRequest{Model: "tiny", MaxTokens: 8, Stream: true,
		StreamOptions: &goopenai.StreamOptions{IncludeUsage: true},
		Messages:      []goopenai.ChatCompletionMessage{{Role: "user", Content: "tell me about the dog"}}})
	if err != nil {
		t.Fatal(err)
	}
	var chatUsage *goopenai.Usage
	for {
		ch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ch.Usage != nil {
			chatUsage = ch.Usage
		}
	}
	st.Close()
	if chatUsage == nil {
		t.Fatal("the stream sent no usage")
	}

	// The server counts a request once its handler has returned, and the
	// scheduler publishes a step's counts after the step: either may come
	// just after the client has read the response's end.
	families := scrape(t, hs.URL+"/metrics")
	settled := func() bool {
		running := families["llmux_num_requests_running"].GetMetric()
		return len(families["llmux_http_requests_total"].GetMetric()) >= 2 && len(running) == 1 && running[0].GetGauge().GetValue() == 0
	}
	for deadline := time.Now().Add(10 * time.Second); !settled() && time.Now().Before(deadline); families = scrape(t, hs.URL+"/metrics") {
		time.Sleep(10 * time.Millisecond)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		for _, m := range families[name].GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s%v in the scrape", name, labels)
		return 0
	}
	tiny := map[string]string{"model": "tiny"}
	generated := comp.Usage.CompletionTokens + chatUsage.CompletionTokens
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"llmux_time_to_first_token_seconds", tiny, 2},
		{"llmux_e2e_request_latency_seconds", tiny, 2},
		{"llmux_queue_seconds", tiny, 2},
		{"llmux_prefill_seconds", tiny, 2},
		{"llmux_decode_seconds", tiny, 2},
		{"llmux_generation_tokens_total", tiny, float64(generated)},
		{"llmux_prompt_tokens_total", tiny, float64(comp.Usage.PromptTokens + chatUsage.PromptTokens)},
		{"llmux_http_requests_total", map[string]string{"route": "/v1/completions", "status": "200"}, 1},
		{"llmux_http_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "200"}, 1},
		{"llmux_model_loads_total", tiny, 1},
		{"llmux_model_loaded", tiny, 1},
		{"llmux_num_requests_running", nil, 0},
		{"llmux_num_requests_waiting", nil, 0},
		{"llmux_kv_cache_usage_ratio", nil, 0},
		{"llmux_deployment_replicas", map[string]string{"deployment": "llm", "state": "ready"}, 1},
	} {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// One gap per token after a choice's first, when each event carries a
	// token; fewer when the detokenizer holds text back.
	if itl := value("llmux_inter_token_latency_seconds", tiny); itl < 1 || itl > float64(generated-2) {
		t.Errorf("inter-token latency observations %v, want 1..%d", itl, generated-2)
	}
	info := families["llmux_lora_requests_info"].GetMetric()
	if len(info) != 1 || !hasLabels(info[0], map[string]string{"running_lora_adapters": "tiny", "waiting_lora_adapters": "", "max_lora": "1"}) {
		t.Errorf("llmux_lora_requests_info: %v", info)
	}

	// Every llmux series is documented with its type.
	documented := documentedMetrics(t)
	for name, fam := range families {
		if !strings.HasPrefix(name, "llmux_") {
			continue
		}
		typ, ok := documented[name]
		if !ok {
			t.Errorf("%s is exported but not in docs/metrics.md", name)
			continue
		}
		if want := strings.ToLower(fam.GetType().String()); typ != want {
			t.Errorf("docs/metrics.md calls %s a %s; it is a %s", name, typ, want)
		}
	}
	for name := range documented {
		if _, ok := families[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which this server does not export", name)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// documentedMetrics reads the metric tables of docs/metrics.md: name → type.
func documentedMetrics(t *testing.T) map[string]string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `(llmux_[a-z0-9_]+)` \\| ([a-z]+) \\|")
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		out[m[1]] = m[2]
	}
	if len(out) < 10 {
		t.Fatalf("found %d metrics in docs/metrics.md", len(out))
	}
	return out
}
