package main

import (
	"strings"
	"testing"

	"github.com/llmux/llmux/gpu"
)

const gib = int64(1) << 30

// node is a simulated GPU node: n GPUs with free GiB each.
func node(free ...int64) gpu.Node {
	var n gpu.Node
	for i, f := range free {
		n.Devices = append(n.Devices, gpu.Device{Index: i, UUID: "GPU-" + string(rune('a'+i)), Name: "sim", MemTotal: 80 * gib, MemFree: f * gib})
	}
	return n
}

func TestPlaceReplicasGivesEachProcessItsGPUs(t *testing.T) {
	cases := []struct {
		name    string
		node    gpu.Node
		n       int
		model   modelSize
		share   float64
		layers  int
		want    []string // each replica's CUDA_VISIBLE_DEVICES and args, joined
		wantErr string
	}{
		{name: "no GPUs: CPU only", node: gpu.Node{}, n: 2, model: modelSize{8 * gib, 32}, share: 1, layers: gpuLayersAuto,
			want: []string{"CUDA_VISIBLE_DEVICES= --gpu-layers 0", "CUDA_VISIBLE_DEVICES= --gpu-layers 0"}},
		{name: "two half-GPU replicas share one GPU", node: node(80), n: 2, model: modelSize{8 * gib, 32}, share: 0.5, layers: gpuLayersAuto,
			want: []string{"CUDA_VISIBLE_DEVICES=GPU-a --gpu-layers -1", "CUDA_VISIBLE_DEVICES=GPU-a --gpu-layers -1"}},
		{name: "one replica per GPU", node: node(80, 80), n: 2, model: modelSize{8 * gib, 32}, share: 1, layers: -1,
			want: []string{"GPU-", "GPU-"}},
		{name: "a model spanned over two GPUs gets a tensor split", node: node(24, 24), n: 1, model: modelSize{40 * gib, 32}, share: 1, layers: gpuLayersAuto,
			want: []string{"CUDA_VISIBLE_DEVICES=GPU-a,GPU-b --gpu-layers -1 --tensor-split 0.5000,0.5000"}},
		{name: "auto offloads what fits and runs the rest on the CPU", node: node(8), n: 1, model: modelSize{16 * gib, 32}, share: 1, layers: gpuLayersAuto,
			want: []string{"CUDA_VISIBLE_DEVICES=GPU-a --gpu-layers "}},
		{name: "too large with an explicit layer count", node: node(8), n: 1, model: modelSize{16 * gib, 32}, share: 1, layers: -1,
			wantErr: "short"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := placeReplicas(c.node, c.n, c.model, c.share, c.layers)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("%d placements, want %d", len(got), len(c.want))
			}
			for i, p := range got {
				line := strings.Join(append(append([]string{}, p.Env...), p.Args()...), " ")
				if !strings.Contains(line, c.want[i]) {
					t.Errorf("replica %d: got %q, want it to contain %q", i, line, c.want[i])
				}
			}
			if c.name == "auto offloads what fits and runs the rest on the CPU" {
				n := got[0].GPULayers
				if n <= 0 || n >= 32 {
					t.Fatalf("auto placed %d of 32 layers on an 8 GiB GPU for a 16 GiB model, want some but not all", n)
				}
			}
			if c.name == "one replica per GPU" && got[0].Env[0] == got[1].Env[0] {
				t.Fatalf("two whole-GPU replicas on one GPU: %v", got)
			}
		})
	}
}

func TestParseGPULayers(t *testing.T) {
	for in, want := range map[string]int{"auto": gpuLayersAuto, "": gpuLayersAuto, "-1": -1, "0": 0, "20": 20} {
		if got, err := parseGPULayers(in); err != nil || got != want {
			t.Errorf("parseGPULayers(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"-2", "all", "1.5"} {
		if _, err := parseGPULayers(bad); err == nil {
			t.Errorf("parseGPULayers(%q) accepted", bad)
		}
	}
}
