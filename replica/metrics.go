package replica

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/llmux/llmux/llm"
)

// A replica's own series (its models' schedulers, loads, KV cache) live
// in the replica process. It serves them with the Metrics method, and the
// serving process's Set relays them on its /metrics with a replica label.

// metrics gathers the replica's series.
func (s *service) metrics() reply[[]*dto.MetricFamily] {
	if s.gatherer == nil {
		return reply[[]*dto.MetricFamily]{}
	}
	mfs, err := s.gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return reply[[]*dto.MetricFamily]{Error: llm.Errorf(llm.CodeInternal, "", "gather metrics: %v", err)}
	}
	return reply[[]*dto.MetricFamily]{Value: mfs}
}

var _ prometheus.Collector = (*Set)(nil)

// Describe sends nothing: the replicas' series are known only when they
// are gathered (an unchecked collector).
func (s *Set) Describe(chan<- *prometheus.Desc) {}

// Collect gathers every ready replica's series and relays them with a
// replica label.
func (s *Set) Collect(ch chan<- prometheus.Metric) {
	for _, m := range s.snapshot() {
		m.mu.Lock()
		p := m.proc
		m.mu.Unlock()
		if p == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		mfs, e := call[empty, []*dto.MetricFamily](ctx, p.client, "Metrics", &empty{})
		cancel()
		if e != nil {
			s.log.Warn("could not gather a replica's metrics", "replica", m.name, "err", e.Message)
			continue
		}
		for _, mf := range mfs {
			for _, metric := range mf.GetMetric() {
				ch <- relay(mf, metric, m.name)
			}
		}
	}
}

// relayed is one of a replica's metrics with the replica label added.
type relayed struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func relay(mf *dto.MetricFamily, m *dto.Metric, replicaName string) prometheus.Metric {
	out := proto.Clone(m).(*dto.Metric)
	name, value := "replica", replicaName
	out.Label = append(out.Label, &dto.LabelPair{Name: &name, Value: &value})
	slices.SortFunc(out.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	labels := make([]string, len(out.Label))
	for i, l := range out.Label {
		labels[i] = l.GetName()
	}
	return &relayed{desc: prometheus.NewDesc(mf.GetName(), mf.GetHelp(), labels, nil), m: out}
}

func (r *relayed) Desc() *prometheus.Desc { return r.desc }

func (r *relayed) Write(out *dto.Metric) error {
	proto.Reset(out)
	proto.Merge(out, r.m)
	return nil
}
