package server

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmux/llmux/llm"
)

// The model-server protocol of the Gateway API Inference Extension: series
// for the whole server, without a model label, which its endpoint picker
// reads to choose a pod (one series per figure). The per-model series stay
// beside them. Names follow vLLM's, prefixed llmux_, so that operators who
// know one know the other; an EndpointPickerConfig names them in its
// engineConfigs entry for llmux (deploy/kubernetes).
var (
	podWaitingDesc = prometheus.NewDesc("llmux_num_requests_waiting",
		"Requests queued on this server: sequences waiting for admission plus requests waiting for their model to load.", nil, nil)
	podRunningDesc = prometheus.NewDesc("llmux_num_requests_running",
		"Sequences running on this server (holding a KV slot).", nil, nil)
	podKVDesc = prometheus.NewDesc("llmux_kv_cache_usage_ratio",
		"KV cache cells held by running sequences over all cells of the loaded models, 0 to 1 (cells kept only for prefix reuse count as free).", nil, nil)
	podLoRADesc = prometheus.NewDesc("llmux_lora_requests_info",
		"Models and adapters that serve without a load (running_lora_adapters: resident base models and their loaded adapters) and that requests wait to have loaded (waiting_lora_adapters); max_lora is how many can be active at once. The value is the Unix time of the last change.",
		[]string{"running_lora_adapters", "waiting_lora_adapters", "max_lora"}, nil)
	podCacheDesc = prometheus.NewDesc("llmux_cache_config_info",
		"KV cache geometry for prefix-aware routing: block_size is the prefix granularity the picker should hash at, num_gpu_blocks the cache's cells over block_size.",
		[]string{"block_size", "num_gpu_blocks"}, nil)
)

// kvBlockTokens is the block size llmux reports. Its KV cache matches
// prefixes at token granularity, so any block size describes it; 16 is
// vLLM's default, which keeps the picker's prefix index small.
const kvBlockTokens = 16

// podCollector reads the backend's load at each scrape and renders the
// protocol's series. It remembers the adapter labels to date their last
// change.
type podCollector struct {
	backend llm.Backend
	now     func() time.Time

	mu      sync.Mutex // guards labels and changed
	labels  [3]string
	changed time.Time
}

func newPodCollector(b llm.Backend) *podCollector {
	return &podCollector{backend: b, now: time.Now}
}

func (p *podCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{podWaitingDesc, podRunningDesc, podKVDesc, podLoRADesc, podCacheDesc} {
		ch <- d
	}
}

func (p *podCollector) Collect(ch chan<- prometheus.Metric) {
	l := p.backend.Load()
	ch <- prometheus.MustNewConstMetric(podWaitingDesc, prometheus.GaugeValue, float64(l.Waiting))
	ch <- prometheus.MustNewConstMetric(podRunningDesc, prometheus.GaugeValue, float64(l.Running))
	ch <- prometheus.MustNewConstMetric(podKVDesc, prometheus.GaugeValue, kvRatio(l))
	labels := [3]string{strings.Join(l.Active, ","), strings.Join(l.Loading, ","), strconv.Itoa(l.MaxActive)}
	p.mu.Lock()
	if labels != p.labels || p.changed.IsZero() {
		p.labels, p.changed = labels, p.now()
	}
	changed := p.changed
	p.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(podLoRADesc, prometheus.GaugeValue, float64(changed.UnixNano())/1e9, labels[:]...)
	ch <- prometheus.MustNewConstMetric(podCacheDesc, prometheus.GaugeValue, 1,
		strconv.Itoa(kvBlockTokens), strconv.Itoa(l.KVCells/kvBlockTokens))
}

// kvRatio is the share of KV cells held by running sequences.
func kvRatio(l llm.LoadInfo) float64 {
	if l.KVCells <= 0 {
		return 0
	}
	return min(1, float64(l.KVCellsActive)/float64(l.KVCells))
}
