package gpu

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// DefaultOverhead is what one process costs on each GPU it uses beyond the
// model's weights and KV cache: the CUDA context (about 300 MiB on recent
// drivers) and llama.cpp's compute buffers for a batch of a few hundred
// tokens. Every replica is its own process, so two replicas sharing a GPU
// pay it twice there, and a model spanned over three GPUs pays it three
// times.
const DefaultOverhead int64 = 512 << 20

// Request asks for GPUs for one replica.
type Request struct {
	Replica string
	// Bytes is the model's estimate: weights plus the KV cache for its
	// context and parallelism. Place adds the per-process Overhead.
	Bytes int64
	// Share is the part of the GPUs the replica holds, as Ray Serve's
	// num_gpus: 0 or 1 is one whole GPU (spanned over more when the model
	// does not fit one), a fraction in (0,1) shares one GPU with other
	// fractional replicas whose shares sum to at most 1, and a whole
	// number N>1 asks for at least N GPUs.
	Share float64
	// Overhead replaces DefaultOverhead for this replica when positive.
	Overhead int64
	// Layers and LayerBytes (weights plus KV of one repeating layer)
	// let Place offload only some layers when Partial is set.
	Layers     int
	LayerBytes int64
	// Partial is --gpu-layers auto: a model that does not fit offloads as
	// many layers as fit and runs the rest on the CPU. Without it, a model
	// that does not fit is an error.
	Partial bool
}

// Assignment is where one replica runs.
type Assignment struct {
	Replica string
	// GPUs are the UUIDs the process sees, in CUDA's order inside it: the
	// i-th is its CUDA device i. Empty: the replica runs on the CPU.
	GPUs []string
	// Indices are the same GPUs' NVML indices, for logs.
	Indices []int
	// Share is the part of each GPU the replica holds.
	Share float64
	// TensorSplit is each GPU's proportion of the model (llama.cpp's
	// tensor_split), summing to 1; nil for one GPU or none.
	TensorSplit []float32
	// GPULayers is what --gpu-layers becomes: -1 for every layer, N>0 for
	// the first N layers (the rest on the CPU), 0 for none.
	GPULayers int
	// Bytes is the memory charged to each GPU, overhead included.
	Bytes []int64
}

// CUDAVisibleDevices is the value of the replica process's
// CUDA_VISIBLE_DEVICES: its GPUs by UUID, in order. Empty hides every GPU.
func (a Assignment) CUDAVisibleDevices() string { return strings.Join(a.GPUs, ",") }

// Env is the environment a replica process gets for this assignment:
// CUDA_VISIBLE_DEVICES, and the settings llmux reads from LLMUX_GPU_LAYERS
// and LLMUX_TENSOR_SPLIT.
func (a Assignment) Env() []string {
	env := []string{
		"CUDA_VISIBLE_DEVICES=" + a.CUDAVisibleDevices(),
		"LLMUX_GPU_LAYERS=" + strconv.Itoa(a.GPULayers),
	}
	if len(a.TensorSplit) > 0 {
		parts := make([]string, len(a.TensorSplit))
		for i, v := range a.TensorSplit {
			parts[i] = strconv.FormatFloat(float64(v), 'f', 4, 32)
		}
		env = append(env, "LLMUX_TENSOR_SPLIT="+strings.Join(parts, ","))
	}
	return env
}

// Offloaded says in words how much of the model is on GPUs, for logs and
// status pages.
func (a Assignment) Offloaded(layers int) string {
	switch {
	case len(a.GPUs) == 0 || a.GPULayers == 0:
		return "CPU only"
	case a.GPULayers < 0:
		return fmt.Sprintf("all layers on %d GPU(s)", len(a.GPUs))
	case layers > 0:
		return fmt.Sprintf("%d of %d layers on %d GPU(s), the rest on CPU", a.GPULayers, layers, len(a.GPUs))
	}
	return fmt.Sprintf("%d layers on %d GPU(s), the rest on CPU", a.GPULayers, len(a.GPUs))
}

// Plan is the result of Place: one assignment per placed request, in the
// order of the requests.
type Plan struct {
	Assignments []Assignment
}

// Replicas lists the replicas on the GPU with this UUID and the share each
// holds there, in plan order.
func (p Plan) Replicas(uuid string) (names []string, shares []float64) {
	for _, a := range p.Assignments {
		if slices.Contains(a.GPUs, uuid) {
			names = append(names, a.Replica)
			shares = append(shares, a.Share)
		}
	}
	return names, shares
}

// ShortfallError says a replica fits nowhere and by how much.
type ShortfallError struct {
	Replica  string
	Model    int64 // the request's Bytes
	Overhead int64 // per process, per GPU
	GPUs     int   // the GPUs counted in Free: the most it could get
	Free     int64 // their free memory left by the replicas placed before
	Reason   string
}

// Need is the memory the replica needs on those GPUs.
func (e *ShortfallError) Need() int64 { return e.Model + int64(max(e.GPUs, 1))*e.Overhead }

// Short is how much memory is missing.
func (e *ShortfallError) Short() int64 { return e.Need() - e.Free }

func (e *ShortfallError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("gpu: replica %q: %s", e.Replica, e.Reason)
	}
	n := max(e.GPUs, 1)
	return fmt.Sprintf("gpu: replica %q needs %s (model %s + %d × %s per-process overhead) but the %d GPU(s) it could use have %s free: %s short (%d bytes)",
		e.Replica, GiB(e.Need()), GiB(e.Model), n, GiB(e.Overhead), e.GPUs, GiB(e.Free), GiB(e.Short()), e.Short())
}

// gpuState is a device's capacity left while planning.
type gpuState struct {
	dev   Device
	free  int64
	share float64 // the part of the GPU already given out
}

const shareEps = 1e-9

// Place decides which GPUs each request gets. It is a pure function: the
// same node and requests give the same plan.
//
// Requests are placed whole-GPU ones first, then fractional ones, larger
// models first within each kind (input order breaks ties), on the memory
// each GPU has free minus what earlier placements took:
//   - a fractional request goes to the GPU with the least free memory that
//     holds it (best fit) among those whose shares leave room;
//   - a whole-GPU request takes the fewest unshared GPUs, at least its
//     Share, whose free memory holds the model plus one Overhead per GPU;
//     among sets of that size it prefers one NVLink island, then the
//     closest PCIe paths, then the least free memory, then the lowest
//     indices; the tensor split is proportional to each GPU's free memory
//     less the overhead;
//   - a request that fits nowhere and has Partial set then gets the GPUs
//     that are left (all unshared ones, or for a fraction the shareable one
//     with most memory) and as many layers as they hold.
//
// On a node without devices every request runs on the CPU and Place
// returns no error. Otherwise the plan holds every request that could be
// placed and the error joins a *ShortfallError for each that could not.
func Place(node Node, reqs []Request) (Plan, error) {
	out := make([]*Assignment, len(reqs))
	if len(node.Devices) == 0 {
		plan := Plan{}
		for _, r := range reqs {
			plan.Assignments = append(plan.Assignments, Assignment{Replica: r.Replica, Share: r.share(), GPULayers: 0})
		}
		return plan, nil
	}
	var errs []error
	valid := make([]int, 0, len(reqs))
	for i, r := range reqs {
		if err := r.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		valid = append(valid, i)
	}
	slices.SortStableFunc(valid, func(a, b int) int {
		ra, rb := reqs[a], reqs[b]
		if fa, fb := ra.share() < 1, rb.share() < 1; fa != fb {
			if fa {
				return 1
			}
			return -1
		}
		return cmp.Compare(rb.Bytes, ra.Bytes)
	})
	gpus := make([]gpuState, len(node.Devices))
	for i, d := range node.Devices {
		gpus[i] = gpuState{dev: d, free: d.MemFree}
	}
	island := node.islandOf()
	var partial []int
	for _, i := range valid {
		if a := placeFull(gpus, island, reqs[i]); a != nil {
			out[i] = a
		} else {
			partial = append(partial, i)
		}
	}
	for _, i := range partial {
		r := reqs[i]
		if r.Partial {
			if a := placePartial(gpus, r); a != nil {
				out[i] = a
				continue
			}
		}
		errs = append(errs, shortfall(gpus, r))
	}
	var plan Plan
	for _, a := range out {
		if a != nil {
			plan.Assignments = append(plan.Assignments, *a)
		}
	}
	return plan, errors.Join(errs...)
}

func (r Request) share() float64 {
	if r.Share == 0 {
		return 1
	}
	return r.Share
}

func (r Request) overhead() int64 {
	if r.Overhead > 0 {
		return r.Overhead
	}
	return DefaultOverhead
}

func (r Request) check() error {
	s := r.share()
	switch {
	case r.Bytes < 0:
		return &ShortfallError{Replica: r.Replica, Reason: fmt.Sprintf("negative model size %d", r.Bytes)}
	case math.IsNaN(s) || s < 0 || (s > 1 && s != math.Trunc(s)):
		return &ShortfallError{Replica: r.Replica, Reason: fmt.Sprintf("share %v: want a fraction in (0,1] or a whole number of GPUs", r.Share)}
	}
	return nil
}

// placeFull places r with all its layers on GPUs, or returns nil.
func placeFull(gpus []gpuState, island []int, r Request) *Assignment {
	oh := r.overhead()
	if s := r.share(); s < 1 {
		best := -1
		for i, g := range gpus {
			if g.share+s > 1+shareEps || g.free < r.Bytes+oh {
				continue
			}
			if best < 0 || g.free < gpus[best].free {
				best = i
			}
		}
		if best < 0 {
			return nil
		}
		return assign(gpus, r, []int{best}, []int64{r.Bytes}, -1)
	}
	var free []int // unshared GPUs with room for a process
	for i, g := range gpus {
		if g.share == 0 && g.free > oh {
			free = append(free, i)
		}
	}
	for k := int(r.share()); k <= len(free); k++ {
		set := bestSet(gpus, island, free, k, r.Bytes, oh)
		if set == nil {
			continue
		}
		return assign(gpus, r, set, split(gpus, set, r.Bytes, oh), -1)
	}
	return nil
}

// placePartial offloads as many layers of r as fit, or returns nil.
func placePartial(gpus []gpuState, r Request) *Assignment {
	if r.Layers <= 0 || r.LayerBytes <= 0 {
		return nil
	}
	oh := r.overhead()
	var set []int
	if s := r.share(); s < 1 {
		best := -1
		for i, g := range gpus {
			if g.share+s <= 1+shareEps && g.free > oh && (best < 0 || g.free > gpus[best].free) {
				best = i
			}
		}
		if best >= 0 {
			set = []int{best}
		}
	} else {
		for i, g := range gpus {
			if g.share == 0 && g.free > oh {
				set = append(set, i)
			}
		}
		if len(set) < int(s) {
			return nil
		}
	}
	if len(set) == 0 {
		return nil
	}
	var usable int64
	for _, i := range set {
		usable += gpus[i].free - oh
	}
	layers := int(min(usable/r.LayerBytes, int64(r.Layers)))
	if layers <= 0 {
		return nil
	}
	bytes := int64(layers) * r.LayerBytes
	return assign(gpus, r, set, split(gpus, set, bytes, oh), layers)
}

// bestSet picks k of the free GPUs whose memory less one overhead each holds
// bytes, preferring one NVLink island, then close PCIe paths, then the
// least memory (leaving large GPUs to large models), then low indices.
func bestSet(gpus []gpuState, island, free []int, k int, bytes, oh int64) []int {
	type score struct {
		islands int
		pcie    PCIeLevel
		usable  int64
	}
	var best []int
	var bestScore score
	better := func(a, b score) bool {
		if a.islands != b.islands {
			return a.islands < b.islands
		}
		if a.pcie != b.pcie {
			return a.pcie < b.pcie
		}
		return a.usable < b.usable
	}
	try := func(set []int) {
		var s score
		seen := map[int]bool{}
		for _, i := range set {
			s.usable += gpus[i].free - oh
			if !seen[island[i]] {
				seen[island[i]] = true
				s.islands++
			}
		}
		if s.usable < bytes {
			return
		}
		s.pcie = worstPCIe(gpus, set)
		if best == nil || better(s, bestScore) {
			best, bestScore = slices.Clone(set), s
		}
	}
	if len(free) <= maxExhaustive {
		combinations(free, k, try)
		return best
	}
	// Too many GPUs to try every set: the k with the most free memory.
	byFree := slices.Clone(free)
	slices.SortStableFunc(byFree, func(a, b int) int { return cmp.Compare(gpus[b].free, gpus[a].free) })
	set := byFree[:k]
	slices.Sort(set)
	try(set)
	return best
}

// maxExhaustive bounds the GPUs whose every k-subset bestSet scores:
// C(16,8) = 12870 sets.
const maxExhaustive = 16

// combinations calls f with every k-subset of items, in lexicographic order
// of positions. f must not keep the slice.
func combinations(items []int, k int, f func([]int)) {
	if k <= 0 || k > len(items) {
		return
	}
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	set := make([]int, k)
	for {
		for i, j := range idx {
			set[i] = items[j]
		}
		f(set)
		i := k - 1
		for i >= 0 && idx[i] == len(items)-k+i {
			i--
		}
		if i < 0 {
			return
		}
		idx[i]++
		for j := i + 1; j < k; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
}

// worstPCIe is the farthest PCIe path between two GPUs of the set;
// PCIeBoard for one GPU.
func worstPCIe(gpus []gpuState, set []int) PCIeLevel {
	worst := PCIeBoard
	for _, a := range set {
		for _, b := range set {
			if a == b {
				continue
			}
			l, ok := gpus[a].dev.PCIe[gpus[b].dev.UUID]
			if !ok {
				l = PCIeUnknown
			}
			worst = max(worst, l)
		}
	}
	return worst
}

// split divides bytes over the set in proportion to each GPU's free memory
// less the overhead; the last GPU takes the rounding remainder.
func split(gpus []gpuState, set []int, bytes, oh int64) []int64 {
	var total int64
	for _, i := range set {
		total += gpus[i].free - oh
	}
	out := make([]int64, len(set))
	var given int64
	for k, i := range set {
		if k == len(set)-1 {
			out[k] = bytes - given
			break
		}
		out[k] = int64(float64(bytes) * float64(gpus[i].free-oh) / float64(total))
		given += out[k]
	}
	return out
}

// assign charges the GPUs of set with parts (plus one overhead each) and
// returns the assignment.
func assign(gpus []gpuState, r Request, set []int, parts []int64, layers int) *Assignment {
	oh := r.overhead()
	share := min(r.share(), 1)
	a := &Assignment{Replica: r.Replica, Share: share, GPULayers: layers}
	var total float64
	for _, p := range parts {
		total += float64(p)
	}
	for k, i := range set {
		g := &gpus[i]
		g.free -= parts[k] + oh
		g.share += share
		a.GPUs = append(a.GPUs, g.dev.UUID)
		a.Indices = append(a.Indices, g.dev.Index)
		a.Bytes = append(a.Bytes, parts[k]+oh)
		if len(set) > 1 {
			p := float32(1) / float32(len(set))
			if total > 0 {
				p = float32(float64(parts[k]) / total)
			}
			a.TensorSplit = append(a.TensorSplit, p)
		}
	}
	return a
}

// shortfall describes why r fits nowhere: the most memory it could get.
func shortfall(gpus []gpuState, r Request) *ShortfallError {
	e := &ShortfallError{Replica: r.Replica, Model: r.Bytes, Overhead: r.overhead()}
	if r.share() < 1 {
		for _, g := range gpus {
			if g.share+r.share() <= 1+shareEps && (e.GPUs == 0 || g.free > e.Free) {
				e.GPUs, e.Free = 1, g.free
			}
		}
		if e.GPUs == 0 {
			e.Reason = fmt.Sprintf("no GPU has %v of its share left", r.share())
		}
		return e
	}
	for _, g := range gpus {
		if g.share == 0 {
			e.GPUs++
			e.Free += g.free
		}
	}
	if e.GPUs == 0 {
		e.Reason = "every GPU is already taken"
	} else if need := int(r.share()); e.GPUs < need {
		e.Reason = fmt.Sprintf("asks for %d GPUs, %d are left", need, e.GPUs)
	}
	return e
}
