package scheduler

import (
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
func Schedule(seqs []SeqView, lim Limits) Plan {
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
		// The least urgent running sequence (decoding or prefilling) goes.
		all := append([]SeqView(nil), running...)
		for _, s := range prefill {
			if s.Running {
				all = append(all, s)
			}
		}
		slices.SortFunc(all, urgent)
		plan.Preempt, plan.HasPreempt = all[len(all)-1].ID, true
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
