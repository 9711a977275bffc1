package scheduler

import (
	"context"
	"io"
	"sync"
	"time"
)

// Stream delivers a request's events. The scheduler never blocks on it:
// events queue in an outbox that the consumer drains with Recv, however
// slow the consumer is.
type Stream struct {
	mu     sync.Mutex // guards events and done
	events []Event
	done   bool // the final event is queued
	wake   chan struct{}
	cancel context.CancelFunc
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
func (s *Stream) Close() { s.cancel() }
