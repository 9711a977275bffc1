package scheduler

import (
	"time"
)

// fail ends every unfinished choice of r with reason and err.
func (s *Scheduler) fail(r *request, reason FinishReason, err error) {
	for _, q := range r.seqs {
		if !q.done {
			r.usage.WastedTokens += q.computed
			s.finish(q, reason, err, false)
		}
	}
	if !r.forked && r.N > 1 {
		// Choices that never forked end too.
		for i := len(r.seqs); i < r.N; i++ {
			s.endChoice(r, i, reason, err)
		}
		r.forked = true
	}
	s.maybeComplete(r)
}

// finish marks q done and frees its slot. keep caches its KV cells.
func (s *Scheduler) finish(q *seq, reason FinishReason, err error, keep bool) {
	if q.done {
		return
	}
	q.done = true
	if q.lease != nil {
		q.lease.Release(keep)
		q.lease = nil
	} else if q.req.scheduled.IsZero() && q.index == 0 {
		s.waitingN.Add(-1)
	}
	if q.req.firstToken.IsZero() && q.index == 0 {
		s.queuedTokens.Add(-q.req.queued)
	}
	delete(s.seqs, q.id)
	q.req.finished++
	if reason == FinishCancelled || reason == FinishError {
		s.emit(q.req.stream, Event{Index: q.index, Finish: reason, Err: err})
	}
}

// endChoice ends a choice that never got a sequence of its own.
func (s *Scheduler) endChoice(r *request, index int, reason FinishReason, err error) {
	s.emit(r.stream, Event{Index: index, Finish: reason, Err: err})
	r.finished++
}

// maybeComplete sends the final event once every choice of r has ended.
func (s *Scheduler) maybeComplete(r *request) {
	if r.finished < r.N || (r.N > 1 && !r.forked) {
		return
	}
	if _, ok := s.reqs[r]; !ok {
		return
	}
	delete(s.reqs, r)
	r.stopCancel()
	closeAll(r.samplers)
	end := time.Now()
	u := r.usage
	u.PromptTokens = len(r.Prompt)
	if !r.scheduled.IsZero() {
		u.Timings.Queued = r.scheduled.Sub(r.arrived)
		if !r.firstToken.IsZero() {
			u.Timings.Prefill = r.firstToken.Sub(r.scheduled)
			u.Timings.Decode = end.Sub(r.firstToken)
			u.Timings.TTFT = r.firstToken.Sub(r.arrived)
		}
	} else {
		u.Timings.Queued = end.Sub(r.arrived)
	}
	var err error
	if r.ctx.Err() != nil {
		err = r.ctx.Err()
	}
	s.emit(r.stream, Event{Final: true, Usage: &u, Err: err})
}
