package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/llmux/llmux/engine"
)

// minSharedPrefix is the shortest common prefix worth waiting for.
const minSharedPrefix = 32

// followsLeader reports whether waiting sequence w shares a prompt prefix
// of at least minSharedPrefix tokens with a leader (a running sequence, or
// an earlier waiting one) that has not computed that prefix yet. Admitting
// w now would compute the prefix twice; held back until the leader has it,
// w copies it from the prefix cache instead.
func followsLeader(w *seq, leaders []*seq) bool {
	for _, q := range leaders {
		if q.group != w.group {
			continue // KV of another adapter set is of no use to w
		}
		// Only whether the common prefix reaches past both minSharedPrefix
		// and what q has computed matters, so the comparison stops there:
		// against waiting leaders it reads at most minSharedPrefix tokens.
		limit := min(len(w.tokens), len(q.tokens), max(minSharedPrefix, q.computed+1))
		n := 0
		for n < limit && w.tokens[n] == q.tokens[n] {
			n++
		}
		if n >= minSharedPrefix && q.computed < min(n, len(w.tokens)-1) {
			return true
		}
	}
	return false
}

// sharesPrefixes reports whether a sequence can start from another running
// sequence's prefix cells: with the prefix cache on, in the unified layout.
// Per slot, a prefix is reused only from a finished prompt left in a slot,
// so holding a request back behind a running one would only delay it.
func (s *Scheduler) sharesPrefixes() bool {
	return !s.opts.NoPrefixCache && s.opts.KVLayout == KVUnified
}

// views builds the planner's input, leaving out waiting sequences that
// should follow a leader's prefix.
func (s *Scheduler) views(now time.Time) ([]SeqView, int) {
	views := make([]SeqView, 0, len(s.seqs))
	used := 0
	var leaders, waiting []*seq
	for _, q := range s.seqs {
		switch {
		case q.lease == nil:
			waiting = append(waiting, q)
		case q.pending() > 1:
			leaders = append(leaders, q)
		}
	}
	hold := map[*seq]bool{}
	if s.sharesPrefixes() && (len(waiting) > 1 || len(leaders) > 0) {
		slices.SortFunc(waiting, func(a, b *seq) int { return cmp.Compare(a.id, b.id) })
		for _, w := range waiting {
			if followsLeader(w, leaders) {
				hold[w] = true
			} else {
				leaders = append(leaders, w)
			}
		}
	}
	for _, q := range s.seqs {
		if hold[q] {
			continue
		}
		slots := 1
		if q.lease != nil {
			used++
			if q.index == 0 && !q.req.forked {
				used += q.req.N - 1 // reserved for the forks
			}
		} else if q.index == 0 && !q.req.forked {
			slots = q.req.N
		}
		views = append(views, SeqView{
			ID: q.id, Priority: q.req.Priority, Arrival: q.req.arrival, Waited: now.Sub(q.req.arrived),
			Running: q.lease != nil, Pending: q.pending(), Slots: slots, Group: q.group,
		})
	}
	return views, used
}

// step plans, evaluates and samples once.
func (s *Scheduler) step() {
	now := time.Now()
	var plan Plan
	for {
		views, used := s.views(now)
		step := uint64(s.counters.Steps) + 1
		s.trackGroups(views, step)
		plan = Schedule(views, Limits{
			TokenBudget: s.opts.TokenBudget, Chunk: s.opts.Chunk, AgingAfter: s.opts.AgingAfter,
			FreeSlots: s.opts.Parallel - used, FreeCells: s.freeCells(),
			Step: step, LastRun: s.groupLast,
		})
		if !plan.HasPreempt {
			break
		}
		s.preempt(s.seqs[plan.Preempt])
	}
	if len(plan.Items) == 0 {
		// Nothing fits: wait for a change rather than spin.
		s.publish()
		select {
		case r := <-s.submit:
			s.add(r)
		case <-s.wake:
		case <-time.After(50 * time.Millisecond):
		}
		return
	}
	// Admit, then make room in the KV cache for this step's tokens.
	items := make([]work, 0, len(plan.Items))
	total := 0
	for _, it := range plan.Items {
		q := s.seqs[it.ID]
		if it.Admit {
			lease, err := s.cache.AcquireIn(q.group, q.tokens)
			if err != nil {
				// The planner counted the slots; this is a bug, but one that
				// must not take the server down.
				s.opts.Logger.Error("scheduler: acquire failed", "err", err)
				continue
			}
			q.lease, q.computed = lease, lease.Reused
			if q.index == 0 && q.generated == 0 {
				q.req.usage.CachedTokens = lease.Reused
			}
			if q.req.scheduled.IsZero() {
				q.req.scheduled = now
				s.waitingN.Add(-1)
			}
		}
		n := min(it.Tokens, q.pending())
		if n <= 0 {
			continue
		}
		items = append(items, work{q, q.computed, n})
		total += n
	}
	if !s.cache.EvictFor(total) {
		s.opts.Logger.Debug("scheduler: KV cache short of cells; decode may preempt", "need", total, "free", s.cache.Free())
	}
	if s.opts.KVLayout == KVPerSlot {
		// llama.cpp splits a batch over per-sequence KV streams into
		// micro-batches of consecutive, increasing sequence ids taken in
		// batch order; rows in slot order keep a step's sequences in as
		// few micro-batches (passes over the weights) as their slots allow.
		slices.SortFunc(items, func(a, b work) int { return cmp.Compare(a.q.lease.Slot, b.q.lease.Slot) })
	}
	if err := s.useGroup(plan.Group); err != nil {
		s.opts.Logger.Error("scheduler: set adapters failed", "err", err)
		for _, w := range items {
			s.fail(w.q.req, FinishError, fmt.Errorf("engine could not apply the adapter: %w", err))
		}
		return
	}
	ran := false
	if total == len(items) && s.split.shouldSplit(total) {
		// Single-token rows that the engine evaluates faster one at a
		// time (see splitter): still one step of the plan.
		for i := range items {
			if !s.evaluate(items[i : i+1]) {
				break
			}
			ran = true
		}
	} else {
		ran = s.evaluate(items)
	}
	if ran {
		s.counters.Steps++
		s.groupLast[plan.Group] = uint64(s.counters.Steps)
	}
	s.publish()
	s.handOff()
}

// work is one sequence's part of a step: n tokens from position from.
type work struct {
	q    *seq
	from int
	n    int
}

// evaluate runs items through the engine as one batch, then samples the
// sequences whose prompt or output it completed. It returns false when the
// batch did not run (the step should not go on).
func (s *Scheduler) evaluate(items []work) bool {
	total := 0
	s.batch.Clear()
	for i := range items {
		w := &items[i]
		total += w.n
		w.q.row = -1
		for j := 0; j < w.n; j++ {
			pos := w.from + j
			last := pos == len(w.q.tokens)-1
			row := s.batch.Add(w.q.tokens[pos], pos, last, w.q.lease.Slot)
			if last {
				w.q.row = row
			}
		}
	}
	if g := s.opts.Steps; g != nil {
		g.acquire(s.parker)
	}
	start := time.Now()
	err := s.ctx.Decode(s.batch)
	elapsed := time.Since(start)
	if g := s.opts.Steps; g != nil {
		g.release()
	}
	if errors.Is(err, engine.ErrNoKVSpace) {
		// Fragmented or short: preempt the least urgent running sequence
		// and plan again.
		if v := s.leastUrgentRunning(); v != nil {
			s.preempt(v)
		}
		return false
	}
	if err != nil {
		s.opts.Logger.Error("scheduler: decode failed", "err", err)
		for _, w := range items {
			s.fail(w.q.req, FinishError, fmt.Errorf("engine decode failed: %w", err))
		}
		return false
	}
	if total == len(items) {
		s.split.observe(total, elapsed)
	}
	prompt := 0
	for _, w := range items {
		w.q.lease.Append(w.q.tokens[w.from : w.from+w.n]...)
		w.q.computed += w.n
		if w.q.generated == 0 {
			prompt += w.n
		}
	}
	if prompt >= 32 {
		s.prefillRate.ewma(float64(total)/elapsed.Seconds(), 0.3)
	}
	for _, w := range items {
		if w.q.row >= 0 && !w.q.done {
			s.sample(w.q)
		}
	}
	return true
}

// freeCells is what the planner may spend: the shared pool's free and
// reclaimable cells. Per slot, a sequence never competes for cells (its
// length is capped at its stream), so only slots bound admission.
func (s *Scheduler) freeCells() int {
	if s.opts.KVLayout == KVPerSlot {
		return math.MaxInt32
	}
	return s.cache.Free() + s.cache.Reclaimable()
}
