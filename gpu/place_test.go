package gpu

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const oh = DefaultOverhead

// The simulated nodes, discovered through go-nvml's mock package.

func oneGPU(t *testing.T) Node { return newMockNode(h100(80 * gib)).node(t) }

// twoGPUs: two 24 GB cards on one PCIe switch, no NVLink, with free
// memory free0 and free1.
func twoGPUs(t *testing.T, free0, free1 int64) Node {
	l4 := func(free int64) fakeGPU {
		return fakeGPU{name: "NVIDIA L4", total: 24 * gib, free: free, util: -1, major: 8, minor: 9}
	}
	gpus := []fakeGPU{l4(free0), l4(free1)}
	gpus[0].pcie = map[int]PCIeLevel{1: PCIeSwitch}
	return newMockNode(symmetric(gpus)...).node(t)
}

// eightGPUs: an HGX-like board of two NVLink islands, GPUs 0-3 and 4-7
// (every pair in an island linked), on two NUMA nodes; free[i] is GPU i's
// free memory (80 GiB when free is short).
func eightGPUs(t *testing.T, free ...int64) Node {
	gpus := make([]fakeGPU, 8)
	for i := range gpus {
		f := 80 * gib
		if i < len(free) {
			f = free[i]
		}
		gpus[i] = h100(f)
		gpus[i].pcie = map[int]PCIeLevel{}
		for j := range 8 {
			if j == i {
				continue
			}
			if i/4 == j/4 {
				gpus[i].nvlink = append(gpus[i].nvlink, j)
				gpus[i].pcie[j] = PCIeNUMA
			} else {
				gpus[i].pcie[j] = PCIeSystem
			}
		}
	}
	return newMockNode(gpus...).node(t)
}

// eightPCIe: eight GPUs without NVLink; pairs (0,1) (2,3) (4,5) (6,7)
// share a PCIe switch, 0-3 and 4-7 a NUMA node.
func eightPCIe(t *testing.T) Node {
	gpus := make([]fakeGPU, 8)
	for i := range gpus {
		gpus[i] = h100(80 * gib)
		gpus[i].pcie = map[int]PCIeLevel{}
		for j := range 8 {
			switch {
			case j == i:
			case i/2 == j/2:
				gpus[i].pcie[j] = PCIeSwitch
			case i/4 == j/4:
				gpus[i].pcie[j] = PCIeNUMA
			default:
				gpus[i].pcie[j] = PCIeSystem
			}
		}
	}
	return newMockNode(gpus...).node(t)
}

// want is an expected assignment, in NVML indices.
type want struct {
	replica string
	gpus    []int
	split   []float32 // nil: no split
	layers  int       // GPULayers
}

func TestPlace(t *testing.T) {
	for _, tc := range []struct {
		name string
		node func(*testing.T) Node
		reqs []Request
		want []want
		errs []string // substrings of the error, one per failed request
	}{
		{
			name: "1 GPU: a model that fits",
			node: oneGPU,
			reqs: []Request{{Replica: "r", Bytes: 20 * gib}},
			want: []want{{"r", []int{0}, nil, -1}},
		},
		{
			name: "1 GPU: two half-GPU replicas share it",
			node: oneGPU,
			reqs: []Request{{Replica: "a", Bytes: 30 * gib, Share: 0.5}, {Replica: "b", Bytes: 30 * gib, Share: 0.5}},
			want: []want{{"a", []int{0}, nil, -1}, {"b", []int{0}, nil, -1}},
		},
		{
			name: "1 GPU: two half-GPU replicas whose memory with two overheads does not fit",
			node: oneGPU,
			reqs: []Request{{Replica: "a", Bytes: 40 * gib, Share: 0.5}, {Replica: "b", Bytes: 40 * gib, Share: 0.5}},
			want: []want{{"a", []int{0}, nil, -1}},
			errs: []string{`replica "b" needs 40.50 GiB`},
		},
		{
			name: "1 GPU: a third half-GPU replica finds no share left",
			node: oneGPU,
			reqs: []Request{{Replica: "a", Bytes: gib, Share: 0.5}, {Replica: "b", Bytes: gib, Share: 0.5}, {Replica: "c", Bytes: gib, Share: 0.5}},
			want: []want{{"a", []int{0}, nil, -1}, {"b", []int{0}, nil, -1}},
			errs: []string{`replica "c": no GPU has 0.5 of its share left`},
		},
		{
			name: "1 GPU: a whole-GPU replica is not shared with a fractional one",
			node: oneGPU,
			reqs: []Request{{Replica: "frac", Bytes: gib, Share: 0.25}, {Replica: "whole", Bytes: gib}},
			want: []want{{"whole", []int{0}, nil, -1}},
			errs: []string{`replica "frac": no GPU has 0.25 of its share left`},
		},
		{
			name: "1 GPU: too large",
			node: oneGPU,
			reqs: []Request{{Replica: "big", Bytes: 100 * gib}},
			errs: []string{`replica "big" needs 100.50 GiB (model 100.00 GiB + 1 × 0.50 GiB per-process overhead) but the 1 GPU(s) it could use have 80.00 GiB free: 20.50 GiB short (22011707392 bytes)`},
		},
		{
			name: "1 GPU: too large, gpu-layers auto offloads the layers that fit",
			node: oneGPU,
			reqs: []Request{{Replica: "big", Bytes: 100 * gib, Layers: 100, LayerBytes: gib, Partial: true}},
			want: []want{{"big", []int{0}, nil, 79}},
		},
		{
			name: "2 GPUs: spanned over both, split by free memory",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 24*gib) },
			reqs: []Request{{Replica: "r", Bytes: 40 * gib}},
			want: []want{{"r", []int{0, 1}, []float32{0.5, 0.5}, -1}},
		},
		{
			name: "2 GPUs: uneven free memory, split in proportion",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 12*gib) },
			reqs: []Request{{Replica: "r", Bytes: 30 * gib}},
			want: []want{{"r", []int{0, 1}, []float32{23.5 / 35, 11.5 / 35}, -1}},
		},
		{
			name: "2 GPUs: uneven free memory, a small model takes the smaller GPU",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 12*gib) },
			reqs: []Request{{Replica: "small", Bytes: 10 * gib}, {Replica: "large", Bytes: 20 * gib}},
			want: []want{{"small", []int{1}, nil, -1}, {"large", []int{0}, nil, -1}},
		},
		{
			name: "2 GPUs: a half-GPU replica on each when the shared one is full",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 24*gib) },
			reqs: []Request{{Replica: "a", Bytes: 15 * gib, Share: 0.5}, {Replica: "b", Bytes: 15 * gib, Share: 0.5}},
			want: []want{{"a", []int{0}, nil, -1}, {"b", []int{1}, nil, -1}},
		},
		{
			name: "2 GPUs: two GPUs asked for a model that fits one",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 24*gib) },
			reqs: []Request{{Replica: "r", Bytes: 8 * gib, Share: 2}},
			want: []want{{"r", []int{0, 1}, []float32{0.5, 0.5}, -1}},
		},
		{
			name: "2 GPUs: too large for the node",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 24*gib) },
			reqs: []Request{{Replica: "r", Bytes: 60 * gib}},
			errs: []string{`needs 61.00 GiB (model 60.00 GiB + 2 × 0.50 GiB per-process overhead) but the 2 GPU(s) it could use have 48.00 GiB free: 13.00 GiB short`},
		},
		{
			name: "2 GPUs: too large, gpu-layers auto spans the layers that fit",
			node: func(t *testing.T) Node { return twoGPUs(t, 24*gib, 12*gib) },
			reqs: []Request{{Replica: "r", Bytes: 60 * gib, Layers: 60, LayerBytes: gib, Partial: true}},
			want: []want{{"r", []int{0, 1}, []float32{23.5 / 35, 11.5 / 35}, 35}},
		},
		{
			name: "8 GPUs: one replica per GPU",
			node: func(t *testing.T) Node { return eightGPUs(t) },
			reqs: func() []Request {
				var r []Request
				for i := range 8 {
					r = append(r, Request{Replica: fmt.Sprint("r", i), Bytes: 60 * gib})
				}
				return r
			}(),
			want: func() []want {
				var w []want
				for i := range 8 {
					w = append(w, want{fmt.Sprint("r", i), []int{i}, nil, -1})
				}
				return w
			}(),
		},
		{
			name: "8 GPUs: a model spanned over the fewest GPUs, on one NVLink island",
			// GPUs 0 and 4 have less free memory: the least-memory set of
			// three, {0,4,1}, spans both islands; {0,1,2} is one island.
			node: func(t *testing.T) Node { return eightGPUs(t, 60*gib, 80*gib, 80*gib, 80*gib, 60*gib) },
			reqs: []Request{{Replica: "r", Bytes: 200 * gib}},
			want: []want{{"r", []int{0, 1, 2}, []float32{59.5 / 218.5, 79.5 / 218.5, 79.5 / 218.5}, -1}},
		},
		{
			name: "8 GPUs: a spanned model and whole-GPU replicas leave the other island's GPUs",
			node: func(t *testing.T) Node { return eightGPUs(t) },
			reqs: []Request{
				{Replica: "small", Bytes: 10 * gib},
				{Replica: "span", Bytes: 300 * gib},
				{Replica: "half-a", Bytes: 20 * gib, Share: 0.5},
				{Replica: "half-b", Bytes: 20 * gib, Share: 0.5},
			},
			want: []want{
				{"small", []int{4}, nil, -1},
				{"span", []int{0, 1, 2, 3}, []float32{0.25, 0.25, 0.25, 0.25}, -1},
				{"half-a", []int{5}, nil, -1},
				{"half-b", []int{5}, nil, -1},
			},
		},
		{
			name: "8 GPUs over PCIe: a pair behind one switch",
			node: func(t *testing.T) Node { return eightPCIe(t) },
			reqs: []Request{{Replica: "one", Bytes: 70 * gib}, {Replica: "pair", Bytes: 150 * gib}},
			// The larger model is placed first: the pair takes 0 and 1.
			want: []want{{"one", []int{2}, nil, -1}, {"pair", []int{0, 1}, []float32{0.5, 0.5}, -1}},
		},
		{
			name: "8 GPUs: too large for the node",
			node: func(t *testing.T) Node { return eightGPUs(t) },
			reqs: []Request{{Replica: "huge", Bytes: 700 * gib}},
			errs: []string{`needs 704.00 GiB (model 700.00 GiB + 8 × 0.50 GiB per-process overhead) but the 8 GPU(s) it could use have 640.00 GiB free: 64.00 GiB short (68719476736 bytes)`},
		},
		{
			name: "8 GPUs: too large once a larger model is placed",
			node: func(t *testing.T) Node { return eightGPUs(t) },
			reqs: []Request{{Replica: "a", Bytes: 300 * gib}, {Replica: "b", Bytes: 330 * gib}},
			want: []want{{"b", []int{0, 1, 2, 3, 4}, []float32{0.2, 0.2, 0.2, 0.2, 0.2}, -1}},
			errs: []string{`replica "a" needs 301.50 GiB (model 300.00 GiB + 3 × 0.50 GiB per-process overhead) but the 3 GPU(s) it could use have 240.00 GiB free: 61.50 GiB short`},
		},
		{
			name: "no GPUs: every replica on the CPU, no error",
			node: func(*testing.T) Node { return Node{CPUOnly: "NVML: ERROR_LIBRARY_NOT_FOUND"} },
			reqs: []Request{{Replica: "a", Bytes: 100 * gib}, {Replica: "b", Bytes: gib, Share: 0.5}},
			want: []want{{"a", nil, nil, 0}, {"b", nil, nil, 0}},
		},
		{
			name: "invalid shares",
			node: oneGPU,
			reqs: []Request{{Replica: "a", Bytes: gib, Share: 1.5}, {Replica: "b", Bytes: gib, Share: -1}, {Replica: "c", Bytes: gib}},
			want: []want{{"c", []int{0}, nil, -1}},
			errs: []string{`replica "a": share 1.5`, `replica "b": share -1`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := tc.node(t)
			plan, err := Place(node, tc.reqs)
			var got []want
			for _, a := range plan.Assignments {
				got = append(got, want{a.Replica, a.Indices, a.TensorSplit, a.GPULayers})
			}
			if !equalWants(got, tc.want) {
				t.Errorf("plan:\n got %v\nwant %v", got, tc.want)
			}
			for _, s := range tc.errs {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("error %v, want one containing %q", err, s)
				}
			}
			if len(tc.errs) == 0 && err != nil {
				t.Errorf("error %v, want none", err)
			}
			checkPlan(t, node, tc.reqs, plan)
			again, err2 := Place(node, tc.reqs)
			if !reflect.DeepEqual(plan, again) || fmt.Sprint(err) != fmt.Sprint(err2) {
				t.Errorf("a second Place gave another answer:\n%+v\n%+v", plan, again)
			}
		})
	}
}

func equalWants(a, b []want) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].replica != b[i].replica || !slices.Equal(a[i].gpus, b[i].gpus) || a[i].layers != b[i].layers || len(a[i].split) != len(b[i].split) {
			return false
		}
		for k := range a[i].split {
			if math.Abs(float64(a[i].split[k]-b[i].split[k])) > 1e-4 {
				return false
			}
		}
	}
	return true
}

// checkPlan checks what every plan must keep: no GPU gives more memory than
// it has free or more than its whole share, GPUs are named by UUID in the
// same order as their indices, charges include one overhead per GPU, and
// the environment carries the UUIDs.
func checkPlan(t *testing.T, node Node, reqs []Request, plan Plan) {
	t.Helper()
	charged := map[string]int64{}
	shares := map[string]float64{}
	for _, a := range plan.Assignments {
		i := slices.IndexFunc(reqs, func(r Request) bool { return r.Replica == a.Replica })
		r := reqs[i]
		if len(a.GPUs) != len(a.Indices) || len(a.GPUs) != len(a.Bytes) {
			t.Fatalf("%s: %d GPUs, %d indices, %d charges", a.Replica, len(a.GPUs), len(a.Indices), len(a.Bytes))
		}
		var model int64
		for k, uuid := range a.GPUs {
			d, ok := node.Device(uuid)
			if !ok || d.Index != a.Indices[k] {
				t.Errorf("%s: GPU %s is not NVML index %d", a.Replica, uuid, a.Indices[k])
			}
			charged[uuid] += a.Bytes[k]
			shares[uuid] += a.Share
			model += a.Bytes[k] - r.overhead()
		}
		if a.GPULayers < 0 && len(a.GPUs) > 0 && model != r.Bytes {
			t.Errorf("%s: charged %d model bytes over its GPUs, want %d", a.Replica, model, r.Bytes)
		}
		if len(a.TensorSplit) > 0 {
			var sum float32
			for _, s := range a.TensorSplit {
				sum += s
			}
			if math.Abs(float64(sum-1)) > 1e-4 {
				t.Errorf("%s: tensor split %v sums to %v", a.Replica, a.TensorSplit, sum)
			}
		}
		if env := a.Env(); env[0] != "CUDA_VISIBLE_DEVICES="+strings.Join(a.GPUs, ",") {
			t.Errorf("%s: env %v", a.Replica, env)
		}
	}
	for uuid, b := range charged {
		d, _ := node.Device(uuid)
		if b > d.MemFree {
			t.Errorf("GPU %d: %s charged, %s free", d.Index, GiB(b), GiB(d.MemFree))
		}
		if shares[uuid] > 1+shareEps {
			t.Errorf("GPU %d: shares sum to %v", d.Index, shares[uuid])
		}
	}
}

func TestShortfallError(t *testing.T) {
	_, err := Place(eightGPUs(t), []Request{{Replica: "huge", Bytes: 700 * gib, Overhead: gib}})
	var se *ShortfallError
	if !errors.As(err, &se) {
		t.Fatalf("error %T %v, want a *ShortfallError", err, err)
	}
	if se.Need() != 708*gib || se.Free != 640*gib || se.Short() != 68*gib || se.GPUs != 8 {
		t.Errorf("need %s free %s short %s on %d GPUs, want 708, 640, 68 GiB on 8", GiB(se.Need()), GiB(se.Free), GiB(se.Short()), se.GPUs)
	}
}

func TestAssignmentEnv(t *testing.T) {
	plan, err := Place(twoGPUs(t, 24*gib, 12*gib), []Request{{Replica: "r", Bytes: 30 * gib}})
	if err != nil {
		t.Fatal(err)
	}
	a := plan.Assignments[0]
	wantEnv := []string{"CUDA_VISIBLE_DEVICES=" + uuidOf(0) + "," + uuidOf(1), "LLMUX_GPU_LAYERS=-1", "LLMUX_TENSOR_SPLIT=0.6714,0.3286"}
	if got := a.Env(); !slices.Equal(got, wantEnv) {
		t.Errorf("env\n got %q\nwant %q", got, wantEnv)
	}
	if got := a.Offloaded(40); got != "all layers on 2 GPU(s)" {
		t.Errorf("Offloaded = %q", got)
	}
	cpu, _ := Place(Node{}, []Request{{Replica: "c"}})
	if got := cpu.Assignments[0].Env(); !slices.Equal(got, []string{"CUDA_VISIBLE_DEVICES=", "LLMUX_GPU_LAYERS=0"}) {
		t.Errorf("CPU env %q", got)
	}
	if got := cpu.Assignments[0].Offloaded(40); got != "CPU only" {
		t.Errorf("CPU Offloaded = %q", got)
	}
	part := Assignment{GPUs: []string{"x"}, GPULayers: 30}
	if got := part.Offloaded(40); got != "30 of 40 layers on 1 GPU(s), the rest on CPU" {
		t.Errorf("partial Offloaded = %q", got)
	}
	names, shares := plan.Replicas(uuidOf(1))
	if !slices.Equal(names, []string{"r"}) || !slices.Equal(shares, []float64{1}) {
		t.Errorf("Replicas(GPU 1) = %v %v", names, shares)
	}
}

// TestPlaceRandom places random mixes of requests on the nodes and checks
// the invariants of every plan: no GPU over its free memory or its share,
// each request either placed or reported, and the same answer twice.
func TestPlaceRandom(t *testing.T) {
	nodes := []Node{oneGPU(t), twoGPUs(t, 24*gib, 10*gib), eightGPUs(t, 10*gib, 70*gib, 33*gib, 80*gib, 5*gib), eightPCIe(t)}
	rng := rand.New(rand.NewPCG(1, 2))
	shares := []float64{0, 0.25, 0.5, 1, 2, 3}
	for iter := range 300 {
		node := nodes[iter%len(nodes)]
		var reqs []Request
		for i := range 1 + rng.IntN(10) {
			reqs = append(reqs, Request{
				Replica: fmt.Sprint("r", i), Bytes: rng.Int64N(200 * gib), Share: shares[rng.IntN(len(shares))],
				Layers: 1 + rng.IntN(80), LayerBytes: 1 + rng.Int64N(4*gib), Partial: rng.IntN(2) == 0,
			})
		}
		plan, err := Place(node, reqs)
		checkPlan(t, node, reqs, plan)
		var failed int
		if err != nil {
			failed = strings.Count(err.Error(), "gpu: replica")
		}
		if len(plan.Assignments)+failed != len(reqs) {
			t.Fatalf("iteration %d: %d placed + %d failed != %d requests: %v", iter, len(plan.Assignments), failed, len(reqs), err)
		}
		again, _ := Place(node, reqs)
		if !reflect.DeepEqual(plan, again) {
			t.Fatalf("iteration %d: not deterministic", iter)
		}
	}
}
