package gpu

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Source reads the node; *Monitor is one.
type Source interface {
	Node() (Node, error)
}

var _ Source = (*Monitor)(nil)

// Collector exports each GPU's memory and utilization, read from its Source
// at every scrape, and the replicas the last plan put on it.
type Collector struct {
	src Source

	mu   sync.Mutex // guards plan
	plan Plan

	up, total, used, free, util, replica *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector reading src. Register it with a
// prometheus.Registerer.
func NewCollector(src Source) *Collector {
	gpu := []string{"gpu", "index", "name"}
	return &Collector{
		src: src,
		up: prometheus.NewDesc("llmux_gpu_nvml_up",
			"1 when the last NVML read of the node succeeded, 0 when it failed or NVML is not available.", nil, nil),
		total: prometheus.NewDesc("llmux_gpu_memory_total_bytes", "GPU memory in total, by GPU UUID.", gpu, nil),
		used:  prometheus.NewDesc("llmux_gpu_memory_used_bytes", "GPU memory in use by any process, by GPU UUID.", gpu, nil),
		free:  prometheus.NewDesc("llmux_gpu_memory_free_bytes", "GPU memory free, by GPU UUID.", gpu, nil),
		util: prometheus.NewDesc("llmux_gpu_utilization_ratio",
			"Part of NVML's last sample period in which a kernel ran on the GPU (absent when not reported).", gpu, nil),
		replica: prometheus.NewDesc("llmux_gpu_replica_share",
			"Part of the GPU each replica holds in the last placement plan.", []string{"gpu", "replica"}, nil),
	}
}

// SetPlan records the plan whose replicas are exported.
func (c *Collector) SetPlan(p Plan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.plan = p
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.total, c.used, c.free, c.util, c.replica} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A failed NVML read exports
// llmux_gpu_nvml_up 0 and the plan's replicas, no device series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	plan := c.plan
	c.mu.Unlock()
	for _, a := range plan.Assignments {
		for _, uuid := range a.GPUs {
			ch <- prometheus.MustNewConstMetric(c.replica, prometheus.GaugeValue, a.Share, uuid, a.Replica)
		}
	}
	node, err := c.src.Node()
	if err != nil || node.CPUOnly != "" {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, d := range node.Devices {
		l := []string{d.UUID, strconv.Itoa(d.Index), d.Name}
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(d.MemTotal), l...)
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(d.MemUsed), l...)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(d.MemFree), l...)
		if d.Utilization >= 0 {
			ch <- prometheus.MustNewConstMetric(c.util, prometheus.GaugeValue, float64(d.Utilization)/100, l...)
		}
	}
}
