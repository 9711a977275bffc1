package scheduler

import (
	"fmt"
	"time"

	"github.com/llmux/llmux/engine"
)

// emit queues an event for a request's consumer.
func (s *Scheduler) emit(st *Stream, ev Event) {
	st.push(ev)
	s.touched[st] = struct{}{}
}

// handOff waits (up to Options.Handoff) for the consumers of this step's
// events to take them.
func (s *Scheduler) handOff() {
	if s.opts.Handoff < 0 || len(s.touched) == 0 {
		clear(s.touched)
		return
	}
	h := newHandoff()
	for st := range s.touched {
		st.awaitTake(h)
	}
	clear(s.touched)
	h.take()
	if s.handoffT == nil {
		s.handoffT = time.NewTimer(s.opts.Handoff)
	} else {
		s.handoffT.Reset(s.opts.Handoff)
	}
	select {
	case <-h.done:
		s.handoffT.Stop()
	case <-s.handoffT.C:
		s.counters.HandoffTimeouts++
	}
}

// sample draws the next token of q (and, when q has just finished the
// prompt of an n > 1 request, of its forks too).
func (s *Scheduler) sample(q *seq) {
	r := q.req
	targets := []*seq{q}
	if q.index == 0 && !r.forked && r.N > 1 {
		r.forked = true
		for i := 1; i < r.N; i++ {
			lease, err := q.lease.Fork(q.computed)
			if err != nil {
				s.endChoice(r, i, FinishError, fmt.Errorf("no slot for choice %d: %w", i, err))
				continue
			}
			f := s.newSeq(r, i, append([]int32(nil), q.tokens...))
			f.lease, f.computed, f.row = lease, q.computed, q.row
			r.seqs = append(r.seqs, f)
			targets = append(targets, f)
		}
	}
	now := time.Now()
	if r.firstToken.IsZero() {
		r.firstToken = now
		s.queuedTokens.Add(-r.queued)
	}
	for _, t := range targets {
		s.sampleOne(t)
	}
}

func (s *Scheduler) sampleOne(q *seq) {
	r := q.req
	var logits []float32
	if r.Logprobs || r.TopLogprobs > 0 {
		logits = s.ctx.Logits(q.row)
	}
	tok, err := q.sampler.Sample(s.ctx, q.row)
	if err != nil {
		s.finish(q, FinishError, fmt.Errorf("sampling: %w", err), true)
		s.maybeComplete(r)
		return
	}
	s.counters.GeneratedTokens++
	if s.vocab.IsEOG(tok) && !r.IgnoreEOS {
		s.flushText(q, FinishStop)
		s.maybeComplete(r)
		return
	}
	q.tokens = append(q.tokens, tok)
	q.generated++
	r.usage.CompletionTokens++
	info := TokenInfo{ID: tok, Piece: s.vocab.Piece(tok)}
	if logits != nil {
		info.Logprob, info.Top = engine.LogProbs(logits, tok, r.TopLogprobs)
	}
	text := string(q.detok.Add(nil, info.Piece))
	out, hit := q.stop.push(text)
	ev := Event{Index: q.index, Text: out, Tokens: []TokenInfo{info}}
	switch {
	case hit:
		ev.Finish = FinishStop
	case (r.MaxTokens > 0 && q.generated >= r.MaxTokens) || len(q.tokens) >= s.seqCells:
		tail, stopped := q.stop.push(string(q.detok.Flush(nil)))
		if !stopped {
			tail += q.stop.flush()
		}
		ev.Text += tail
		ev.Finish = FinishLength
		if stopped {
			ev.Finish = FinishStop
		}
	}
	s.emit(r.stream, ev)
	if ev.Finish != "" {
		s.finish(q, ev.Finish, nil, true)
		s.maybeComplete(r)
	}
}

// flushText ends q, emitting whatever text is still held back (short of a
// stop string).
func (s *Scheduler) flushText(q *seq, reason FinishReason) {
	text, stopped := q.stop.push(string(q.detok.Flush(nil)))
	if !stopped {
		text += q.stop.flush()
	}
	s.emit(q.req.stream, Event{Index: q.index, Text: text, Finish: reason})
	s.finish(q, reason, nil, true)
}
