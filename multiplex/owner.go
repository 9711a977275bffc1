package multiplex

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/llmux/llmux/llm"
)

// Messages to the owner goroutine.
type (
	acquireMsg struct {
		name     string
		deadline time.Time
		reply    chan grant // buffered: the owner never blocks on it
		// granted is set by the owner when it hands out the lease.
		granted bool
		since   time.Time
	}
	cancelMsg  struct{ req *acquireMsg }
	releaseMsg struct{ name string }
	loadedMsg  struct {
		name string
		l    *Loaded
		err  error
		took time.Duration
	}
	statsMsg   struct{ reply chan PoolStats }
	loadingMsg struct{ reply chan map[string]bool }
)

type grant struct {
	r   *Runner
	err *llm.Error
}

// resident is a catalog model that is loaded or loading.
type resident struct {
	name     string
	loaded   *Loaded
	bytes    int64
	loadedAt time.Time
	lastUsed time.Time
	loadTime time.Duration
	inFlight int
	loading  bool
	draining bool
	pinned   bool
	cancel   context.CancelFunc // of the load under way
}

// owner is the state of Pool.Run: every field belongs to that goroutine.
type owner struct {
	p         *Pool
	ctx       context.Context
	res       map[string]*resident
	waiting   map[string][]*acquireMsg // requests per model not ready, oldest first
	loadTimes map[string]time.Duration // each model's last load
}

// Run owns residency until ctx ends; then it unloads every catalog model
// it loaded and fails the requests still waiting, and returns.
func (p *Pool) Run(ctx context.Context) error {
	p.stats.Models = map[string]ModelStats{}
	p.running.Store(true)
	defer close(p.done)
	defer p.running.Store(false)
	o := &owner{p: p, ctx: ctx, res: map[string]*resident{}, waiting: map[string][]*acquireMsg{}, loadTimes: map[string]time.Duration{}}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// Pinned models load at start.
	if p.opts.Catalog != nil {
		for _, e := range p.opts.Catalog.Entries() {
			if e.Kind == KindBase && e.Config.Pinned && o.res[e.Name] == nil {
				o.startLoad(e.Name)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			o.shutdown()
			return nil
		case <-tick.C:
			// Waits and idle times cross their bounds between events.
			if len(o.waiting) > 0 || p.opts.KeepAlive > 0 {
				o.plan()
			}
		case m := <-p.inbox:
			o.handle(m)
		}
	}
}

func (o *owner) handle(m any) {
	switch m := m.(type) {
	case *acquireMsg:
		o.acquire(m)
	case cancelMsg:
		o.cancel(m.req)
	case releaseMsg:
		if r := o.res[m.name]; r != nil {
			r.inFlight--
			r.lastUsed = time.Now()
			if r.draining && r.inFlight == 0 {
				o.unload(r, "drained for a swap")
			}
		}
		o.plan()
	case loadedMsg:
		o.loaded(m)
	case statsMsg:
		m.reply <- o.snapshot()
	case loadingMsg:
		out := map[string]bool{}
		for name, r := range o.res {
			if r.loading {
				out[name] = true
			}
		}
		m.reply <- out
	}
}

// acquire grants a lease on a ready model at once; otherwise the request
// waits for its model, unless it could not get it by its deadline.
func (o *owner) acquire(m *acquireMsg) {
	if r := o.res[m.name]; r != nil && !r.loading && !r.draining {
		m.granted = true
		r.inFlight++
		r.lastUsed = time.Now()
		m.reply <- grant{r: r.loaded.Runner}
		return
	}
	if wait := o.expectedWait(m.name); time.Now().Add(wait).After(m.deadline) {
		m.reply <- grant{err: &llm.Error{Code: llm.CodeOverloaded, RetryAfter: wait,
			Message: fmt.Sprintf("the model %q is expected to take %v to become available, past the request's deadline", m.name, wait.Round(time.Millisecond))}}
		return
	}
	o.waiting[m.name] = append(o.waiting[m.name], m)
	o.plan()
}

// cancel handles a request that stopped waiting: its lease, if it got one
// meanwhile, is released; a load nobody waits for any more is abandoned.
func (o *owner) cancel(req *acquireMsg) {
	if req.granted {
		if r := o.res[req.name]; r != nil {
			r.inFlight--
		}
		o.plan()
		return
	}
	ws := o.waiting[req.name]
	if i := slices.Index(ws, req); i >= 0 {
		o.waiting[req.name] = slices.Delete(ws, i, i+1)
	}
	if len(o.waiting[req.name]) == 0 {
		delete(o.waiting, req.name)
		if r := o.res[req.name]; r != nil && r.loading {
			r.cancel()
		}
	}
	o.plan()
}

// loaded takes a finished load: every waiting request gets the model, or
// the error (a failed load is not remembered).
func (o *owner) loaded(m loadedMsg) {
	p := o.p
	r := o.res[m.name]
	if r == nil || !r.loading {
		if m.l != nil {
			m.l.Close()
		}
		return
	}
	if m.err != nil {
		delete(o.res, m.name)
		p.stats.LoadFailures++
		o.count(m.name, func(ms *ModelStats) { ms.LoadFailures++ })
		e := llm.Errorf(llm.CodeLoadFailed, "model", "the model %q failed to load: %s", m.name, loadFailure(m.err))
		if errors.Is(m.err, context.Canceled) {
			e = llm.Errorf(llm.CodeCancelled, "", "the load of %q was abandoned", m.name)
		}
		p.log.Warn("model load failed", "model", m.name, "err", m.err)
		o.failAll(m.name, e)
		o.plan()
		return
	}
	p.stats.Loads++
	o.count(m.name, func(ms *ModelStats) { ms.Loads++; ms.LoadSeconds += m.took.Seconds() })
	r.loaded, r.loading, r.cancel = m.l, false, nil
	r.loadedAt, r.loadTime = time.Now(), m.took
	if m.l.Bytes > 0 {
		r.bytes = m.l.Bytes
	}
	o.loadTimes[m.name] = m.took
	p.mu.Lock()
	p.live[m.name] = m.l.Runner
	p.mu.Unlock()
	p.log.Info("model loaded", "model", m.name, "took", m.took.Round(time.Millisecond), "waiting", len(o.waiting[m.name]))
	o.grantAll(r)
	o.plan()
}

func (o *owner) grantAll(r *resident) {
	for _, w := range o.waiting[r.name] {
		w.granted = true
		r.inFlight++
		w.reply <- grant{r: r.loaded.Runner}
	}
	delete(o.waiting, r.name)
	r.lastUsed = time.Now()
}

func (o *owner) failAll(name string, e *llm.Error) {
	for _, w := range o.waiting[name] {
		w.reply <- grant{err: e}
	}
	delete(o.waiting, name)
}

func (o *owner) count(name string, f func(*ModelStats)) {
	ms := o.p.stats.Models[name]
	f(&ms)
	o.p.stats.Models[name] = ms
}

// unload frees an idle model, in this goroutine, so that its memory is
// free before the load it makes room for starts. With no leases held its
// scheduler stops at once.
func (o *owner) unload(r *resident, why string) {
	p := o.p
	delete(o.res, r.name)
	p.mu.Lock()
	delete(p.live, r.name)
	p.mu.Unlock()
	p.stats.Evictions++
	if why == "swap" || why == "drained for a swap" {
		p.stats.Swaps++
	}
	o.count(r.name, func(m *ModelStats) { m.Evictions++ })
	p.log.Info("unloading model", "model", r.name, "why", why)
	r.loaded.Close()
}

// startLoad loads a model in a goroutine of its own; the result comes back
// as a loadedMsg. The load's context ends when nobody waits any more.
func (o *owner) startLoad(name string) {
	p := o.p
	e, ok := p.opts.Catalog.Base(name)
	if !ok {
		o.failAll(name, llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist", name))
		return
	}
	bytes, _, _ := p.size(e)
	lctx, cancel := context.WithCancel(o.ctx)
	o.res[name] = &resident{name: name, loading: true, bytes: bytes, cancel: cancel, pinned: e.Config.Pinned}
	p.stats.ColdStarts++
	p.log.Info("loading model", "model", name, "waiting", len(o.waiting[name]))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t0 := time.Now()
		l, err := p.opts.Load(lctx, e)
		m := loadedMsg{name: name, l: l, err: err, took: time.Since(t0)}
		select {
		case p.inbox <- m:
		case <-o.ctx.Done():
			if l != nil {
				l.Close()
			}
		}
	}()
}

// plan asks the swap policy what to do and does it, then unloads models
// idle past the keep-alive.
func (o *owner) plan() {
	p := o.p
	if p.opts.Catalog == nil {
		return
	}
	now := time.Now()
	in := SwapInput{Now: now, Policy: p.opts.Policy, MaxModels: p.opts.MaxModels, MemoryBudget: p.opts.MemoryBudget,
		MinResidency: p.opts.MinResidency, MaxSwapWait: p.opts.MaxSwapWait}
	for _, r := range o.res {
		in.Resident = append(in.Resident, ResidentModel{Name: r.name, Bytes: r.bytes, LoadedAt: r.loadedAt, LastUsed: r.lastUsed,
			InFlight: r.inFlight, LoadTime: r.loadTime, Pinned: r.pinned, Loading: r.loading, Draining: r.draining})
	}
	for name, ws := range o.waiting {
		if len(ws) == 0 {
			continue
		}
		e, _ := p.opts.Catalog.Base(name)
		bytes, _, _ := p.size(e)
		in.Waiting = append(in.Waiting, WaitingModel{Name: name, Bytes: bytes, Requests: len(ws), Since: ws[0].since, LoadTime: o.loadTimes[name]})
	}
	slices.SortFunc(in.Resident, func(a, b ResidentModel) int { return cmpString(a.Name, b.Name) })
	slices.SortFunc(in.Waiting, func(a, b WaitingModel) int { return cmpString(a.Name, b.Name) })
	out := PlanSwaps(in)
	for _, name := range out.Evict {
		if r := o.res[name]; r != nil && r.inFlight == 0 && !r.loading {
			o.unload(r, "swap")
		}
	}
	for _, name := range out.Drain {
		if r := o.res[name]; r != nil {
			r.draining = true
		}
	}
	for _, name := range out.TooLarge {
		o.failAll(name, llm.Errorf(llm.CodeLoadFailed, "model", "the model %q does not fit: it needs more than the memory budget (%d bytes) or model slots (%d) allow", name, p.opts.MemoryBudget, p.opts.MaxModels))
	}
	for _, name := range out.Load {
		if o.res[name] == nil {
			o.startLoad(name)
		}
	}
	if ka := p.opts.KeepAlive; ka > 0 {
		for _, r := range o.res {
			if !r.loading && !r.pinned && r.inFlight == 0 && now.Sub(r.lastUsed) > ka {
				o.unload(r, "keep-alive expired")
			}
		}
	}
}

// snapshot copies the counters, with each model's leases now.
func (o *owner) snapshot() PoolStats {
	out := o.p.stats
	out.Models = make(map[string]ModelStats, len(o.p.stats.Models)+len(o.res))
	for k, v := range o.p.stats.Models {
		out.Models[k] = v
	}
	for name, r := range o.res {
		ms := out.Models[name]
		ms.InFlight, ms.Resident = r.inFlight, !r.loading
		out.Models[name] = ms
	}
	for name, ws := range o.waiting {
		if len(ws) > 0 {
			ms := out.Models[name]
			ms.Waiting = len(ws)
			out.Models[name] = ms
		}
	}
	return out
}

// shutdown abandons loads under way, unloads every model and fails the
// requests still waiting.
func (o *owner) shutdown() {
	for _, r := range o.res {
		if r.cancel != nil {
			r.cancel()
		}
		if r.loaded != nil {
			o.unload(r, "shutdown")
		}
	}
	for name := range o.waiting {
		o.failAll(name, llm.Errorf(llm.CodeUnavailable, "", "the server is shutting down"))
	}
	o.p.wg.Wait()
}

// expectedWait predicts how long a request for a model that is not ready
// waits: the rest of a load under way, or a whole load (as long as the
// last one took), plus, when the model does not fit beside the resident
// ones, the longest a swap-aware swap may be held back. Called by Run.
func (o *owner) expectedWait(name string) time.Duration {
	p := o.p
	load := o.loadTimes[name]
	if r := o.res[name]; r != nil {
		return 0 // loading or draining: it is already on its way
	}
	fits := p.opts.MaxModels <= 0 || len(o.res) < p.opts.MaxModels
	if !fits && p.opts.Policy == SwapAware {
		load += p.opts.MaxSwapWait
	}
	return load
}
