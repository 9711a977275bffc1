package multiplex

import (
	"fmt"
	"sort"
	"time"
)

// SwapPolicy chooses how PlanSwaps trades waiting time against reloads.
type SwapPolicy string

const (
	// SwapAware (the default) batches demand for a cold model into one
	// swap: an idle model is kept a short grace for its next request while
	// other requests run, busy models are only drained once the waiting
	// model has waited MaxSwapWait, and victims are chosen by what
	// reloading them would cost.
	SwapAware SwapPolicy = "swap-aware"
	// SwapLRU evicts (or drains, when busy) the least recently used model
	// as soon as another does not fit, like other multi-model servers.
	SwapLRU SwapPolicy = "lru"
)

// Defaults callers may use for SwapInput when the operator sets nothing.
const (
	// DefaultMinResidency caps how long an idle model is kept for its
	// next request while another model waits for its place.
	DefaultMinResidency = 5 * time.Second
	// DefaultMaxSwapWait is how long a waiting model waits before busy
	// models are drained and idle ones lose their grace for it.
	DefaultMaxSwapWait = 20 * time.Second
)

// ParseSwapPolicy parses a --swap-policy value; "" means SwapAware.
func ParseSwapPolicy(s string) (SwapPolicy, error) {
	switch SwapPolicy(s) {
	case "", SwapAware:
		return SwapAware, nil
	case SwapLRU:
		return SwapLRU, nil
	}
	return "", fmt.Errorf("swap policy %q: want %q or %q", s, SwapAware, SwapLRU)
}

// ResidentModel is a base model that holds memory: loaded or loading.
type ResidentModel struct {
	Name     string
	Bytes    int64         // memory it holds (weights + KV)
	LoadedAt time.Time     // when its load finished
	LastUsed time.Time     // last request admitted or finished
	InFlight int           // requests running on it (never evict while > 0)
	LoadTime time.Duration // measured duration of its load
	Pinned   bool          // never evicted
	Loading  bool          // a load is under way (occupies its place; not evictable)
	Draining bool          // already told to drain
}

// WaitingModel is a base model that is not resident but has queued
// requests.
type WaitingModel struct {
	Name     string
	Bytes    int64         // estimated memory
	Requests int           // queued requests for it
	Since    time.Time     // arrival of its oldest queued request
	LoadTime time.Duration // expected load time (last measured, or an estimate)
}

// SwapInput is everything PlanSwaps decides on.
type SwapInput struct {
	Now          time.Time
	Policy       SwapPolicy    // "": SwapAware
	MaxModels    int           // 0: unbounded
	MemoryBudget int64         // 0: unbounded
	MinResidency time.Duration // swap-aware: cap on the idle grace (0: none; see PlanSwaps)
	MaxSwapWait  time.Duration // swap-aware: after this wait busy models are drained (0: at once)
	Resident     []ResidentModel
	Waiting      []WaitingModel
}

// SwapPlan is what the pool should do now. Load and TooLarge are in
// decision order (waiting models oldest Since first, ties by Name); Evict
// and Drain are sorted by Name.
type SwapPlan struct {
	Load     []string // start loading now (fits once Evict is done)
	Evict    []string // unload now (idle, not pinned, not loading)
	Drain    []string // stop admitting new requests; evict once idle
	TooLarge []string // can never fit (bigger than the budget even with every unpinned model gone)
}

// Empty reports whether the plan asks for nothing.
func (p SwapPlan) Empty() bool {
	return len(p.Load) == 0 && len(p.Evict) == 0 && len(p.Drain) == 0 && len(p.TooLarge) == 0
}

// PlanSwaps decides which waiting models to load and which resident ones
// to evict or drain for them. It is a pure function of its input; the
// caller applies the plan and calls it again whenever something changes
// (a request arrives or finishes, a load completes, time passes).
//
// Both policies: models already draining are evicted as soon as they are
// idle; a waiting model is loaded at most once, and only while no resident
// copy exists; waiting models are served oldest first; pinned and loading
// models are never victims, busy ones are drained rather than evicted, and
// models already draining count as going away before new victims are
// chosen. Victims are as few as fit the waiting model.
//
// Swap-aware: residency is protected only while a model has demand. An
// idle model is a victim at once unless it is within its idle grace: used
// less than min(LoadTime, MinResidency) ago while requests run on the other
// resident models (see idleGrace). Holding a model nobody uses only makes
// the waiting requests wait, so the time since its load does not matter.
// Busy models are drained only once the waiting model has waited
// MaxSwapWait, which also ends the grace; until then the waiting model
// waits and its requests pile up for one swap. Idle victims come before
// busy ones; idle ones are ordered by the value of keeping them, LoadTime
// / idle time, lowest first, busy ones fewest requests in flight first
// (they drain soonest and turn the fewest requests away), then by that
// value.
//
// LRU victims are chosen at once, least recently used first.
func PlanSwaps(in SwapInput) SwapPlan {
	p := newPlanner(in)
	p.evictIdleDraining()
	for _, w := range sortedWaiting(in.Waiting) {
		p.consider(w)
	}
	sort.Strings(p.plan.Evict)
	sort.Strings(p.plan.Drain)
	return p.plan
}

// slot is a resident model as the plan sees it.
type slot struct {
	ResidentModel
	evicted  bool // evicted by this plan
	draining bool // draining before or because of this plan
	claimed  bool // its going away is counted for a waiting model of this plan
}

// planner holds the state of one PlanSwaps call.
type planner struct {
	in          SwapInput
	slots       []slot
	present     map[string]bool // resident names
	planned     map[string]bool // waiting names already decided on
	occupied    int             // slots counted against MaxModels
	used        int64           // bytes counted against MemoryBudget
	pinnedCount int
	pinnedBytes int64
	plan        SwapPlan
}

// newPlanner copies the resident set, sorted by name so that the plan does
// not depend on the caller's order.
func newPlanner(in SwapInput) *planner {
	p := &planner{in: in, present: map[string]bool{}, planned: map[string]bool{}}
	p.slots = make([]slot, len(in.Resident))
	for i, r := range in.Resident {
		p.slots[i] = slot{ResidentModel: r, draining: r.Draining}
	}
	sort.SliceStable(p.slots, func(i, j int) bool { return p.slots[i].Name < p.slots[j].Name })
	for _, s := range p.slots {
		p.present[s.Name] = true
		p.occupied++
		p.used += s.Bytes
		if s.Pinned {
			p.pinnedCount++
			p.pinnedBytes += s.Bytes
		}
	}
	return p
}

// sortedWaiting orders waiting models oldest first, ties by name.
func sortedWaiting(ws []WaitingModel) []WaitingModel {
	out := append([]WaitingModel(nil), ws...)
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// evictIdleDraining evicts every draining model that has become idle.
func (p *planner) evictIdleDraining() {
	for i := range p.slots {
		s := &p.slots[i]
		if s.draining && s.InFlight <= 0 && !s.Pinned && !s.Loading {
			p.evict(i)
		}
	}
}

// evict removes slot i from the resident set.
func (p *planner) evict(i int) {
	s := &p.slots[i]
	s.evicted = true
	p.occupied--
	p.used -= s.Bytes
	p.plan.Evict = append(p.plan.Evict, s.Name)
}

// fits reports whether w fits once freeN slots and freeBytes are released.
func (p *planner) fits(w WaitingModel, freeN int, freeBytes int64) bool {
	if p.in.MaxModels > 0 && p.occupied-freeN+1 > p.in.MaxModels {
		return false
	}
	if p.in.MemoryBudget > 0 && p.used-freeBytes+w.Bytes > p.in.MemoryBudget {
		return false
	}
	return true
}

// tooLarge reports whether w cannot fit even with every unpinned model
// gone.
func (p *planner) tooLarge(w WaitingModel) bool {
	if p.in.MaxModels > 0 && p.pinnedCount+1 > p.in.MaxModels {
		return true
	}
	return p.in.MemoryBudget > 0 && p.pinnedBytes+w.Bytes > p.in.MemoryBudget
}

// consider decides on one waiting model.
func (p *planner) consider(w WaitingModel) {
	if w.Requests <= 0 || p.present[w.Name] || p.planned[w.Name] {
		return
	}
	p.planned[w.Name] = true
	if p.tooLarge(w) {
		p.plan.TooLarge = append(p.plan.TooLarge, w.Name)
		return
	}
	if p.fits(w, 0, 0) {
		p.load(w)
		return
	}
	picked, ok := p.pickVictims(w, p.candidates(w))
	if !ok {
		return // wait: its requests pile up until victims become eligible
	}
	waitForDrain := false
	for _, i := range picked {
		s := &p.slots[i]
		switch {
		case s.draining:
			s.claimed = true
			waitForDrain = true
		case s.InFlight <= 0:
			p.evict(i)
		default:
			s.draining, s.claimed = true, true
			p.plan.Drain = append(p.plan.Drain, s.Name)
			waitForDrain = true
		}
	}
	if !waitForDrain && p.fits(w, 0, 0) {
		p.load(w)
	}
}

// load plans loading w now.
func (p *planner) load(w WaitingModel) {
	p.occupied++
	p.used += w.Bytes
	p.plan.Load = append(p.plan.Load, w.Name)
}

// candidates lists the slots that may make room for w, in the order they
// should be used: unclaimed draining models first (they are going anyway),
// then the victims the policy allows now, preferred first.
func (p *planner) candidates(w WaitingModel) []int {
	var draining, idle, busy []int
	waited := p.in.Now.Sub(w.Since)
	lru := p.in.Policy == SwapLRU
	for i, s := range p.slots {
		switch {
		case s.evicted || s.Pinned || s.Loading:
		case s.draining:
			if !s.claimed {
				draining = append(draining, i)
			}
		case lru:
			idle = append(idle, i) // one list: LRU does not prefer idle models
		case s.InFlight <= 0:
			if p.in.Now.Sub(s.LastUsed) >= p.idleGrace(s) || waited >= p.in.MaxSwapWait {
				idle = append(idle, i)
			}
		case waited >= p.in.MaxSwapWait:
			busy = append(busy, i)
		}
	}
	less := p.keepLess
	if lru {
		less = p.lruLess
	}
	sort.SliceStable(idle, func(a, b int) bool { return less(idle[a], idle[b]) })
	sort.SliceStable(busy, func(a, b int) bool {
		if x, y := p.slots[busy[a]].InFlight, p.slots[busy[b]].InFlight; x != y {
			return x < y
		}
		return less(busy[a], busy[b])
	})
	out := append(draining, idle...)
	return append(out, busy...)
}

// idleGrace is how long after its last use the idle s is kept for its
// next request while another model waits for its place.
//
// It is LoadTime(s), capped by MinResidency: the ski-rental break-even.
// Each moment s is kept costs the waiting requests that moment; evicting s
// costs a reload, LoadTime(s), to the next request for s. Keeping s until
// its idleness has cost as much as a reload, and no longer, is never worse
// than twice the better choice in hindsight (for one request each side).
//
// The grace applies only while requests run on the other resident models,
// where the next request for s is likely to come from (a client or agent
// that alternates between models sends its next request when its current
// one ends). When nothing runs anywhere else, every active client waits
// for a model that is not loaded and nobody can ask for s before that
// model is served: s has no demand, and keeping it would only add to the
// wait, so it goes at once.
func (p *planner) idleGrace(s slot) time.Duration {
	for _, o := range p.slots {
		if o.Name != s.Name && !o.evicted && o.InFlight > 0 {
			return min(s.LoadTime, p.in.MinResidency)
		}
	}
	return 0
}

// keepValue is what keeping s is worth: the load time a reload would cost
// per unit of time it has sat idle (at least 1ms).
func (p *planner) keepValue(s slot) float64 {
	idle := p.in.Now.Sub(s.LastUsed)
	if idle < time.Millisecond {
		idle = time.Millisecond
	}
	return float64(s.LoadTime) / float64(idle)
}

// keepLess orders slots lowest keep value first, then least recently
// used, then by name.
func (p *planner) keepLess(i, j int) bool {
	vi, vj := p.keepValue(p.slots[i]), p.keepValue(p.slots[j])
	if vi != vj {
		return vi < vj
	}
	return p.lruLess(i, j)
}

// lruLess orders slots least recently used first, then by name.
func (p *planner) lruLess(i, j int) bool {
	a, b := p.slots[i], p.slots[j]
	if !a.LastUsed.Equal(b.LastUsed) {
		return a.LastUsed.Before(b.LastUsed)
	}
	return a.Name < b.Name
}

// pickVictims takes candidates in order until w fits, then drops the
// fresh victims (not already draining) that turn out unnecessary, most
// valuable first. ok is false when all candidates together are not enough.
func (p *planner) pickVictims(w WaitingModel, cands []int) (picked []int, ok bool) {
	n, bytes := 0, int64(0)
	for _, i := range cands {
		picked = append(picked, i)
		n++
		bytes += p.slots[i].Bytes
		if p.fits(w, n, bytes) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, false
	}
	for k := len(picked) - 1; k >= 0; k-- {
		s := p.slots[picked[k]]
		if s.draining {
			continue
		}
		if p.fits(w, n-1, bytes-s.Bytes) {
			picked = append(picked[:k], picked[k+1:]...)
			n--
			bytes -= s.Bytes
		}
	}
	return picked, true
}
