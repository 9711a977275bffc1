package main

import (
	"sync"
	"testing"
)

func TestProcGovernorGivesOneProcWhileAtMostOneRequestRuns(t *testing.T) {
	var calls []bool
	g := &procGovernor{set: func(one bool) { calls = append(calls, one) }}
	steps := []struct {
		delta   int64
		wantOne bool
	}{
		{+1, true},  // one stream: one P
		{+1, false}, // two: the default
		{+1, false},
		{-1, false},
		{-1, true}, // back to one
		{-1, true}, // idle
		{+1, true},
	}
	for i, st := range steps {
		g.Add(st.delta)
		if g.one != st.wantOne {
			t.Fatalf("step %d (running %d): one P = %v, want %v", i, g.running, g.one, st.wantOne)
		}
	}
	// The runtime is told only of changes: 1, default, 1.
	if want := []bool{true, false, true}; len(calls) != len(want) || calls[0] != want[0] || calls[1] != want[1] || calls[2] != want[2] {
		t.Fatalf("runtime resized %v, want %v", calls, want)
	}
}

func TestProcGovernorEndsSizedForTheFinalCountUnderConcurrency(t *testing.T) {
	var last bool
	g := &procGovernor{set: func(one bool) { last = one }}
	g.Add(1) // one request stays running throughout
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			g.Add(1)
			g.Add(-1)
		})
	}
	wg.Wait()
	if g.running != 1 || !g.one || !last {
		t.Fatalf("after concurrent requests ended: running %d, one P %v, runtime last told %v; want 1, true, true", g.running, g.one, last)
	}
	g.Add(1)
	if g.one || last {
		t.Fatalf("two running: one P %v, runtime last told %v; want false, false", g.one, last)
	}
}

func TestProcGovernorLeavesAGOMAXPROCSFromTheEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "3")
	if g := newProcGovernor(); g != nil {
		t.Fatal("GOMAXPROCS=3 in the environment, yet the serving process would resize its runtime")
	}
	t.Setenv("GOMAXPROCS", "")
	if g := newProcGovernor(); g == nil {
		t.Fatal("no GOMAXPROCS in the environment, yet no governor")
	}
}
