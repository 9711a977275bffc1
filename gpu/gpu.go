// Package gpu finds a node's NVIDIA GPUs through NVML and decides which GPUs
// each replica gets.
//
// Discovery (Discover, Monitor) turns NVML's answers into plain data: a Node
// of Devices with their memory, utilization, compute capability and the
// NVLink and PCIe paths between them. A machine without NVML is a node with
// no devices, not an error: llmux serves on the CPU.
//
// Placement (Place) is a pure function from a Node and the replicas' requests
// to a Plan: for each replica the GPUs (by UUID, for CUDA_VISIBLE_DEVICES,
// since NVML's index order is not CUDA's), the tensor split when a model is
// spanned over several GPUs, and how many layers to offload. The process
// that owns the replicas applies the plan; Collector exports per-GPU metrics
// with the replicas of the last plan.
//
// The package has no cgo of its own; go-nvml loads libnvidia-ml.so at run
// time with dlopen, and its mock package stands in for it in tests.
package gpu

import (
	"fmt"
	"slices"
)

// Device is one GPU as NVML reported it at discovery time.
type Device struct {
	// Index is NVML's index. It orders devices by PCI bus id, which is not
	// CUDA's default order (fastest first): give a process its GPUs by UUID.
	Index int    `json:"index"`
	UUID  string `json:"uuid"` // "GPU-…", what CUDA_VISIBLE_DEVICES accepts
	Name  string `json:"name"`
	BusID string `json:"bus_id,omitempty"` // PCI bus id, lower case ("00000000:07:00.0")

	MemTotal int64 `json:"mem_total"`
	MemFree  int64 `json:"mem_free"`
	MemUsed  int64 `json:"mem_used"`
	// Utilization is the percent of NVML's last sample period in which a
	// kernel ran; -1 when NVML does not report it.
	Utilization int `json:"utilization"`

	ComputeMajor int `json:"compute_major"` // 0 when not reported
	ComputeMinor int `json:"compute_minor"`

	// NVLink counts the active NVLinks from this GPU to each peer GPU, by
	// the peer's UUID. NVSwitch says this GPU's links go to an NVSwitch,
	// which joins every such GPU of the node into one NVLink island.
	NVLink   map[string]int `json:"nvlink,omitempty"`
	NVSwitch bool           `json:"nvswitch,omitempty"`
	// PCIe is the closest common PCIe ancestor with each other GPU, by UUID.
	PCIe map[string]PCIeLevel `json:"pcie,omitempty"`
}

// Node is the GPUs of one machine.
type Node struct {
	Devices []Device `json:"devices"`
	Driver  string   `json:"driver,omitempty"` // NVIDIA driver version
	// CPUOnly says why Devices is empty when NVML could not be used
	// ("NVML: ERROR_LIBRARY_NOT_FOUND"); "" otherwise.
	CPUOnly string `json:"cpu_only,omitempty"`
}

// Device returns the device with this UUID.
func (n Node) Device(uuid string) (Device, bool) {
	i := slices.IndexFunc(n.Devices, func(d Device) bool { return d.UUID == uuid })
	if i < 0 {
		return Device{}, false
	}
	return n.Devices[i], true
}

// PCIeLevel is how close two GPUs are on the PCIe tree: the closest common
// ancestor NVML reports (nvmlGpuTopologyLevel_t). Lower is closer.
type PCIeLevel int

// The levels, closest first, with NVML's values.
const (
	PCIeBoard      PCIeLevel = 0  // on one board (multi-GPU cards)
	PCIeSwitch     PCIeLevel = 10 // behind one PCIe switch
	PCIeSwitches   PCIeLevel = 20 // through several PCIe switches, not the host bridge
	PCIeHostBridge PCIeLevel = 30 // through one host bridge
	PCIeNUMA       PCIeLevel = 40 // through host bridges of one NUMA node
	PCIeSystem     PCIeLevel = 50 // across NUMA nodes (SMP interconnect)
	PCIeUnknown    PCIeLevel = 99 // not reported
)

func (l PCIeLevel) String() string {
	switch l {
	case PCIeBoard:
		return "board"
	case PCIeSwitch:
		return "pcie-switch"
	case PCIeSwitches:
		return "pcie-switches"
	case PCIeHostBridge:
		return "host-bridge"
	case PCIeNUMA:
		return "numa-node"
	case PCIeSystem:
		return "system"
	case PCIeUnknown:
		return "unknown"
	}
	return fmt.Sprintf("pcie-level-%d", int(l))
}

// Islands groups the node's device positions (indexes into n.Devices) into
// NVLink islands: GPUs joined by NVLink, directly or through other GPUs, and
// every GPU attached to an NVSwitch. A GPU without NVLink is an island of
// its own. Islands are ordered by their first device.
func (n Node) Islands() [][]int {
	island := n.islandOf()
	var out [][]int
	seen := map[int]int{}
	for i := range n.Devices {
		id := island[i]
		k, ok := seen[id]
		if !ok {
			k = len(out)
			seen[id] = k
			out = append(out, nil)
		}
		out[k] = append(out[k], i)
	}
	return out
}

// islandOf labels each device position with its island (union-find).
func (n Node) islandOf() []int {
	parent := make([]int, len(n.Devices))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	union := func(a, b int) {
		ra, rb := find(a), find(b)
		if ra != rb {
			parent[max(ra, rb)] = min(ra, rb)
		}
	}
	pos := map[string]int{}
	for i, d := range n.Devices {
		pos[d.UUID] = i
	}
	fabric := -1
	for i, d := range n.Devices {
		for peer, links := range d.NVLink {
			if j, ok := pos[peer]; ok && links > 0 {
				union(i, j)
			}
		}
		if d.NVSwitch {
			if fabric < 0 {
				fabric = i
			}
			union(fabric, i)
		}
	}
	out := make([]int, len(n.Devices))
	for i := range out {
		out[i] = find(i)
	}
	return out
}

// GiB formats bytes as GiB with two decimals.
func GiB(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }
