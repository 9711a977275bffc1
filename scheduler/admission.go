package scheduler

import (
	"context"
	"fmt"
	"time"
)

// Submit queues a request. It returns at once: an *InvalidRequestError for
// a request that can never run, an *OverloadError when the queue is full or
// the predicted wait exceeds the deadline, or a Stream of events. Cancelling
// ctx (or Stream.Close) abandons the request.
func (s *Scheduler) Submit(ctx context.Context, r Request) (*Stream, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.validate(&r); err != nil {
		return nil, err
	}
	samplers := make([]Sampler, r.N)
	for i := range samplers {
		p := r.Sampling
		p.Seed += uint32(i) // independent choices
		sm, err := s.be.newSampler(p)
		if err != nil {
			closeAll(samplers[:i])
			return nil, invalid("sampling", "%v", err)
		}
		samplers[i] = sm
	}
	now := time.Now()
	deadline := r.Deadline
	if deadline.IsZero() {
		deadline = now.Add(s.opts.QueueTimeout)
	}
	// Admission by tokens and time: predict the wait from the prompt tokens
	// queued ahead (less what the prefix cache is expected to supply) and
	// the measured prefill rate.
	cost := s.expectedPrefill(r.Adapter, r.Prompt)
	ahead := s.queuedTokens.Load()
	if rate := s.prefillRate.Load(); rate > 0 {
		wait := time.Duration(float64(ahead+cost) / rate * float64(time.Second))
		if now.Add(wait).After(deadline) {
			closeAll(samplers)
			s.reject()
			return nil, &OverloadError{Reason: fmt.Sprintf("predicted time to first token %v exceeds the deadline", wait.Round(time.Millisecond)), RetryAfter: max(time.Second, wait-deadline.Sub(now))}
		}
	}
	if s.waitingN.Load() >= int64(s.opts.MaxQueue) {
		closeAll(samplers)
		s.reject()
		return nil, &OverloadError{Reason: fmt.Sprintf("queue is full (%d requests)", s.opts.MaxQueue), RetryAfter: s.drainTime(ahead)}
	}
	rctx, cancel := context.WithCancel(ctx)
	req := &request{Request: r, ctx: rctx, stream: newStream(cancel), samplers: samplers, arrived: now, deadline: deadline, queued: cost}
	req.stopCancel = context.AfterFunc(rctx, s.poke)
	s.waitingN.Add(1)
	s.queuedTokens.Add(cost)
	select {
	case s.submit <- req:
	default:
		s.waitingN.Add(-1)
		s.queuedTokens.Add(-cost)
		req.stopCancel()
		cancel()
		closeAll(samplers)
		s.reject()
		return nil, &OverloadError{Reason: "queue is full", RetryAfter: s.drainTime(ahead)}
	}
	if s.closed.Load() {
		// Run may have exited between the check above and the send; it
		// drains the channel on exit, but make sure it notices.
		s.poke()
	}
	return req.stream, nil
}

// recentPrompts is how many submitted prompts expectedPrefill compares with.
const recentPrompts = 16

// expectedPrefill predicts how many of prompt's tokens will need computing:
// all of them, less a prefix of at least minSharedPrefix tokens shared with
// a recently submitted prompt of the same adapter (the prefix cache will
// supply it). It is a prediction for admission only; the cache itself
// decides at admission.
func (s *Scheduler) expectedPrefill(adapter string, prompt []int32) int64 {
	s.recentMu.Lock()
	defer s.recentMu.Unlock()
	best := 0
	for _, rp := range s.recent {
		if rp.adapter != adapter {
			continue
		}
		p := rp.tokens
		n := 0
		for n < len(p) && n < len(prompt)-1 && p[n] == prompt[n] {
			n++
		}
		best = max(best, n)
	}
	if len(s.recent) == recentPrompts {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:recentPrompts-1]
	}
	s.recent = append(s.recent, recentPrompt{adapter, prompt})
	if best < minSharedPrefix || !s.sharesPrefixes() {
		best = 0
	}
	return int64(len(prompt) - best)
}

func closeAll(samplers []Sampler) {
	for _, x := range samplers {
		x.Close()
	}
}

func (s *Scheduler) reject() {
	s.statsMu.Lock()
	s.stats.Rejected++
	s.statsMu.Unlock()
}

func (s *Scheduler) drainTime(tokens int64) time.Duration {
	if rate := s.prefillRate.Load(); rate > 0 {
		return max(time.Second, time.Duration(float64(tokens)/rate*float64(time.Second)))
	}
	return time.Second
}

func (s *Scheduler) validate(r *Request) error {
	if r.N == 0 {
		r.N = 1
	}
	switch {
	case len(r.Prompt) == 0:
		return invalid("prompt", "the prompt is empty")
	case len(r.Prompt) >= s.seqCells:
		return &InvalidRequestError{Param: "prompt", Code: "context_length_exceeded", Message: fmt.Sprintf("the prompt has %d tokens, but this model's context holds %d (the prompt and at least one generated token must fit)", len(r.Prompt), s.seqCells)}
	case r.N < 1 || r.N > s.opts.Parallel:
		return invalid("n", "n must be between 1 and %d, got %d", s.opts.Parallel, r.N)
	case r.MaxTokens < 0:
		return invalid("max_tokens", "max_tokens must not be negative, got %d", r.MaxTokens)
	case r.TopLogprobs < 0 || r.TopLogprobs > 20:
		return invalid("top_logprobs", "top_logprobs must be between 0 and 20, got %d", r.TopLogprobs)
	}
	for i, t := range r.Prompt {
		if !s.vocab.ValidToken(t) {
			return invalid("prompt", "prompt token %d at index %d is not in the vocabulary (0..%d)", t, i, s.vocab.VocabSize()-1)
		}
	}
	if r.Adapter != "" {
		if _, ok := s.adapterSpec(r.Adapter); !ok {
			return invalid("model", "adapter %q is not known to this model", r.Adapter)
		}
	}
	for _, st := range r.Stop {
		if st == "" {
			return invalid("stop", "stop strings must not be empty")
		}
	}
	return nil
}
