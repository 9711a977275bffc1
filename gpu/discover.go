package gpu

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the part of go-nvml's library interface discovery uses. Both
// nvml.New() and *mock.Interface (github.com/NVIDIA/go-nvml/pkg/nvml/mock)
// satisfy it. On each device handle discovery calls GetUUID, GetName,
// GetMemoryInfo, GetUtilizationRates, GetCudaComputeCapability, GetPciInfo,
// GetNvLinkState, GetNvLinkRemotePciInfo and GetTopologyCommonAncestor; a
// mock.Device must set those functions.
type NVML interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
}

var _ NVML = nvml.New()

// Monitor holds NVML open and reads the node on demand. Its methods are safe
// for concurrent use.
type Monitor struct {
	lib     NVML
	log     *slog.Logger
	mu      sync.Mutex // guards open and cpuOnly (calls into NVML are thread-safe)
	open    bool
	cpuOnly string
}

// Open initializes NVML. When that fails (no driver, no library: this is a
// CPU machine) it logs one line and returns a Monitor whose Node is empty:
// serving on the CPU is not an error. A nil logger discards the line.
func Open(lib NVML, logger *slog.Logger) *Monitor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{lib: lib, log: logger}
	if lib == nil {
		m.cpuOnly = "NVML: not available"
	} else if ret := lib.Init(); ret != nvml.SUCCESS {
		m.cpuOnly = "NVML: " + ret.Error()
	} else {
		m.open = true
	}
	if !m.open {
		logger.Info("no NVML: serving on CPU", "reason", m.cpuOnly)
	}
	return m
}

// Available reports whether NVML was initialized.
func (m *Monitor) Available() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.open
}

// Close shuts NVML down. Node returns an empty node afterwards.
func (m *Monitor) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.open {
		return nil
	}
	m.open = false
	m.cpuOnly = "NVML: closed"
	if ret := m.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: NVML shutdown: %s", ret.Error())
	}
	return nil
}

// Node reads every device now. Without NVML it returns an empty node with
// CPUOnly set and no error; a failure of NVML after it was initialized (a
// GPU lost, the driver unloaded) is an error naming the call and device.
func (m *Monitor) Node() (Node, error) {
	m.mu.Lock()
	open, cpuOnly := m.open, m.cpuOnly
	m.mu.Unlock()
	if !open {
		return Node{CPUOnly: cpuOnly}, nil
	}
	return readNode(m.lib)
}

// Discover opens NVML, reads the node and closes NVML: the one-shot form of
// Open, Node and Close.
func Discover(lib NVML, logger *slog.Logger) (Node, error) {
	m := Open(lib, logger)
	defer m.Close()
	return m.Node()
}

// optional reports whether ret only says a query is not available on this
// device (no NVLink, no permission, an old driver): the field stays unknown.
func optional(ret nvml.Return) bool {
	switch ret {
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_NO_PERMISSION, nvml.ERROR_NOT_FOUND,
		nvml.ERROR_INVALID_ARGUMENT, nvml.ERROR_FUNCTION_NOT_FOUND:
		return true
	}
	return false
}

func nvmlErr(call string, index int, ret nvml.Return) error {
	if index < 0 {
		return fmt.Errorf("gpu: NVML %s: %s", call, ret.Error())
	}
	return fmt.Errorf("gpu: NVML %s on GPU %d: %s", call, index, ret.Error())
}

func readNode(lib NVML) (Node, error) {
	var node Node
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		node.Driver = v
	} else if !optional(ret) {
		return Node{}, nvmlErr("SystemGetDriverVersion", -1, ret)
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return Node{}, nvmlErr("DeviceGetCount", -1, ret)
	}
	handles := make([]nvml.Device, count)
	for i := range count {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return Node{}, nvmlErr("DeviceGetHandleByIndex", i, ret)
		}
		d, err := readDevice(i, h)
		if err != nil {
			return Node{}, err
		}
		handles[i] = h
		node.Devices = append(node.Devices, d)
	}
	if err := readLinks(node.Devices, handles); err != nil {
		return Node{}, err
	}
	return node, nil
}

func readDevice(i int, h nvml.Device) (Device, error) {
	d := Device{Index: i, Utilization: -1}
	var ret nvml.Return
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		return d, nvmlErr("GetUUID", i, ret)
	}
	if d.Name, ret = h.GetName(); ret != nvml.SUCCESS {
		return d, nvmlErr("GetName", i, ret)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return d, nvmlErr("GetMemoryInfo", i, ret)
	}
	d.MemTotal, d.MemFree, d.MemUsed = int64(mem.Total), int64(mem.Free), int64(mem.Used)
	if u, ret := h.GetUtilizationRates(); ret == nvml.SUCCESS {
		d.Utilization = int(u.Gpu)
	} else if !optional(ret) {
		return d, nvmlErr("GetUtilizationRates", i, ret)
	}
	if major, minor, ret := h.GetCudaComputeCapability(); ret == nvml.SUCCESS {
		d.ComputeMajor, d.ComputeMinor = major, minor
	} else if !optional(ret) {
		return d, nvmlErr("GetCudaComputeCapability", i, ret)
	}
	if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.BusID = busID(pci)
	} else if !optional(ret) {
		return d, nvmlErr("GetPciInfo", i, ret)
	}
	return d, nil
}

// readLinks fills the NVLink and PCIe paths between the devices.
func readLinks(devs []Device, handles []nvml.Device) error {
	byBus := map[string]int{}
	for i, d := range devs {
		if d.BusID != "" {
			byBus[d.BusID] = i
		}
	}
	for i, h := range handles {
		for link := range nvml.NVLINK_MAX_LINKS {
			state, ret := h.GetNvLinkState(link)
			if optional(ret) {
				continue // no such link, or no NVLink on this GPU
			}
			if ret != nvml.SUCCESS {
				return nvmlErr("GetNvLinkState", i, ret)
			}
			if state != nvml.FEATURE_ENABLED {
				continue
			}
			pci, ret := h.GetNvLinkRemotePciInfo(link)
			if optional(ret) {
				continue
			}
			if ret != nvml.SUCCESS {
				return nvmlErr("GetNvLinkRemotePciInfo", i, ret)
			}
			if j, ok := byBus[busID(pci)]; ok && j != i {
				if devs[i].NVLink == nil {
					devs[i].NVLink = map[string]int{}
				}
				devs[i].NVLink[devs[j].UUID]++
			} else {
				// The far end is not a GPU of this node: an NVSwitch.
				devs[i].NVSwitch = true
			}
		}
		for j, other := range handles {
			if j == i {
				continue
			}
			level, ret := h.GetTopologyCommonAncestor(other)
			if optional(ret) {
				continue
			}
			if ret != nvml.SUCCESS {
				return nvmlErr("GetTopologyCommonAncestor", i, ret)
			}
			if devs[i].PCIe == nil {
				devs[i].PCIe = map[string]PCIeLevel{}
			}
			devs[i].PCIe[devs[j].UUID] = PCIeLevel(level)
		}
	}
	return nil
}

// busID is a PCI bus id as a lower-case string without its trailing NULs.
func busID(p nvml.PciInfo) string {
	b := p.BusId[:]
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToLower(string(b))
}
