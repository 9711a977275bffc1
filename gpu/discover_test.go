package gpu

import (
	"bytes"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

func TestNoNVMLIsCPUFallback(t *testing.T) {
	var logs bytes.Buffer
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	node, err := Discover(lib, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Discover: %v, want no error", err)
	}
	if len(node.Devices) != 0 || !strings.Contains(node.CPUOnly, "ERROR_LIBRARY_NOT_FOUND") {
		t.Errorf("node = %+v, want no devices and CPUOnly naming ERROR_LIBRARY_NOT_FOUND", node)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "no NVML: serving on CPU") {
		t.Errorf("log = %q, want one line 'no NVML: serving on CPU'", logs.String())
	}
	if n := len(lib.ShutdownCalls()); n != 0 {
		t.Errorf("Shutdown called %d times after a failed Init, want 0", n)
	}
}

// TestRealLibrary runs go-nvml's real loader: on this machine (no driver)
// it must fall back to the CPU without an error; on a GPU machine it must
// find devices.
func TestRealLibrary(t *testing.T) {
	node, err := Discover(nvml.New(), nil)
	if err != nil {
		t.Fatalf("Discover(nvml.New()): %v", err)
	}
	if len(node.Devices) == 0 && node.CPUOnly == "" {
		t.Errorf("node = %+v: no devices and no reason", node)
	}
	t.Logf("devices %d, cpu-only %q", len(node.Devices), node.CPUOnly)
	for _, d := range node.Devices {
		t.Logf("%d %s %s free %s of %s cc %d.%d util %d%% nvlink %v pcie %v", d.Index, d.UUID, d.Name,
			GiB(d.MemFree), GiB(d.MemTotal), d.ComputeMajor, d.ComputeMinor, d.Utilization, d.NVLink, d.PCIe)
	}
}

func TestDiscoverReadsDevices(t *testing.T) {
	a := h100(70 * gib)
	a.util, a.minor = 37, 0
	b := fakeGPU{name: "NVIDIA L4", total: 24 * gib, free: 20 * gib, util: -1, major: 8, minor: 9}
	gpus := symmetric([]fakeGPU{a, h100(80 * gib), b})
	gpus[0].nvlink = []int{1, 1} // two links to GPU 1
	gpus[1].nvlink = []int{0, 0}
	gpus[0].pcie = map[int]PCIeLevel{1: PCIeSwitch, 2: PCIeSystem}
	gpus = symmetric(gpus)
	n := newMockNode(gpus...)
	node := n.node(t)
	if node.Driver != "580.65.06" || node.CPUOnly != "" || len(node.Devices) != 3 {
		t.Fatalf("node = %+v", node)
	}
	want := []Device{
		{Index: 0, UUID: uuidOf(0), Name: "NVIDIA H100 80GB HBM3", BusID: "00000000:18:00.0", MemTotal: 80 * gib, MemFree: 70 * gib, MemUsed: 10 * gib,
			Utilization: 37, ComputeMajor: 9, NVLink: map[string]int{uuidOf(1): 2},
			PCIe: map[string]PCIeLevel{uuidOf(1): PCIeSwitch, uuidOf(2): PCIeSystem}},
		{Index: 1, UUID: uuidOf(1), Name: "NVIDIA H100 80GB HBM3", BusID: "00000000:28:00.0", MemTotal: 80 * gib, MemFree: 80 * gib,
			ComputeMajor: 9, NVLink: map[string]int{uuidOf(0): 2}, PCIe: map[string]PCIeLevel{uuidOf(0): PCIeSwitch}},
		{Index: 2, UUID: uuidOf(2), Name: "NVIDIA L4", BusID: "00000000:38:00.0", MemTotal: 24 * gib, MemFree: 20 * gib, MemUsed: 4 * gib,
			Utilization: -1, ComputeMajor: 8, ComputeMinor: 9, PCIe: map[string]PCIeLevel{uuidOf(0): PCIeSystem}},
	}
	for i := range want {
		if got := node.Devices[i]; !reflect.DeepEqual(got, want[i]) {
			t.Errorf("device %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
	if got, want := node.Islands(), [][]int{{0, 1}, {2}}; !reflect.DeepEqual(got, want) {
		t.Errorf("islands = %v, want %v", got, want)
	}
	if d, ok := node.Device(uuidOf(2)); !ok || d.Name != "NVIDIA L4" {
		t.Errorf("Device(%s) = %+v, %v", uuidOf(2), d, ok)
	}
	if n := len(n.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want 1", n)
	}
}

func TestNVSwitchIsOneIsland(t *testing.T) {
	var gpus []fakeGPU
	for range 8 {
		g := h100(80 * gib)
		g.nvswitch = 18
		gpus = append(gpus, g)
	}
	node := newMockNode(gpus...).node(t)
	if got := node.Islands(); len(got) != 1 || len(got[0]) != 8 {
		t.Errorf("islands = %v, want one island of 8", got)
	}
	for _, d := range node.Devices {
		if !d.NVSwitch || len(d.NVLink) != 0 {
			t.Errorf("GPU %d: NVSwitch %v NVLink %v, want an NVSwitch and no direct peers", d.Index, d.NVSwitch, d.NVLink)
		}
	}
}

// TestNVMLFailsMidRun: NVML works at start, then a call fails (a GPU falls
// off the bus, the driver goes away): the next read reports an error that
// names the call and the GPU, and nothing panics.
func TestNVMLFailsMidRun(t *testing.T) {
	for _, tc := range []struct {
		call string
		gpu  int
		ret  nvml.Return
		want string
	}{
		{"DeviceGetCount", -1, nvml.ERROR_UNKNOWN, "DeviceGetCount: ERROR_UNKNOWN"},
		{"DeviceGetHandleByIndex", 1, nvml.ERROR_GPU_IS_LOST, "DeviceGetHandleByIndex on GPU 1: ERROR_GPU_IS_LOST"},
		{"GetUUID", 0, nvml.ERROR_UNINITIALIZED, "GetUUID on GPU 0: ERROR_UNINITIALIZED"},
		{"GetMemoryInfo", 1, nvml.ERROR_GPU_IS_LOST, "GetMemoryInfo on GPU 1: ERROR_GPU_IS_LOST"},
		{"GetUtilizationRates", 0, nvml.ERROR_DRIVER_NOT_LOADED, "GetUtilizationRates on GPU 0: ERROR_DRIVER_NOT_LOADED"},
		{"GetNvLinkState", 1, nvml.ERROR_UNKNOWN, "GetNvLinkState on GPU 1: ERROR_UNKNOWN"},
		{"GetTopologyCommonAncestor", 0, nvml.ERROR_TIMEOUT, "GetTopologyCommonAncestor on GPU 0: ERROR_TIMEOUT"},
	} {
		t.Run(tc.call, func(t *testing.T) {
			gpus := symmetric([]fakeGPU{
				{name: "a", total: 80 * gib, free: 80 * gib, nvlink: []int{1}, pcie: map[int]PCIeLevel{1: PCIeSwitch}},
				{name: "b", total: 80 * gib, free: 80 * gib},
			})
			n := newMockNode(gpus...)
			m := Open(n, nil)
			defer m.Close()
			if node, err := m.Node(); err != nil || len(node.Devices) != 2 {
				t.Fatalf("first read: %+v, %v", node, err)
			}
			n.fail = func(call string, gpu int) nvml.Return {
				if call == tc.call && gpu == tc.gpu {
					return tc.ret
				}
				return nvml.SUCCESS
			}
			node, err := m.Node()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("second read: err %v, want one containing %q", err, tc.want)
			}
			if len(node.Devices) != 0 {
				t.Errorf("second read returned devices %+v with its error", node.Devices)
			}
			// The failure is reported, not cached: NVML recovers, so does Node.
			n.fail = nil
			if node, err := m.Node(); err != nil || len(node.Devices) != 2 {
				t.Errorf("third read: %d devices, %v", len(node.Devices), err)
			}
		})
	}
}

func TestMonitorClose(t *testing.T) {
	n := newMockNode(h100(80 * gib))
	m := Open(n, nil)
	if !m.Available() {
		t.Fatal("not available after a successful Init")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if c := len(n.ShutdownCalls()); c != 1 {
		t.Errorf("Shutdown called %d times, want 1", c)
	}
	node, err := m.Node()
	if err != nil || len(node.Devices) != 0 || node.CPUOnly == "" {
		t.Errorf("after Close: %+v, %v; want an empty CPU-only node", node, err)
	}
}
