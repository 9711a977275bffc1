package scheduler

import (
	"context"
	"time"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/kvcache"
)

// request is a submitted Request with its stream and sequences.
type request struct {
	Request
	ctx        context.Context
	stream     *Stream
	stopCancel func() bool
	seqs       []*seq // seqs[0] prefills the prompt; the rest fork from it
	samplers   []Sampler
	forked     bool
	finished   int
	arrival    uint64
	arrived    time.Time
	deadline   time.Time
	queued     int64 // its share of queuedTokens until its first token
	scheduled  time.Time
	firstToken time.Time
	usage      Usage
	group      int // adapter group (0: the base model)
}

// seq is one choice of a request.
type seq struct {
	id        int
	req       *request
	group     int // the request's adapter group: its KV namespace and its steps
	index     int
	tokens    []int32 // prompt, then generated tokens
	computed  int     // tokens in the KV cache
	generated int
	lease     *kvcache.Lease
	sampler   Sampler
	detok     engine.Detokenizer
	stop      stopMatcher
	row       int // batch row with this seq's logits in the current step, or -1
	done      bool
}

func (q *seq) pending() int { return len(q.tokens) - q.computed }

// Run is the scheduler loop. It returns when ctx ends, after failing every
// request still queued or running.
func (s *Scheduler) Run(ctx context.Context) error {
	defer close(s.done)
	defer s.shutdown()
	for {
		s.drainSubmit()
		s.reap()
		if !s.hasWork() {
			s.publish()
			clear(s.touched) // events of failures and cancellations: nobody to wait for
			select {
			case r := <-s.submit:
				s.add(r)
			case <-s.wake:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		s.step()
	}
}

func (s *Scheduler) shutdown() {
	s.closed.Store(true)
	s.drainSubmit()
	for r := range s.reqs {
		s.fail(r, FinishError, ErrClosed)
	}
}

func (s *Scheduler) drainSubmit() {
	for {
		select {
		case r := <-s.submit:
			s.add(r)
		default:
			return
		}
	}
}

func (s *Scheduler) add(r *request) {
	s.arrivals++
	r.arrival = s.arrivals
	g, err := s.group(r.Adapter)
	r.group = g
	q := s.newSeq(r, 0, append([]int32(nil), r.Prompt...))
	r.seqs = []*seq{q}
	s.reqs[r] = struct{}{}
	s.counters.PromptTokens += int64(len(r.Prompt))
	if err != nil {
		s.fail(r, FinishError, err)
	}
}

func (s *Scheduler) newSeq(r *request, index int, tokens []int32) *seq {
	s.nextID++
	q := &seq{id: s.nextID, req: r, group: r.group, index: index, tokens: tokens, sampler: r.samplers[index], row: -1}
	q.stop.stops = r.Stop
	s.seqs[q.id] = q
	return q
}

func (s *Scheduler) hasWork() bool { return len(s.seqs) > 0 }

// reap drops cancelled requests and requests that waited past their
// deadline without being scheduled.
func (s *Scheduler) reap() {
	now := time.Now()
	for r := range s.reqs {
		switch {
		case r.ctx.Err() != nil:
			s.counters.Cancelled++
			s.fail(r, FinishCancelled, r.ctx.Err())
		case r.scheduled.IsZero() && now.After(r.deadline):
			s.fail(r, FinishError, &OverloadError{Reason: "request waited in the queue past its deadline", RetryAfter: s.drainTime(s.queuedTokens.Load())})
		}
	}
}

// preempt frees q's KV slot and queues it for recomputation. Its output so
// far stays; it resumes where it stopped.
func (s *Scheduler) preempt(q *seq) {
	s.counters.Preemptions++
	q.req.usage.Preemptions++
	q.req.usage.WastedTokens += q.computed
	q.lease.Release(true) // its cells stay cached unless space is needed
	q.lease = nil
	q.computed = 0
	s.opts.Logger.Debug("scheduler: preempted", "request", q.req.ID, "choice", q.index, "tokens", len(q.tokens))
}

func (s *Scheduler) leastUrgentRunning() *seq {
	var v *seq
	for _, q := range s.seqs {
		if q.lease == nil {
			continue
		}
		if v == nil || q.req.Priority > v.req.Priority || (q.req.Priority == v.req.Priority && q.req.arrival > v.req.arrival) {
			v = q
		}
	}
	return v
}
