package scheduler

import (
	"testing"
	"testing/synctest"
)

func TestStepGateServesWaitersInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewStepGate()
		g.acquire(nil)
		var order []int
		done := make(chan struct{})
		for i := range 3 {
			go func() {
				g.acquire(nil)
				order = append(order, i)
				g.release()
				done <- struct{}{}
			}()
			synctest.Wait() // waiter i is blocked before i+1 arrives
		}
		g.release()
		for range 3 {
			<-done
		}
		if len(order) != 3 || order[0] != 0 || order[1] != 1 || order[2] != 2 {
			t.Fatalf("waiters got the gate in order %v, want [0 1 2]", order)
		}
	})
}

// parker counts how often the gate parked its threads.
type parker struct{ parked int }

func (p *parker) ParkThreads() { p.parked++ }

func TestStepGateParksTheThreadsOfTheEngineItPassesFrom(t *testing.T) {
	g := NewStepGate()
	a, b := &parker{}, &parker{}
	turn := func(p *parker) { g.acquire(p); g.release() }
	turn(a)
	turn(a) // the same engine again: its threads stay ready
	if a.parked != 0 {
		t.Fatalf("a's own next step parked its threads %d times", a.parked)
	}
	turn(b) // the turn passes from a to b
	if a.parked != 1 || b.parked != 0 {
		t.Fatalf("a→b: a parked %d, b parked %d; want 1, 0", a.parked, b.parked)
	}
	turn(b)
	turn(a)
	if a.parked != 1 || b.parked != 1 {
		t.Fatalf("b→a: a parked %d, b parked %d; want 1, 1", a.parked, b.parked)
	}
	g.acquire(nil) // an engine without a pool still parks the one before it
	g.release()
	if a.parked != 2 {
		t.Fatalf("a→(no pool): a parked %d times, want 2", a.parked)
	}
	// A forgotten (closed) engine is never parked.
	turn(b)
	g.forget(b)
	turn(a)
	if b.parked != 1 {
		t.Fatalf("b was parked after it was forgotten (%d times, want 1)", b.parked)
	}
}

// TestClosedSchedulerIsNeverParked runs two schedulers over fake engines
// that share a gate, closes the one that stepped last, and steps the
// other: the gate must not park the closed engine, whose thread pool a
// real context has freed by then.
func TestClosedSchedulerIsNeverParked(t *testing.T) {
	g := NewStepGate()
	a, fa, stopA := runFake(t, 4096, Options{Parallel: 1, Steps: g})
	b, fb, _ := runFake(t, 4096, Options{Parallel: 1, Steps: g})
	reqs := fakeRequests(1, 4)
	submitAll(t, b, reqs)
	submitAll(t, a, reqs) // a steps last, b sleeps: b was parked
	fb.mu.Lock()
	parkedB := fb.parks
	fb.mu.Unlock()
	if parkedB == 0 {
		t.Fatal("the turn passed from b to a, yet b's threads were never parked")
	}
	stopA()
	submitAll(t, b, reqs)
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if fa.parkedClosed != 0 {
		t.Fatalf("the gate parked a's threads %d times after a was closed", fa.parkedClosed)
	}
}
