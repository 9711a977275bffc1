package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/gpu"
)

// backendSearchPath is where ggml's loader (ollama v0.24.0's
// ml/backend/ggml/ggml/src/ggml.go) looks for GPU backends:
// OLLAMA_LIBRARY_PATH when set, else ../lib/ollama beside the executable.
func backendSearchPath() string {
	if p, ok := os.LookupEnv("OLLAMA_LIBRARY_PATH"); ok {
		return p + " (OLLAMA_LIBRARY_PATH)"
	}
	exe, err := os.Executable()
	if err != nil {
		return "../lib/ollama beside the executable"
	}
	return filepath.Clean(filepath.Join(filepath.Dir(exe), "..", "lib", "ollama"))
}

// gpuBackends lists the devices of the loaded ggml backends that are not
// the CPU.
func gpuBackends(devs []engine.BackendDevice) []engine.BackendDevice {
	var out []engine.BackendDevice
	for _, d := range devs {
		if d.Type != "cpu" {
			out = append(out, d)
		}
	}
	return out
}

// printBackends writes the ggml backends that loaded, their devices, and
// the GPUs NVML reports, for llmux version.
func printBackends(w io.Writer) {
	regs, devs := engine.Backends()
	fmt.Fprintf(w, "ggml backends: %s (searched %s)\n", strings.Join(regs, ", "), backendSearchPath())
	for _, d := range devs {
		fmt.Fprintf(w, "  %-6s %-5s %s", d.Name, d.Type, d.Description)
		if d.Type != "cpu" && d.Total > 0 {
			fmt.Fprintf(w, ", %s free of %s", gpu.GiB(int64(d.Free)), gpu.GiB(int64(d.Total)))
		}
		fmt.Fprintln(w)
	}
	node, err := gpu.Discover(nvml.New(), nil)
	switch {
	case err != nil:
		fmt.Fprintf(w, "gpus: %v\n", err)
	case len(node.Devices) == 0 && node.CPUOnly != "":
		fmt.Fprintf(w, "gpus: none (%s)\n", node.CPUOnly)
	default:
		fmt.Fprintf(w, "gpus: %d (NVIDIA driver %s)\n", len(node.Devices), node.Driver)
		for _, d := range node.Devices {
			fmt.Fprintf(w, "  %d %s %s, compute %d.%d, %s free of %s\n", d.Index, d.UUID, d.Name,
				d.ComputeMajor, d.ComputeMinor, gpu.GiB(d.MemFree), gpu.GiB(d.MemTotal))
		}
	}
}

// startGPUs discovers the node's GPUs for llmux serve and says in the log
// what was found and which backends loaded; without NVML, gpu.Open logs
// the one line "no NVML: serving on CPU". The monitor stays open for the
// GPU metrics.
func startGPUs(logger *slog.Logger, gpuLayers int) (*gpu.Monitor, gpu.Node, bool) {
	mon := gpu.Open(nvml.New(), logger)
	node, err := mon.Node()
	if err != nil {
		logger.Warn("reading GPUs through NVML failed: serving on CPU", "err", err)
		return mon, gpu.Node{}, false
	}
	regs, devs := engine.Backends()
	onGPU := gpuBackends(devs)
	logger.Info("ggml backends", "loaded", strings.Join(regs, ","), "gpu_devices", len(onGPU), "searched", backendSearchPath())
	for _, d := range node.Devices {
		logger.Info("gpu", "index", d.Index, "uuid", d.UUID, "name", d.Name, "compute", fmt.Sprintf("%d.%d", d.ComputeMajor, d.ComputeMinor),
			"free", gpu.GiB(d.MemFree), "total", gpu.GiB(d.MemTotal))
	}
	switch {
	case len(node.Devices) > 0 && len(onGPU) == 0:
		logger.Warn("GPUs found but no GPU backend loaded: models run on the CPU; build one with scripts/build-cuda.sh", "searched", backendSearchPath())
	case len(onGPU) > 0 && gpuLayers == 0:
		logger.Info("a GPU backend is loaded but --gpu-layers is 0: models run on the CPU (-1 offloads every layer)")
	case len(onGPU) > 0 && gpuLayers == gpuLayersAuto:
		logger.Info("models offload as many layers as fit on the GPUs (--gpu-layers auto)")
	case len(onGPU) > 0:
		logger.Info("models offload layers to the GPU", "gpu_layers", gpuLayers)
	}
	return mon, node, len(onGPU) > 0
}
