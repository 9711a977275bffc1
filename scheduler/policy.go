package scheduler

import (
	"cmp"
	"slices"
	"time"
)

// SeqView is what the step planner knows of a sequence. It is a plain value
// so the planner is a pure function, tested without a model.
type SeqView struct {
	ID       int
	Priority int           // lower runs first
	Arrival  uint64        // admission order of the request (FCFS)
	Waited   time.Duration // time since the request arrived
	Running  bool          // holds a KV slot
	Pending  int           // tokens to evaluate before the next sample
	Slots    int           // slots it needs when admitted (n of the request)
	// Group is the sequence's adapter set (0: the base model). The engine
	// applies one adapter set to a whole step, so a step serves one group.
	Group int
}

// Limits bound one step.
type Limits struct {
	TokenBudget int // tokens per engine step
	Chunk       int // most prompt tokens one sequence gets per step
	FreeSlots   int // slots free for new sequences
	FreeCells   int // KV cells free (counting evictable cached entries)
	// AgingAfter: a sequence that waited this long is served before all
	// others of lower urgency, so none starves (0: never).
	AgingAfter time.Duration
	// Step numbers the step being planned; LastRun is the step at which
	// each group last ran (or got work, if it has not run since). A group
	// missing from LastRun counts as having got work now.
	Step    uint64
	LastRun map[int]uint64
}

// Item is one sequence's share of a step.
type Item struct {
	ID     int
	Tokens int
	Admit  bool // the sequence needs a KV slot first
}

// Plan is one engine step.
type Plan struct {
	Items []Item
	// Preempt names one running sequence to evict before planning again,
	// when the running sequences' next tokens do not fit in the KV cache.
	Preempt int
	// HasPreempt tells whether Preempt is set.
	HasPreempt bool
	// Group is the adapter set every item of the step belongs to.
	Group int
}

// Schedule plans one step, in the manner of vLLM's v1 scheduler: every
// sequence catches up on its pending tokens; there are no prefill or
// decode modes.
//
//  1. Running sequences with one pending token (decoding) come first, each
//     with its token, most urgent first. If their tokens do not fit in the
//     free KV cells, the least urgent running sequence is preempted.
//  2. The rest of the token budget goes to prompt chunks of running and
//     waiting sequences, by urgency: priority, then fewest chunks still to
//     prefill (shortest remaining first, so a short request arriving behind
//     long prompts gets its first token in the next step), then arrival.
//     Each gets at most Chunk tokens. Aging bounds how long a long prompt
//     can be passed over.
//  3. A waiting sequence is admitted only if a slot is free and the KV cache
//     can hold its whole pending prompt; the first that cannot be admitted
//     stops further admissions, so big requests are not starved by small.
//
// With sequences of several groups (adapter sets), a step serves one
// group: its decodes and, riding with them, its prompt chunks. The group
// is picked by groupOrder (urgency, size, fairness); a group whose
// sequences cannot run (no slot or cells to admit them) passes its turn to
// the next.
func Schedule(seqs []SeqView, lim Limits) Plan {
	groups := map[int][]SeqView{}
	for _, s := range seqs {
		if s.Pending > 0 {
			groups[s.Group] = append(groups[s.Group], s)
		}
	}
	for _, g := range groupOrder(groups, lim) {
		p := planGroup(groups[g], seqs, lim)
		if len(p.Items) > 0 || p.HasPreempt {
			p.Group = g
			return p
		}
	}
	return Plan{}
}

// groupOrder ranks the groups with work for this step. Every group has a
// deadline: G steps after it last ran (or got work), G the number of
// groups with work. The preferred group is the most urgent (holding an
// aged sequence, then the lowest priority number), then the largest (most
// sequences: one step of a bigger batch serves more tokens for the same
// pass over the weights), then the one that waited longest; but it is
// taken only if every other group can still run by its deadline when the
// groups run one per step in deadline order after it. So a group with work
// runs at least once every G steps; when every group is busy this is round
// robin, and urgency and size decide whenever there is slack.
func groupOrder(groups map[int][]SeqView, lim Limits) []int {
	type info struct {
		id       int
		aged     bool
		priority int
		size     int
		last     uint64
	}
	infos := make([]info, 0, len(groups))
	for id, ss := range groups {
		in := info{id: id, priority: ss[0].Priority, size: len(ss), last: lim.Step}
		if l, ok := lim.LastRun[id]; ok {
			in.last = l
		}
		for _, s := range ss {
			in.aged = in.aged || (lim.AgingAfter > 0 && s.Waited >= lim.AgingAfter)
			in.priority = min(in.priority, s.Priority)
		}
		infos = append(infos, in)
	}
	g := uint64(len(infos))
	byDeadline := slices.Clone(infos)
	slices.SortFunc(byDeadline, func(a, b info) int {
		if a.last != b.last {
			return cmp.Compare(a.last, b.last)
		}
		return cmp.Compare(a.id, b.id)
	})
	slices.SortFunc(infos, func(a, b info) int {
		switch {
		case a.aged != b.aged:
			if a.aged {
				return -1
			}
			return 1
		case a.priority != b.priority:
			return cmp.Compare(a.priority, b.priority)
		case a.size != b.size:
			return cmp.Compare(b.size, a.size)
		case a.last != b.last:
			return cmp.Compare(a.last, b.last)
		}
		return cmp.Compare(a.id, b.id)
	})
	// feasible: after x runs now, the others, one per step in deadline
	// order, all meet their deadlines (last + G).
	feasible := func(x info) bool {
		j := uint64(0)
		for _, o := range byDeadline {
			if o.id == x.id {
				continue
			}
			j++
			if o.last+g < lim.Step+j {
				return false
			}
		}
		return true
	}
	order := make([]int, 0, len(infos))
	taken := map[int]bool{}
	for _, in := range infos {
		if feasible(in) {
			order = append(order, in.id)
			taken[in.id] = true
		}
	}
	for _, in := range byDeadline {
		if !taken[in.id] {
			order = append(order, in.id)
		}
	}
	return order
}

// planGroup plans a step of one group's sequences; all are every sequence
// (a running one of any group may be preempted to make room).
func planGroup(seqs, all []SeqView, lim Limits) Plan {
	var running, prefill []SeqView
	for _, s := range seqs {
		if s.Pending <= 0 {
			continue
		}
		if s.Running && s.Pending == 1 {
			running = append(running, s)
		} else {
			prefill = append(prefill, s)
		}
	}
	aged := func(s SeqView) bool { return lim.AgingAfter > 0 && s.Waited >= lim.AgingAfter }
	// first orders by what always comes first: aged sequences, then
	// priority (lower first).
	first := func(a, b SeqView) int {
		if x, y := aged(a), aged(b); x != y {
			if x {
				return -1
			}
			return 1
		}
		return a.Priority - b.Priority
	}
	urgent := func(a, b SeqView) int {
		if c := first(a, b); c != 0 {
			return c
		}
		if a.Arrival < b.Arrival {
			return -1
		}
		if a.Arrival > b.Arrival {
			return 1
		}
		return a.ID - b.ID
	}
	slices.SortFunc(running, urgent)
	cells := lim.FreeCells
	budget := lim.TokenBudget
	var plan Plan
	// Decoding sequences that will run this step; the cells they need.
	need := min(len(running), budget)
	if need > cells {
		// The least urgent running sequence (decoding or prefilling, of
		// any group) goes.
		var victims []SeqView
		for _, s := range all {
			if s.Running && s.Pending > 0 {
				victims = append(victims, s)
			}
		}
		slices.SortFunc(victims, urgent)
		plan.Preempt, plan.HasPreempt = victims[len(victims)-1].ID, true
		return plan
	}
	for _, s := range running[:need] {
		plan.Items = append(plan.Items, Item{ID: s.ID, Tokens: 1})
	}
	cells -= need
	budget -= need
	chunk := max(1, lim.Chunk)
	slices.SortFunc(prefill, func(a, b SeqView) int {
		if c := first(a, b); c != 0 {
			return c
		}
		if ra, rb := (a.Pending+chunk-1)/chunk, (b.Pending+chunk-1)/chunk; ra != rb {
			return ra - rb
		}
		return urgent(a, b)
	})
	slots := lim.FreeSlots
	admitting := true
	for _, s := range prefill {
		if budget == 0 {
			break
		}
		n := min(s.Pending, chunk, budget)
		if !s.Running {
			if !admitting {
				continue
			}
			if s.Slots > slots || s.Pending > cells {
				admitting = false
				continue
			}
			slots -= s.Slots
			cells -= s.Pending // reserve the whole prompt
		} else {
			if n > cells {
				n = cells
			}
			if n == 0 {
				continue
			}
			cells -= n
		}
		plan.Items = append(plan.Items, Item{ID: s.ID, Tokens: n, Admit: !s.Running})
		budget -= n
	}
	return plan
}
