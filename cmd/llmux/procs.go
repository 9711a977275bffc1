package main

import (
	"os"
	"runtime"
	"sync"
)

// procGovernor sizes the serving process's Go runtime by the generation
// requests it runs: one P while at most one runs, Go's default above.
//
// On a CPU llama.cpp's threads occupy every core while a stream decodes.
// With one stream the serving process forwards one token at a time, and
// a single P does that without waking spare threads to look for work
// (Go's spinning Ms), each of which takes a core from a decode step that
// then waits for it at ggml's barriers. With several streams the handlers
// run in parallel and want the default (one P was measured 6% slower at
// 16 streams, faster at one).
type procGovernor struct {
	mu      sync.Mutex
	running int64
	one     bool           // GOMAXPROCS is 1
	set     func(one bool) // applies a decision (the runtime's, or a test's)
}

// newProcGovernor returns a governor that sets the runtime's GOMAXPROCS,
// or nil when the environment sets GOMAXPROCS (the user's choice stands).
func newProcGovernor() *procGovernor {
	if os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
	return &procGovernor{set: func(one bool) {
		if one {
			runtime.GOMAXPROCS(1)
		} else {
			runtime.SetDefaultGOMAXPROCS()
		}
	}}
}

// Add counts a request in (+1) or out (-1) and resizes the runtime when
// the count crosses one. The count and the decision are taken under one
// lock, so concurrent starts and ends cannot leave the runtime sized for
// a count that has passed.
func (g *procGovernor) Add(delta int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running += delta
	if one := g.running <= 1; one != g.one {
		g.one = one
		g.set(one)
	}
}
