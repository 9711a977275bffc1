package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmux/llmux/scheduler"
)

// metrics are llmux's Prometheus series, all prefixed llmux_ and labelled
// with the model.
type metrics struct {
	requests   *prometheus.CounterVec
	ttft       prometheus.Observer
	queued     prometheus.Observer
	prefill    prometheus.Observer
	decode     prometheus.Observer
	prompt     prometheus.Counter
	completion prometheus.Counter
	cached     prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, sched *scheduler.Scheduler, model string) *metrics {
	labels := prometheus.Labels{"model": model}
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "llmux", Name: name, Help: help, ConstLabels: labels}
	}
	hist := func(name, help string) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "llmux", Name: name, Help: help, ConstLabels: labels,
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}})
		reg.MustRegister(h)
		return h
	}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts(f(name, help)))
		reg.MustRegister(c)
		return c
	}
	m := &metrics{
		requests:   prometheus.NewCounterVec(prometheus.CounterOpts(f("http_requests_total", "HTTP requests by route and status.")), []string{"route", "status"}),
		ttft:       hist("time_to_first_token_seconds", "Time from arrival to the first token."),
		queued:     hist("queue_seconds", "Time from arrival to first scheduled."),
		prefill:    hist("prefill_seconds", "Time from first scheduled to the first token."),
		decode:     hist("decode_seconds", "Time from the first token to the end."),
		prompt:     counter("prompt_tokens_total", "Prompt tokens of finished requests."),
		completion: counter("generation_tokens_total", "Generated tokens of finished requests."),
		cached:     counter("prompt_tokens_cached_total", "Prompt tokens reused from the prefix cache."),
	}
	reg.MustRegister(m.requests)
	gauge := func(name, help string, v func(scheduler.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts(f(name, help)), func() float64 { return v(sched.Stats()) }))
	}
	gauge("requests_running", "Sequences holding a KV slot.", func(s scheduler.Stats) float64 { return float64(s.Running) })
	gauge("requests_waiting", "Sequences waiting for admission.", func(s scheduler.Stats) float64 { return float64(s.Waiting) })
	gauge("kv_cells_used", "KV cache cells in use.", func(s scheduler.Stats) float64 { return float64(s.KV.CellsUsed) })
	gauge("kv_cells", "KV cache cells.", func(s scheduler.Stats) float64 { return float64(s.KV.Cells) })
	total := func(name, help string, v func(scheduler.Stats) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts(f(name, help)), func() float64 { return v(sched.Stats()) }))
	}
	total("prefix_cache_hits_total", "Prefix cache lookups that reused tokens.", func(s scheduler.Stats) float64 { return float64(s.KV.Hits) })
	total("preemptions_total", "Sequences preempted for KV space.", func(s scheduler.Stats) float64 { return float64(s.Preemptions) })
	total("rejected_total", "Requests rejected by admission control.", func(s scheduler.Stats) float64 { return float64(s.Rejected) })
	total("engine_steps_total", "Engine steps (batches evaluated).", func(s scheduler.Stats) float64 { return float64(s.Steps) })
	total("handoff_timeouts_total", "Steps that stopped waiting for a consumer to take its tokens (see --handoff).", func(s scheduler.Stats) float64 { return float64(s.HandoffTimeouts) })
	return m
}

func (m *metrics) observe(g generation) {
	m.prompt.Add(float64(g.usage.PromptTokens))
	m.completion.Add(float64(g.usage.CompletionTokens))
	if d := g.usage.PromptTokensDetails; d != nil {
		m.cached.Add(float64(d.CachedTokens))
	}
	if g.timings.TTFT > 0 {
		m.ttft.Observe(g.timings.TTFT.Seconds())
		m.queued.Observe(g.timings.Queued.Seconds())
		m.prefill.Observe(g.timings.Prefill.Seconds())
		m.decode.Observe(g.timings.Decode.Seconds())
	}
}
