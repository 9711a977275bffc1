package gpu

import (
	"fmt"
	"sync/atomic"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

const gib int64 = 1 << 30

// fakeGPU describes one simulated GPU of a mock node.
type fakeGPU struct {
	name        string
	total, free int64
	util        int // percent; -1: NVML answers ERROR_NOT_SUPPORTED
	major       int
	minor       int
	nvlink      []int // peer positions, one active link each
	nvswitch    int   // active links to an NVSwitch
	pcie        map[int]PCIeLevel
}

// h100 is an 80 GB H100 with free bytes free and nothing else said.
func h100(free int64) fakeGPU {
	return fakeGPU{name: "NVIDIA H100 80GB HBM3", total: 80 * gib, free: free, util: 0, major: 9}
}

func uuidOf(i int) string { return fmt.Sprintf("GPU-%08x-1111-2222-3333-%012d", 0xc0de0000+i, i) }

// busOf is the PCI bus id NVML reports: upper-case hex, 8-digit domain.
func busOf(i int) string { return fmt.Sprintf("00000000:%02X:00.0", 0x18+i*0x10) }

func pciInfo(bus string) nvml.PciInfo {
	var p nvml.PciInfo
	copy(p.BusId[:], bus)
	return p
}

// mockNode builds an NVML node out of mock.Device values, with every
// function discovery calls. fail, when set, is consulted before each
// device call and its non-SUCCESS answer returned instead.
type mockNode struct {
	*mock.Interface
	devices []*mock.Device
	fail    func(call string, gpu int) nvml.Return
	calls   atomic.Int64 // GetMemoryInfo calls, to fail "mid-run"
}

func newMockNode(gpus ...fakeGPU) *mockNode {
	n := &mockNode{}
	pos := map[nvml.Device]int{}
	check := func(call string, i int) nvml.Return {
		if n.fail != nil {
			return n.fail(call, i)
		}
		return nvml.SUCCESS
	}
	for i, g := range gpus {
		d := &mock.Device{}
		pos[d] = i
		var links []string // remote bus id per link
		for _, p := range g.nvlink {
			links = append(links, busOf(p))
		}
		for range g.nvswitch {
			links = append(links, "00000000:FF:00.0")
		}
		d.GetUUIDFunc = func() (string, nvml.Return) {
			if r := check("GetUUID", i); r != nvml.SUCCESS {
				return "", r
			}
			return uuidOf(i), nvml.SUCCESS
		}
		d.GetNameFunc = func() (string, nvml.Return) { return g.name, check("GetName", i) }
		d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			n.calls.Add(1)
			if r := check("GetMemoryInfo", i); r != nvml.SUCCESS {
				return nvml.Memory{}, r
			}
			return nvml.Memory{Total: uint64(g.total), Free: uint64(g.free), Used: uint64(g.total - g.free)}, nvml.SUCCESS
		}
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			if g.util < 0 {
				return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
			}
			return nvml.Utilization{Gpu: uint32(g.util)}, check("GetUtilizationRates", i)
		}
		d.GetCudaComputeCapabilityFunc = func() (int, int, nvml.Return) {
			return g.major, g.minor, check("GetCudaComputeCapability", i)
		}
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return pciInfo(busOf(i)), check("GetPciInfo", i) }
		d.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if len(links) == 0 {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			if link >= len(links) {
				return nvml.FEATURE_DISABLED, nvml.SUCCESS
			}
			return nvml.FEATURE_ENABLED, check("GetNvLinkState", i)
		}
		d.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
			return pciInfo(links[link]), check("GetNvLinkRemotePciInfo", i)
		}
		d.GetTopologyCommonAncestorFunc = func(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			level, ok := g.pcie[pos[other]]
			if !ok {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			return nvml.GpuTopologyLevel(level), check("GetTopologyCommonAncestor", i)
		}
		n.devices = append(n.devices, d)
	}
	n.Interface = &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "580.65.06", nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) {
			if r := check("DeviceGetCount", -1); r != nvml.SUCCESS {
				return 0, r
			}
			return len(n.devices), nvml.SUCCESS
		},
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if r := check("DeviceGetHandleByIndex", i); r != nvml.SUCCESS {
				return nil, r
			}
			return n.devices[i], nvml.SUCCESS
		},
	}
	return n
}

// node discovers the mock node; it fails the test on an error.
func (n *mockNode) node(t interface{ Fatal(...any) }) Node {
	node, err := Discover(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// symmetric fills both directions of each NVLink and PCIe path given in
// one direction.
func symmetric(gpus []fakeGPU) []fakeGPU {
	for i := range gpus {
		for _, p := range gpus[i].nvlink {
			if !containsInt(gpus[p].nvlink, i) {
				gpus[p].nvlink = append(gpus[p].nvlink, i)
			}
		}
		for p, l := range gpus[i].pcie {
			if gpus[p].pcie == nil {
				gpus[p].pcie = map[int]PCIeLevel{}
			}
			gpus[p].pcie[i] = l
		}
	}
	return gpus
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
