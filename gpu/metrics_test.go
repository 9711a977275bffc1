package gpu

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector(t *testing.T) {
	a := h100(60 * gib)
	a.util = 45
	b := fakeGPU{name: "NVIDIA L4", total: 24 * gib, free: 24 * gib, util: -1, major: 8, minor: 9}
	n := newMockNode(a, b)
	m := Open(n, nil)
	defer m.Close()
	node, err := m.Node()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Place(node, []Request{
		{Replica: "chat-0", Bytes: 10 * gib, Share: 0.5},
		{Replica: "chat-1", Bytes: 10 * gib, Share: 0.5},
		{Replica: "embed", Bytes: 2 * gib},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(m)
	c.SetPlan(plan)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	// Whole-GPU replicas are placed first, best fit: embed takes the L4,
	// and the two halves share the H100.
	want := `
# HELP llmux_gpu_memory_total_bytes GPU memory in total, by GPU UUID.
# TYPE llmux_gpu_memory_total_bytes gauge
llmux_gpu_memory_total_bytes{gpu="` + uuidOf(0) + `",index="0",name="NVIDIA H100 80GB HBM3"} 8.589934592e+10
llmux_gpu_memory_total_bytes{gpu="` + uuidOf(1) + `",index="1",name="NVIDIA L4"} 2.5769803776e+10
# HELP llmux_gpu_memory_used_bytes GPU memory in use by any process, by GPU UUID.
# TYPE llmux_gpu_memory_used_bytes gauge
llmux_gpu_memory_used_bytes{gpu="` + uuidOf(0) + `",index="0",name="NVIDIA H100 80GB HBM3"} 2.147483648e+10
llmux_gpu_memory_used_bytes{gpu="` + uuidOf(1) + `",index="1",name="NVIDIA L4"} 0
# HELP llmux_gpu_nvml_up 1 when the last NVML read of the node succeeded, 0 when it failed or NVML is not available.
# TYPE llmux_gpu_nvml_up gauge
llmux_gpu_nvml_up 1
# HELP llmux_gpu_replica_share Part of the GPU each replica holds in the last placement plan.
# TYPE llmux_gpu_replica_share gauge
llmux_gpu_replica_share{gpu="` + uuidOf(0) + `",replica="chat-0"} 0.5
llmux_gpu_replica_share{gpu="` + uuidOf(0) + `",replica="chat-1"} 0.5
llmux_gpu_replica_share{gpu="` + uuidOf(1) + `",replica="embed"} 1
# HELP llmux_gpu_utilization_ratio Part of NVML's last sample period in which a kernel ran on the GPU (absent when not reported).
# TYPE llmux_gpu_utilization_ratio gauge
llmux_gpu_utilization_ratio{gpu="` + uuidOf(0) + `",index="0",name="NVIDIA H100 80GB HBM3"} 0.45
`
	names := []string{"llmux_gpu_memory_total_bytes", "llmux_gpu_memory_used_bytes", "llmux_gpu_nvml_up", "llmux_gpu_replica_share", "llmux_gpu_utilization_ratio"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// NVML fails mid-run: the scrape says so and keeps the plan's series.
	n.fail = func(call string, _ int) nvml.Return {
		if call == "GetMemoryInfo" {
			return nvml.ERROR_GPU_IS_LOST
		}
		return nvml.SUCCESS
	}
	up := `
# HELP llmux_gpu_nvml_up 1 when the last NVML read of the node succeeded, 0 when it failed or NVML is not available.
# TYPE llmux_gpu_nvml_up gauge
llmux_gpu_nvml_up 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(up), "llmux_gpu_nvml_up"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(c, "llmux_gpu_memory_used_bytes"); got != 0 {
		t.Errorf("%d memory series after an NVML failure, want 0", got)
	}
	if got := testutil.CollectAndCount(c, "llmux_gpu_replica_share"); got != 3 {
		t.Errorf("%d replica series after an NVML failure, want 3", got)
	}
}

func TestCollectorWithoutNVML(t *testing.T) {
	m := Open(&mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}, nil)
	c := NewCollector(m)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if got := testutil.CollectAndCount(c); got != 1 {
		t.Errorf("%d series on a CPU machine, want 1 (llmux_gpu_nvml_up 0)", got)
	}
}
