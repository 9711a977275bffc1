package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmux/llmux/gpu"
)

func writeConfig(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "llmux.yaml")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeNode has n GPUs of 80 GiB.
func fakeNode(n int) gpu.Node {
	node := gpu.Node{Driver: "test"}
	for i := range n {
		node.Devices = append(node.Devices, gpu.Device{Index: i, UUID: "GPU-" + string(rune('a'+i)), MemTotal: 80 << 30})
	}
	if n == 0 {
		node.CPUOnly = "NVML: ERROR_LIBRARY_NOT_FOUND"
	}
	return node
}

// TestValidateResources finds explicit requests a (fake) machine cannot
// meet, and leaves defaults alone: a CPU-only machine is a valid setup.
func TestValidateResources(t *testing.T) {
	cpu := machine{node: fakeNode(0), memTotal: 16 << 30}
	twoGPUs := machine{node: fakeNode(2), memTotal: 16 << 30}
	cases := []struct {
		name string
		m    machine
		file string
		want string // "line:col: message substring", "" for no problem
	}{
		{"CPUOnlyDefaults", cpu, "replicas: 4\n", ""},
		{"GPUsOnCPUOnly", cpu, "replicas: 1\ngpus: 2\n", "2:7: 1 replica(s) with gpus 2 need 2 GPU(s); this machine has none (NVML: ERROR_LIBRARY_NOT_FOUND)"},
		{"GPUsZeroOnCPUOnly", cpu, "gpus: 0\n", ""},
		{"ReplicasTimesGPUs", twoGPUs, "replicas: 3\ngpus: 1\n", "2:7: 3 replica(s) with gpus 1 need 3 GPU(s); this machine has 2"},
		{"SharedGPUsFit", twoGPUs, "replicas: 4\ngpus: 0.5\n", ""},
		{"SharedGPUsDoNotFit", twoGPUs, "replicas: 5\ngpus: 0.5\n", "2:7: 5 replica(s) with gpus 0.5 need 3 GPU(s)"},
		{"MemoryBudgetOverRAM", cpu, "port: 1\nmemory_budget: 64GiB\n", "2:16: memory-budget 64GiB is more than this machine's memory, 16.00 GiB (RAM 16.00 GiB + GPU 0.00 GiB)"},
		{"MemoryBudgetWithGPUMemory", twoGPUs, "memory-budget: 64GiB\n", ""},
		{"MemoryBudgetFits", cpu, "memory-budget: 8GiB\n", ""},
		{"BadSize", cpu, "memory-budget: lots\n", `1:16: "lots" is not a size`},
		{"BadSwapPolicy", cpu, "swap-policy: fifo\n", "1:14: fifo"},
		{"BadGPULayers", cpu, "gpu-layers: most\n", `1:13: "most" is not auto, -1 or a number of layers`},
		{"BadKVType", cpu, "kv-type: f32\n", `1:10: "f32" is not one of f16, q8_0, q4_0`},
		{"BadLogLevel", cpu, "log-level: loud\n", `1:12: log level "loud"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			probs, err := validateFile(writeConfig(t, c.file), defaultRegistry(), c.m)
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				if len(probs) > 0 {
					t.Errorf("got %v, want no problem", probs)
				}
				return
			}
			at, msg, _ := strings.Cut(c.want, ": ")
			if len(probs) != 1 || fmt.Sprintf("%d:%d", probs[0].Line, probs[0].Column) != at || !strings.Contains(probs[0].Message, msg) {
				t.Errorf("got %v\nwant one problem at %s: …%s…", probs, at, msg)
			}
		})
	}
}

func TestGPUsNeeded(t *testing.T) {
	cases := []struct {
		n     int
		share float64
		want  int
	}{{1, 1, 1}, {3, 1, 3}, {2, 2, 4}, {1, 1.5, 2}, {2, 0.5, 1}, {3, 0.5, 2}, {3, 1.0 / 3, 1}, {4, 0.3, 2}}
	for _, c := range cases {
		if got := gpusNeeded(c.n, c.share); got != c.want {
			t.Errorf("gpusNeeded(%d, %g) = %d, want %d", c.n, c.share, got, c.want)
		}
	}
}

// TestValidateCommand runs llmux config validate on a good and a bad file.
func TestValidateCommand(t *testing.T) {
	m := machine{node: fakeNode(0), memTotal: 16 << 30}
	good := writeConfig(t, "port: 9000\nmodels:\n  - name: tiny\n    path: synth:tiny\napplications:\n  - name: chat\n    route_prefix: /chat\n    deployments:\n      - {name: llm, kind: llm, models: [tiny]}\n")
	var out bytes.Buffer
	if err := runValidate(&out, []string{good}, defaultRegistry(), m); err != nil || out.String() != good+": ok\n" {
		t.Errorf("good file: got %q, %v; want %q", out.String(), err, good+": ok\n")
	}
	bad := writeConfig(t, "prot: 9000\nkeep-alive: 5 minutes\napplications:\n  - name: chat\n    deployments:\n      - {name: llm, kind: llm, models: [small]}\n")
	out.Reset()
	err := runValidate(&out, []string{good, bad}, defaultRegistry(), m)
	if err == nil {
		t.Error("bad file: no error")
	}
	want := []string{
		good + ": ok",
		bad + `:1:1: prot: unknown key "prot" (fix: did you mean port?)`,
		bad + `:2:13: keep-alive: "5 minutes" is not a duration`,
		bad + `:6:41: applications[0].deployments[0].models[0]: model "small" is not in the models: list`,
		bad + ": 3 problem(s)",
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got\n%s\nwant %d lines", out.String(), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: got %q, want it to start %q", i+1, lines[i], want[i])
		}
	}
	if err := runValidate(&out, nil, defaultRegistry(), m); err == nil {
		t.Error("no file: no error")
	}
	if err := runValidate(&out, []string{filepath.Join(t.TempDir(), "missing.yaml")}, defaultRegistry(), m); err == nil {
		t.Error("missing file: no error")
	}
}

// TestModelNames names models as the catalog does.
func TestModelNames(t *testing.T) {
	for _, c := range []struct {
		file string
		want string
	}{
		{"models:\n  - {name: a, path: x.gguf, aliases: [b]}\n", "a,b"},
		{"models:\n  - {path: /m/llama-3.2-1b.gguf}\n", "llama-3.2-1b"},
		{"models:\n  - {path: llama3.2:1b}\n", "llama3.2:1b"},
		{"models:\n  - {path: synth:tiny, adapters: [{name: pirate, path: p.gguf}]}\n", "llmux-tiny,pirate,llmux-tiny:pirate"},
	} {
		f, err := readConfig(writeConfig(t, c.file), defaultRegistry(), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(modelNames(f.Models[0]), ","); got != c.want {
			t.Errorf("%q: got %s, want %s", c.file, got, c.want)
		}
	}
}
