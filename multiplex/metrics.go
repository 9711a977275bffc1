package multiplex

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmux/llmux/scheduler"
)

// modelSeries are the per-model series read from each loaded model's
// scheduler at scrape time, labelled with the model's name.
var modelSeries = []struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(scheduler.Stats) float64
}{
	{seriesDesc("requests_running", "Sequences holding a KV slot."), prometheus.GaugeValue, func(s scheduler.Stats) float64 { return float64(s.Running) }},
	{seriesDesc("requests_waiting", "Sequences waiting for admission."), prometheus.GaugeValue, func(s scheduler.Stats) float64 { return float64(s.Waiting) }},
	{seriesDesc("kv_cells_used", "KV cache cells in use."), prometheus.GaugeValue, func(s scheduler.Stats) float64 { return float64(s.KV.CellsUsed) }},
	{seriesDesc("kv_cells", "KV cache cells."), prometheus.GaugeValue, func(s scheduler.Stats) float64 { return float64(s.KV.Cells) }},
	{seriesDesc("prefix_cache_hits_total", "Prefix cache lookups that reused tokens."), prometheus.CounterValue, func(s scheduler.Stats) float64 { return float64(s.KV.Hits) }},
	{seriesDesc("preemptions_total", "Sequences preempted for KV space."), prometheus.CounterValue, func(s scheduler.Stats) float64 { return float64(s.Preemptions) }},
	{seriesDesc("rejected_total", "Requests rejected by admission control."), prometheus.CounterValue, func(s scheduler.Stats) float64 { return float64(s.Rejected) }},
	{seriesDesc("engine_steps_total", "Engine steps (batches evaluated)."), prometheus.CounterValue, func(s scheduler.Stats) float64 { return float64(s.Steps) }},
	{seriesDesc("handoff_timeouts_total", "Steps that stopped waiting for a consumer to take its tokens (see --handoff)."), prometheus.CounterValue, func(s scheduler.Stats) float64 { return float64(s.HandoffTimeouts) }},
}

func seriesDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("llmux_"+name, help, []string{"model"}, nil)
}

var _ prometheus.Collector = (*Pool)(nil)

// Series of the pool's own work: loads and evictions of catalog models.
var (
	loadsDesc        = seriesDesc("model_loads_total", "Completed loads of a model.")
	loadFailuresDesc = seriesDesc("model_load_failures_total", "Loads of a model that failed.")
	loadSecondsDesc  = seriesDesc("model_load_seconds_total", "Time spent loading a model.")
	evictionsDesc    = seriesDesc("model_evictions_total", "Unloads of a model (swaps, keep-alive, shutdown).")
	inFlightDesc     = seriesDesc("model_requests_in_flight", "Requests holding a lease on a model (running, or queued in its scheduler).")
	residentDesc     = seriesDesc("model_loaded", "1 while a model is loaded.")
	swapsDesc        = prometheus.NewDesc("llmux_model_swaps_total", "Evictions made to fit another model.", nil, nil)
	coldStartsDesc   = prometheus.NewDesc("llmux_model_cold_starts_total", "Loads started for a model that was not resident.", nil, nil)
)

// Describe sends the descriptors of the per-model series.
func (p *Pool) Describe(ch chan<- *prometheus.Desc) {
	for _, s := range modelSeries {
		ch <- s.desc
	}
	for _, d := range []*prometheus.Desc{loadsDesc, loadFailuresDesc, loadSecondsDesc, evictionsDesc, inFlightDesc, residentDesc, swapsDesc, coldStartsDesc} {
		ch <- d
	}
}

// Collect reads every loaded model's scheduler statistics.
func (p *Pool) Collect(ch chan<- prometheus.Metric) {
	for name, r := range p.Runners() {
		st := r.sched.Stats()
		for _, s := range modelSeries {
			ch <- prometheus.MustNewConstMetric(s.desc, s.kind, s.value(st), name)
		}
	}
	if !p.running.Load() {
		return
	}
	st := p.Stats()
	ch <- prometheus.MustNewConstMetric(swapsDesc, prometheus.CounterValue, float64(st.Swaps))
	ch <- prometheus.MustNewConstMetric(coldStartsDesc, prometheus.CounterValue, float64(st.ColdStarts))
	for name, m := range st.Models {
		resident := 0.0
		if m.Resident {
			resident = 1
		}
		ch <- prometheus.MustNewConstMetric(loadsDesc, prometheus.CounterValue, float64(m.Loads), name)
		ch <- prometheus.MustNewConstMetric(loadFailuresDesc, prometheus.CounterValue, float64(m.LoadFailures), name)
		ch <- prometheus.MustNewConstMetric(loadSecondsDesc, prometheus.CounterValue, m.LoadSeconds, name)
		ch <- prometheus.MustNewConstMetric(evictionsDesc, prometheus.CounterValue, float64(m.Evictions), name)
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(m.InFlight), name)
		ch <- prometheus.MustNewConstMetric(residentDesc, prometheus.GaugeValue, resident, name)
	}
}
