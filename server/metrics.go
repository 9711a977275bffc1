package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the HTTP side's Prometheus series, all prefixed llmux_;
// request series are labelled with the model the request named. The
// models' own series (running and waiting sequences, KV cache) come from
// the backend's collector.
type metrics struct {
	requests   *prometheus.CounterVec
	ttft       *prometheus.HistogramVec
	itl        *prometheus.HistogramVec
	e2e        *prometheus.HistogramVec
	queued     *prometheus.HistogramVec
	load       *prometheus.HistogramVec
	prefill    *prometheus.HistogramVec
	decode     *prometheus.HistogramVec
	prompt     *prometheus.CounterVec
	completion *prometheus.CounterVec
	cached     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	// Phases of a request take from milliseconds (a warm prefill) to a
	// minute (a cold load of a large model); whole requests up to many
	// minutes; gaps between tokens from under a millisecond to a second.
	phases := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	requests := []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200}
	gaps := []float64{.0005, .001, .0025, .005, .01, .015, .02, .03, .04, .05, .075, .1, .25, .5, 1}
	histWith := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "llmux", Name: name, Help: help, Buckets: buckets}, []string{"model"})
		reg.MustRegister(h)
		return h
	}
	hist := func(name, help string) *prometheus.HistogramVec { return histWith(name, help, phases) }
	counter := func(name, help string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "llmux", Name: name, Help: help}, []string{"model"})
		reg.MustRegister(c)
		return c
	}
	m := &metrics{
		requests:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "llmux", Name: "http_requests_total", Help: "HTTP requests by route and status."}, []string{"route", "status"}),
		ttft:       hist("time_to_first_token_seconds", "Time from arrival to the first token."),
		itl:        histWith("inter_token_latency_seconds", "Time between consecutive tokens of one choice, as the HTTP side receives them.", gaps),
		e2e:        histWith("e2e_request_latency_seconds", "Time from arrival to the last token, of requests that produced one.", requests),
		queued:     hist("queue_seconds", "Time from arrival to first scheduled."),
		load:       hist("load_wait_seconds", "Time a request waited for its model or adapter to load."),
		prefill:    hist("prefill_seconds", "Time from first scheduled to the first token."),
		decode:     hist("decode_seconds", "Time from the first token to the end."),
		prompt:     counter("prompt_tokens_total", "Prompt tokens of finished requests."),
		completion: counter("generation_tokens_total", "Generated tokens of finished requests."),
		cached:     counter("prompt_tokens_cached_total", "Prompt tokens reused from the prefix cache."),
	}
	reg.MustRegister(m.requests)
	return m
}

func (m *metrics) observe(model string, g generation) {
	m.prompt.WithLabelValues(model).Add(float64(g.usage.PromptTokens))
	m.completion.WithLabelValues(model).Add(float64(g.usage.CompletionTokens))
	if d := g.usage.PromptTokensDetails; d != nil {
		m.cached.WithLabelValues(model).Add(float64(d.CachedTokens))
	}
	if t := g.timings; t.TTFT > 0 {
		m.ttft.WithLabelValues(model).Observe(t.TTFT.Seconds())
		m.queued.WithLabelValues(model).Observe(t.Queued.Seconds())
		m.load.WithLabelValues(model).Observe(t.Load.Seconds())
		m.prefill.WithLabelValues(model).Observe(t.Prefill.Seconds())
		m.decode.WithLabelValues(model).Observe(t.Decode.Seconds())
		m.e2e.WithLabelValues(model).Observe((t.TTFT + t.Decode).Seconds())
	}
}
