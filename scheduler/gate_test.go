package scheduler

import (
	"testing"
	"testing/synctest"
)

func TestStepGateServesWaitersInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewStepGate()
		g.acquire()
		var order []int
		done := make(chan struct{})
		for i := range 3 {
			go func() {
				g.acquire()
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
