package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/llmux/llmux/gpu"
	"github.com/llmux/llmux/multiplex"
)

// gpuLayersAuto is --gpu-layers auto: as many layers as the GPUs hold.
const gpuLayersAuto = -2

// parseGPULayers reads --gpu-layers: auto, -1 (every layer) or a count.
func parseGPULayers(s string) (int, error) {
	if s == "auto" || s == "" {
		return gpuLayersAuto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("--gpu-layers: %q is not auto, -1 or a number of layers", s)
	}
	return n, nil
}

// parseTensorSplit reads --tensor-split: comma-separated proportions.
func parseTensorSplit(s string) ([]float32, error) {
	var out []float32
	for _, p := range splitComma(s) {
		v, err := strconv.ParseFloat(p, 32)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("--tensor-split: %q is not a proportion", p)
		}
		out = append(out, float32(v))
	}
	return out, nil
}

// modelSize is what placement needs of the largest model a replica may
// hold: its memory estimate and its layers.
type modelSize struct {
	Bytes  int64
	Layers int
}

// largestModel sizes every base model of the catalog and returns the
// largest: a replica serves the whole catalog.
func largestModel(c *multiplex.Catalog, size func(multiplex.Entry) (int64, int, error)) modelSize {
	var best modelSize
	for _, e := range c.Entries() {
		if e.Kind != multiplex.KindBase {
			continue
		}
		b, layers, err := size(e)
		if err == nil && b > best.Bytes {
			best = modelSize{Bytes: b, Layers: layers}
		}
	}
	return best
}

// replicaGPUs is one replica's share of the GPUs: what its process gets.
type replicaGPUs struct {
	Env         []string // CUDA_VISIBLE_DEVICES by UUID
	GPULayers   int
	TensorSplit []float32 // nil unless the model is spanned
	Desc        string    // for the log
}

// Args are the replica process's --gpu-layers and --tensor-split.
func (r replicaGPUs) Args() []string {
	args := []string{"--gpu-layers", strconv.Itoa(r.GPULayers)}
	if len(r.TensorSplit) > 0 {
		parts := make([]string, len(r.TensorSplit))
		for j, v := range r.TensorSplit {
			parts[j] = strconv.FormatFloat(float64(v), 'f', 4, 32)
		}
		args = append(args, "--tensor-split", strings.Join(parts, ","))
	}
	return args
}

// placeReplicas places n replicas of a model of the given size on the
// node's GPUs, each holding share of a GPU (Ray Serve's num_gpus), and
// returns what each replica process gets. gpuLayers is the --gpu-layers
// setting: auto offloads as much as fits (the rest runs on the CPU); an
// explicit number or -1 asks for that and the model must fit. Without
// GPUs every replica runs on the CPU.
func placeReplicas(node gpu.Node, n int, m modelSize, share float64, gpuLayers int) ([]replicaGPUs, gpu.Plan, error) {
	out := make([]replicaGPUs, n)
	if len(node.Devices) == 0 {
		for i := range out {
			out[i] = replicaGPUs{Env: []string{"CUDA_VISIBLE_DEVICES="}, Desc: "CPU only (no GPU)"}
		}
		return out, gpu.Plan{}, nil
	}
	reqs := make([]gpu.Request, n)
	for i := range reqs {
		reqs[i] = gpu.Request{Replica: fmt.Sprintf("replica-%d", i), Bytes: m.Bytes, Share: share, Partial: gpuLayers == gpuLayersAuto, Layers: m.Layers}
		if m.Layers > 0 {
			reqs[i].LayerBytes = m.Bytes / int64(m.Layers)
		}
	}
	plan, err := gpu.Place(node, reqs)
	if err != nil {
		return nil, plan, fmt.Errorf("placing %d replica(s) on the GPUs: %w", n, err)
	}
	for i, a := range plan.Assignments {
		layers := a.GPULayers
		if gpuLayers != gpuLayersAuto && len(a.GPUs) > 0 {
			layers = gpuLayers
		}
		r := replicaGPUs{Env: []string{"CUDA_VISIBLE_DEVICES=" + a.CUDAVisibleDevices()}, GPULayers: layers, TensorSplit: a.TensorSplit, Desc: a.Offloaded(m.Layers)}
		out[i] = r
	}
	return out, plan, nil
}
