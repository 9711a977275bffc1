package multiplex

import (
	"fmt"
	"testing"
	"time"
)

// The simulation drives PlanSwaps the way Pool does: a tiny fake pool
// where loads take each model's LoadTime, a request runs once its model is
// loaded and not draining, and PlanSwaps is called every tick. The
// workload is the churn benchmark's shape (llmux bench --model-dist
// pairs): closed-loop clients, client i alternating between models i%N and
// (i+1)%N, with no think time. Time advances in fixed ticks; every duration
// is a multiple of the tick and run times are a fixed function of (client,
// request number), so both policies see the same requests and the run is
// deterministic.

const (
	simTick        = 100 * time.Millisecond
	simClients     = 8
	simMinResident = DefaultMinResidency
	simMaxSwapWait = DefaultMaxSwapWait
	simIssueFor    = 10 * time.Minute
	simDrainFor    = 2 * time.Minute
	simGoodTTFT    = 2 * time.Second // goodput counts requests whose wait+run is at most this
	simMaxRun      = 2 * time.Second
)

// simLoadTime is model k's load time: 1s, 2s, 3s, … like small models
// read from a warm page cache.
func simLoadTime(k int) time.Duration { return time.Duration(k%3+1) * time.Second }

// simRunTime is how long client c's n-th request runs: 0.5s to 2s in
// ticks, spread by a fixed hash.
func simRunTime(c, n int) time.Duration {
	h := uint32(c)*2654435761 ^ uint32(n)*40503
	h ^= h >> 13
	h *= 0x5bd1e995
	h ^= h >> 15
	return 500*time.Millisecond + time.Duration(h%16)*simTick
}

type simRequest struct {
	client           int
	arrived, started time.Time
	run              time.Duration
}

type simModel struct {
	name               string
	loadTime           time.Duration
	loaded, loading    bool
	draining           bool
	loadDone, loadedAt time.Time
	lastUsed           time.Time
	running            []simRequest
	queue              []simRequest
}

type simClient struct {
	models [2]int // the two models it alternates between
	turn   int    // index into models of its next request
	sent   int    // requests sent so far
	next   time.Time
	busy   bool
}

type simResult struct {
	loads, evictions      int
	issued, served, good  int
	maxWait               time.Duration
	goodput, requestsRate float64 // per second of the issuing period
}

func (r simResult) String() string {
	return fmt.Sprintf("%d loads, %d evictions, %d/%d served, %d good (%.2f/s of %.2f/s), max wait %v",
		r.loads, r.evictions, r.served, r.issued, r.good, r.goodput, r.requestsRate, r.maxWait)
}

// simulate runs the fake pool with nModels models, at most maxModels
// resident, under policy, and fails t on any action that breaks the pool's
// rules (evicting a busy or loading model, loading a resident one, going
// over MaxModels).
func simulate(t *testing.T, policy SwapPolicy, nModels, maxModels int) simResult {
	t.Helper()
	start := t0
	models := make([]*simModel, nModels)
	byName := map[string]*simModel{}
	for k := range models {
		models[k] = &simModel{name: string(rune('a' + k)), loadTime: simLoadTime(k)}
		byName[models[k].name] = models[k]
	}
	clients := make([]simClient, simClients)
	for i := range clients {
		clients[i] = simClient{models: [2]int{i % nModels, (i + 1) % nModels}, next: start.Add(time.Duration(i) * simTick)}
	}
	var res simResult
	admit := func(now time.Time) {
		for _, m := range models {
			if !m.loaded || m.draining {
				continue
			}
			for _, q := range m.queue {
				q.started = now
				wait := now.Sub(q.arrived)
				res.maxWait = max(res.maxWait, wait)
				if wait+q.run <= simGoodTTFT {
					res.good++
				}
				m.running = append(m.running, q)
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
				if r.started.Add(r.run).After(now) {
					kept = append(kept, r)
					continue
				}
				m.lastUsed = now
				c := &clients[r.client]
				c.busy, c.next = false, now
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
			m := models[c.models[c.turn]]
			m.queue = append(m.queue, simRequest{client: i, arrived: now, run: simRunTime(i, c.sent)})
			c.busy, c.turn = true, 1-c.turn
			c.sent++
			res.issued++
		}

		admit(now)

		in := SwapInput{Now: now, Policy: policy, MaxModels: maxModels, MinResidency: simMinResident, MaxSwapWait: simMaxSwapWait}
		for _, m := range models {
			if m.loaded || m.loading {
				in.Resident = append(in.Resident, ResidentModel{
					Name: m.name, Bytes: 1, LoadedAt: m.loadedAt, LastUsed: m.lastUsed,
					InFlight: len(m.running), LoadTime: m.loadTime, Loading: m.loading, Draining: m.draining,
				})
			}
			// Like Pool, requests queued for a loading or draining model
			// are reported as waiting too.
			if len(m.queue) > 0 {
				in.Waiting = append(in.Waiting, WaitingModel{
					Name: m.name, Bytes: 1, Requests: len(m.queue), Since: m.queue[0].arrived, LoadTime: m.loadTime,
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
			res.evictions++
		}
		for _, n := range plan.Drain {
			byName[n].draining = true
		}
		for _, n := range plan.Load {
			m := byName[n]
			if m.loaded || m.loading {
				t.Fatalf("%v: load %s while it is resident", now.Sub(start), n)
			}
			m.loading, m.loadDone = true, now.Add(m.loadTime)
			res.loads++
		}
		if len(plan.TooLarge) > 0 {
			t.Fatalf("%v: too large: %v", now.Sub(start), plan.TooLarge)
		}
		resident := 0
		for _, m := range models {
			if m.loaded || m.loading {
				resident++
			}
		}
		if resident > maxModels {
			t.Fatalf("%v: %d models resident, at most %d allowed", now.Sub(start), resident, maxModels)
		}
	}
	for _, m := range models {
		if len(m.queue) > 0 || len(m.running) > 0 {
			t.Errorf("%s: %d queued and %d running requests at the end", m.name, len(m.queue), len(m.running))
		}
	}
	res.goodput = float64(res.good) / simIssueFor.Seconds()
	res.requestsRate = float64(res.served) / simIssueFor.Seconds()
	return res
}

// simWaitBound is the longest a request may wait: MaxSwapWait, then a
// victim that may still be loading, then its requests finishing, then the
// waiting model's own load.
const simWaitBound = simMaxSwapWait + 3*time.Second + simMaxRun + 3*time.Second

// checkServed fails t unless every request was served within the bound.
func checkServed(t *testing.T, policy SwapPolicy, r simResult) {
	t.Helper()
	if r.served != r.issued || r.issued == 0 {
		t.Errorf("%s: served %d of %d requests", policy, r.served, r.issued)
	}
	if r.maxWait > simWaitBound {
		t.Errorf("%s: a request waited %v, want at most %v", policy, r.maxWait, simWaitBound)
	}
}

// The project's churn goal: with three models and room for two, the
// swap-aware policy makes at least 2x fewer loads than LRU and reaches at
// least 1.5x its goodput, and no request fails.
func TestSimulationChurnSwapAwareBeatsLRU(t *testing.T) {
	aware := simulate(t, SwapAware, 3, 2)
	lru := simulate(t, SwapLRU, 3, 2)
	t.Logf("swap-aware: %v", aware)
	t.Logf("lru:        %v", lru)
	checkServed(t, SwapAware, aware)
	checkServed(t, SwapLRU, lru)
	if aware.loads*2 > lru.loads {
		t.Errorf("swap-aware made %d loads, lru %d: want at least 2x fewer", aware.loads, lru.loads)
	}
	if aware.goodput < 1.5*lru.goodput {
		t.Errorf("swap-aware goodput %.2f/s, lru %.2f/s: want at least 1.5x", aware.goodput, lru.goodput)
	}
}

// With two models and room for one, every client needs a swap for every
// request, and LRU already batches perfectly: once the clients fall into
// step, each load serves every client. The swap-aware policy must not do
// worse by holding a model nobody uses (it used to keep it for its minimum
// residency and served under a third of LRU's requests).
func TestSimulationAlternatingPairHoldsNoIdleModel(t *testing.T) {
	aware := simulate(t, SwapAware, 2, 1)
	lru := simulate(t, SwapLRU, 2, 1)
	t.Logf("swap-aware: %v", aware)
	t.Logf("lru:        %v", lru)
	checkServed(t, SwapAware, aware)
	checkServed(t, SwapLRU, lru)
	if aware.loads > lru.loads || float64(aware.served) < 0.95*float64(lru.served) {
		t.Errorf("swap-aware made %d loads for %d requests, lru %d for %d: want no more loads and at least 95%% of the requests",
			aware.loads, aware.served, lru.loads, lru.served)
	}
}

// When every model fits, neither policy evicts anything: each model loads
// once.
func TestSimulationEverythingFitsNoEviction(t *testing.T) {
	for _, policy := range []SwapPolicy{SwapAware, SwapLRU} {
		r := simulate(t, policy, 3, 3)
		t.Logf("%s: %v", policy, r)
		checkServed(t, policy, r)
		if r.loads != 3 || r.evictions != 0 {
			t.Errorf("%s: %d loads and %d evictions, want 3 and 0", policy, r.loads, r.evictions)
		}
	}
}
