package replica

import (
	"context"
	"fmt"
	"slices"

	"github.com/llmux/llmux/autoscale"
)

// Scaling a set: members join and leave while requests run. The set's mu
// guards the member list; each member's own mu guards its state, and a
// member's supervising goroutine (set.go) stops a retired member once it
// has drained.

// Autoscaling reports the autoscaler's last decision (nil without
// autoscaling).
func (s *Set) Autoscaling() *autoscale.Status {
	if s.auto == nil {
		return nil
	}
	st := s.auto.Status()
	return &st
}

// Scale asks for n replicas. Missing ones start (a replica being drained
// is taken back first); they take requests once they answer. Surplus ones
// are retired: those not serving (starting, restarting) stop at once; a
// ready one with the fewest requests in flight drains — it takes no new
// request, finishes those it has, then stops.
func (s *Set) Scale(n int) {
	n = max(n, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.target = n
	var active, draining []*member
	for _, m := range s.members {
		m.mu.Lock()
		retired, state := m.retired, m.state
		m.mu.Unlock()
		switch {
		case !retired && state != stateStopped:
			active = append(active, m)
		case retired && state == stateDraining:
			draining = append(draining, m)
		}
	}
	for len(active) < n && len(draining) > 0 {
		m := draining[0]
		draining = draining[1:]
		if m.undrain() {
			s.log.Info("replica taken back from draining", "replica", m.name)
			s.wake()
			active = append(active, m)
		}
	}
	for len(active) < n {
		m := s.newMember()
		s.members = append(s.members, m)
		if s.runCtx != nil {
			s.launch(m)
		}
		active = append(active, m)
	}
	if len(active) <= n {
		return
	}
	// Keep the ready replicas with the most requests in flight (those with
	// the fewest drain soonest), then the oldest.
	rank := func(m *member) (int, int) {
		m.mu.Lock()
		defer m.mu.Unlock()
		switch m.state {
		case stateReady:
			return 2, m.ongoing
		case stateStarting:
			return 1, 0
		}
		return 0, 0
	}
	slices.SortStableFunc(active, func(a, b *member) int {
		ra, oa := rank(a)
		rb, ob := rank(b)
		if ra != rb {
			return rb - ra
		}
		if oa != ob {
			return ob - oa
		}
		return a.index - b.index
	})
	for _, m := range active[n:] {
		s.retire(m)
	}
}

// newMember makes a member with the lowest index no member holds (its
// name is its socket's name). s.mu is held.
func (s *Set) newMember() *member {
	used := map[int]bool{}
	for _, m := range s.members {
		used[m.index] = true
	}
	i := 0
	for used[i] {
		i++
	}
	return &member{name: fmt.Sprintf("%s-%d", s.opts.Process.Name, i), index: i, state: stateStarting, wake: make(chan struct{}, 1),
		loaded: map[string]bool{}, loading: map[string]bool{}}
}

// launch starts supervising m. s.mu is held.
func (s *Set) launch(m *member) {
	m.ctx, m.cancel = context.WithCancel(s.runCtx)
	s.wg.Add(1)
	go s.supervise(m)
}

// retire scales m away. s.mu is held.
func (s *Set) retire(m *member) {
	if m.cancel == nil { // never launched
		s.members = slices.DeleteFunc(s.members, func(x *member) bool { return x == m })
		return
	}
	m.mu.Lock()
	m.retired = true
	drain := m.state == stateReady
	if drain {
		m.state = stateDraining
	} else {
		m.state = stateStopping
	}
	ongoing := m.ongoing
	m.mu.Unlock()
	if drain {
		s.log.Info("replica draining", "replica", m.name, "ongoing", ongoing)
		m.poke()
	} else {
		s.log.Info("replica stopping", "replica", m.name)
		m.cancel() // nothing runs on it: stop starting or restarting it
	}
}

// undrain takes back a draining member; false when it is past draining.
func (m *member) undrain() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.retired || m.state != stateDraining {
		return false
	}
	m.retired, m.state = false, stateReady
	return true
}

func (m *member) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// snapshot is the current members.
func (s *Set) snapshot() []*member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.members)
}

// remove forgets a retired member that has stopped.
func (s *Set) remove(m *member) {
	s.mu.Lock()
	s.members = slices.DeleteFunc(s.members, func(x *member) bool { return x == m })
	s.mu.Unlock()
}

// Ongoing is the requests in flight on the replicas or waiting for one:
// the load the autoscaler samples.
func (s *Set) Ongoing() int {
	n := int(s.waiting.Load())
	for _, m := range s.snapshot() {
		m.mu.Lock()
		n += m.ongoing
		m.mu.Unlock()
	}
	return n
}

// scaledToZero reports whether the set is asked for no replica.
func (s *Set) scaledToZero() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target == 0
}

// startsOnDemand reports whether the set may have no replica by design
// (it autoscales with min_replicas 0): then it is ready with none, since
// a request starts one and waits for it.
func (s *Set) startsOnDemand() bool {
	return s.auto != nil && s.auto.Config().MinReplicas == 0
}
