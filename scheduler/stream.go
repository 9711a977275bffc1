package scheduler

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Stream delivers a request's events. The scheduler never blocks on it:
// events queue in an outbox that the consumer drains with Recv, however
// slow the consumer is.
type Stream struct {
	mu     sync.Mutex // guards events, done and taken
	events []Event
	done   bool     // the final event is queued
	taken  *handoff // the step waiting for the consumer to take its events
	wake   chan struct{}
	cancel context.CancelFunc
}

// handoff lets the scheduler wait, between two steps, until the consumers
// of the last step's events have taken them: a consumer that comes back to
// Recv with its outbox empty has handled (written) what it got. The
// scheduler holds one count itself until every stream is registered, so
// the count reaches zero exactly once.
type handoff struct {
	left atomic.Int32
	done chan struct{}
}

func newHandoff() *handoff {
	h := &handoff{done: make(chan struct{})}
	h.left.Store(1)
	return h
}

func (h *handoff) take() {
	if h.left.Add(-1) == 0 {
		close(h.done)
	}
}

// awaitTake registers the stream with h, unless its consumer has not yet
// taken an earlier step's events: a slow consumer is not waited for again
// until it catches up.
func (s *Stream) awaitTake(h *handoff) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken != nil || len(s.events) == 0 {
		return
	}
	h.left.Add(1)
	s.taken = h
}

// tookAll tells a waiting step that the consumer has taken everything.
// Called with s.mu held.
func (s *Stream) tookAll() {
	if s.taken != nil {
		s.taken.take()
		s.taken = nil
	}
}

func newStream(cancel context.CancelFunc) *Stream {
	return &Stream{wake: make(chan struct{}, 1), cancel: cancel}
}

func (s *Stream) push(ev Event) {
	ev.At = time.Now()
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.events = append(s.events, ev)
	if ev.Final {
		s.done = true
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Recv returns the next event. After the final event it returns io.EOF. It
// returns ctx's error if ctx ends first.
func (s *Stream) Recv(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if len(s.events) > 0 {
			ev := s.events[0]
			s.events[0] = Event{}
			s.events = s.events[1:]
			s.mu.Unlock()
			return ev, nil
		}
		done := s.done
		s.tookAll()
		s.mu.Unlock()
		if done {
			return Event{}, io.EOF
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Close abandons the request: the scheduler drops it at its next step and
// frees its KV cells. Safe to call more than once and after the end.
func (s *Stream) Close() {
	s.cancel()
	s.mu.Lock()
	s.tookAll()
	s.mu.Unlock()
}
