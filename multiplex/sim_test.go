package multiplex

import (
	"testing"
	"time"
)

// The simulation drives PlanSwaps the way the loading pool will: a tiny
// fake pool where loads take LoadTime, every admitted request runs a fixed
// time, and clients alternate between two models that do not fit together.
// Time advances in fixed ticks; every duration is a multiple of the tick,
// so events land exactly on ticks and the run is deterministic.

const (
	simTick        = 100 * time.Millisecond
	simLoadTime    = 2 * time.Second
	simRequestTime = time.Second
	simThinkTime   = 500 * time.Millisecond
	simClients     = 8
	simMinResident = 10 * time.Second
	simMaxSwapWait = 15 * time.Second
	simIssueFor    = 10 * time.Minute
	simDrainFor    = 2 * time.Minute
	simModelBytes  = 6 << 30
	simBudget      = 10 << 30 // two models do not fit together
)

type simRunning struct {
	client int
	done   time.Time
}

type simQueued struct {
	client  int
	arrived time.Time
}

type simModel struct {
	name               string
	loaded, loading    bool
	draining           bool
	loadDone, loadedAt time.Time
	lastUsed           time.Time
	running            []simRunning
	queue              []simQueued
}

type simClient struct {
	next  time.Time
	model int
	busy  bool
}

type simResult struct {
	loads, issued, served int
	maxWait               time.Duration
}

// simulate runs the fake pool under policy and fails t on any action that
// breaks the pool's rules (evicting a busy model, loading twice, going
// over the budget).
func simulate(t *testing.T, policy SwapPolicy) simResult {
	t.Helper()
	start := t0
	models := []*simModel{{name: "a"}, {name: "b"}}
	byName := map[string]*simModel{"a": models[0], "b": models[1]}
	clients := make([]simClient, simClients)
	for i := range clients {
		clients[i] = simClient{next: start.Add(time.Duration(i) * 3 * simTick), model: i % 2}
	}
	var res simResult
	admit := func(now time.Time) {
		for _, m := range models {
			if !m.loaded || m.draining {
				continue
			}
			for _, q := range m.queue {
				if w := now.Sub(q.arrived); w > res.maxWait {
					res.maxWait = w
				}
				m.running = append(m.running, simRunning{client: q.client, done: now.Add(simRequestTime)})
				m.lastUsed = now
				res.served++
			}
			m.queue = nil
		}
	}
	stopIssuing := start.Add(simIssueFor)
	end := stopIssuing.Add(simDrainFor)
	for now := start; now.Before(end); now = now.Add(simTick) {
		for _, m := range models {
			kept := m.running[:0]
			for _, r := range m.running {
				if r.done.After(now) {
					kept = append(kept, r)
					continue
				}
				m.lastUsed = now
				c := &clients[r.client]
				c.busy, c.next, c.model = false, now.Add(simThinkTime), 1-c.model
			}
			m.running = kept
			if m.loading && !m.loadDone.After(now) {
				m.loading, m.loaded, m.loadedAt, m.lastUsed = false, true, now, now
			}
		}
		for i := range clients {
			c := &clients[i]
			if c.busy || c.next.After(now) || !now.Before(stopIssuing) {
				continue
			}
			m := models[c.model]
			m.queue = append(m.queue, simQueued{client: i, arrived: now})
			c.busy = true
			res.issued++
		}

		admit(now)

		in := SwapInput{Now: now, Policy: policy, MemoryBudget: simBudget, MinResidency: simMinResident, MaxSwapWait: simMaxSwapWait}
		for _, m := range models {
			switch {
			case m.loaded || m.loading:
				in.Resident = append(in.Resident, ResidentModel{
					Name: m.name, Bytes: simModelBytes, LoadedAt: m.loadedAt, LastUsed: m.lastUsed,
					InFlight: len(m.running), LoadTime: simLoadTime, Loading: m.loading, Draining: m.draining,
				})
			case len(m.queue) > 0:
				in.Waiting = append(in.Waiting, WaitingModel{
					Name: m.name, Bytes: simModelBytes, Requests: len(m.queue), Since: m.queue[0].arrived, LoadTime: simLoadTime,
				})
			}
		}
		plan := PlanSwaps(in)
		for _, n := range plan.Evict {
			m := byName[n]
			if !m.loaded || len(m.running) > 0 {
				t.Fatalf("%v: evict %s while loaded=%v running=%d", now.Sub(start), n, m.loaded, len(m.running))
			}
			m.loaded, m.draining = false, false
		}
		for _, n := range plan.Drain {
			byName[n].draining = true
		}
		for _, n := range plan.Load {
			m := byName[n]
			if m.loaded || m.loading {
				t.Fatalf("%v: load %s while it is resident", now.Sub(start), n)
			}
			m.loading, m.loadDone = true, now.Add(simLoadTime)
			res.loads++
		}
		if len(plan.TooLarge) > 0 {
			t.Fatalf("%v: too large: %v", now.Sub(start), plan.TooLarge)
		}
		var used int64
		for _, m := range models {
			if m.loaded || m.loading {
				used += simModelBytes
			}
		}
		if used > simBudget {
			t.Fatalf("%v: %d bytes resident, budget %d", now.Sub(start), used, simBudget)
		}

	}
	for _, m := range models {
		if len(m.queue) > 0 || len(m.running) > 0 {
			t.Errorf("%s: %d queued and %d running requests at the end", m.name, len(m.queue), len(m.running))
		}
	}
	return res
}

func TestSimulationSwapAwareSwapsLessThanLRU(t *testing.T) {
	aware := simulate(t, SwapAware)
	lru := simulate(t, SwapLRU)
	t.Logf("swap-aware: %d loads, %d/%d served, max wait %v", aware.loads, aware.served, aware.issued, aware.maxWait)
	t.Logf("lru:        %d loads, %d/%d served, max wait %v", lru.loads, lru.served, lru.issued, lru.maxWait)
	bound := simMaxSwapWait + simLoadTime + simRequestTime
	for _, r := range []struct {
		policy SwapPolicy
		res    simResult
	}{{SwapAware, aware}, {SwapLRU, lru}} {
		if r.res.served != r.res.issued || r.res.issued == 0 {
			t.Errorf("%s: served %d of %d requests", r.policy, r.res.served, r.res.issued)
		}
		if r.res.maxWait > bound {
			t.Errorf("%s: a request waited %v, want at most %v", r.policy, r.res.maxWait, bound)
		}
	}
	if aware.loads*2 > lru.loads {
		t.Errorf("swap-aware made %d loads, lru %d: want at least 2x fewer", aware.loads, lru.loads)
	}
}
