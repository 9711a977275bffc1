package multiplex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmux/llmux/llm"
)

// Loaded is a base model ready to serve, as a Loader returns it.
type Loaded struct {
	Runner *Runner
	// Bytes is the memory it holds (weights and KV cache).
	Bytes int64
	// Close frees the runner, its scheduler and its model.
	Close func()
}

// Loader loads a catalog entry's base model. It should give up when ctx
// ends (nobody waits for the model any more).
type Loader func(ctx context.Context, e Entry) (*Loaded, error)

// Sizer estimates the memory a base model will hold once loaded, from its
// metadata, and reports what validation needs to know of it.
type Sizer func(e Entry) (bytes int64, info llm.ModelInfo, err error)

// PoolOptions configure a Pool. The zero value serves only models added
// with Add.
type PoolOptions struct {
	Catalog *Catalog
	Load    Loader
	Size    Sizer
	// MaxModels bounds the resident base models (0: unbounded).
	MaxModels int
	// MemoryBudget bounds their memory (0: unbounded).
	MemoryBudget int64
	Policy       SwapPolicy
	MinResidency time.Duration
	MaxSwapWait  time.Duration
	// KeepAlive unloads a model idle this long (0: never).
	KeepAlive time.Duration
	Logger    *slog.Logger
}

// Pool is an llm.Backend over a catalog of models. One goroutine (Run)
// owns which models are resident: requests acquire a lease on their model
// through it, a model is loaded once however many requests wait for it,
// and a model is evicted only when no lease is held on it.
type Pool struct {
	opts PoolOptions
	log  *slog.Logger

	mu      sync.RWMutex // guards static, aliases and live
	static  map[string]*Runner
	aliases map[string]string // static alias → name
	order   []string          // static names in the order added
	live    map[string]*Runner

	infoMu sync.Mutex // guards infos
	infos  map[string]llm.ModelInfo

	inbox chan any
	done  chan struct{}
	wg    sync.WaitGroup // running loads

	running atomic.Bool // Run is serving the inbox
	stats   PoolStats   // owned by Run
}

// PoolStats count the pool's work since it started.
type PoolStats struct {
	Loads, LoadFailures, Evictions, ColdStarts int64
	// Swaps are evictions made to fit another model.
	Swaps int64
	// Models has each catalog model's own counts.
	Models map[string]ModelStats
}

// ModelStats count one catalog model's loads and leases.
type ModelStats struct {
	Loads, LoadFailures, Evictions int64
	LoadSeconds                    float64 // total time spent loading
	InFlight                       int     // leases held now
	Resident                       bool
}

var _ llm.Backend = (*Pool)(nil)

// NewPool returns a pool; call Run to serve catalog models.
func NewPool(opts PoolOptions) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Policy == "" {
		opts.Policy = SwapAware
	}
	return &Pool{opts: opts, log: opts.Logger, static: map[string]*Runner{}, aliases: map[string]string{}, live: map[string]*Runner{},
		infos: map[string]llm.ModelInfo{}, inbox: make(chan any, 64), done: make(chan struct{})}
}

// Add serves an already loaded runner under name and its aliases, for the
// life of the pool (never evicted, not owned: the caller closes it).
func (p *Pool) Add(name string, aliases []string, r *Runner) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := append([]string{name}, aliases...)
	for _, n := range all {
		if n == "" {
			return fmt.Errorf("multiplex: empty model name")
		}
		if _, dup := p.static[n]; dup {
			return fmt.Errorf("multiplex: model name %q is given twice", n)
		}
		if _, dup := p.aliases[n]; dup {
			return fmt.Errorf("multiplex: model name %q is given twice", n)
		}
	}
	p.static[name] = r
	for _, a := range aliases {
		p.aliases[a] = name
	}
	p.order = append(p.order, name)
	return nil
}

// Stats returns the pool's counters (safe to call from any goroutine).
func (p *Pool) Stats() PoolStats {
	if !p.running.Load() {
		return PoolStats{}
	}
	reply := make(chan PoolStats, 1)
	select {
	case p.inbox <- statsMsg{reply}:
		return <-reply
	case <-p.done:
		return PoolStats{}
	}
}

// Runners returns the loaded runners by name: the added ones and the
// resident catalog models.
func (p *Pool) Runners() map[string]*Runner {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string]*Runner, len(p.static)+len(p.live))
	for k, v := range p.static {
		out[k] = v
	}
	for k, v := range p.live {
		out[k] = v
	}
	return out
}

// target is what a name resolves to: an added runner, or a catalog base
// and, for an adapter name, the adapter to apply.
type target struct {
	static  *Runner
	base    Entry
	adapter *Entry
	id      string
}

// adapterName is the adapter the scheduler applies ("" for the base).
func (t target) adapterName() string {
	if t.adapter == nil {
		return ""
	}
	return t.adapter.Name
}

func (p *Pool) resolve(model string) (target, *llm.Error) {
	p.mu.RLock()
	if model == "" && len(p.order) > 0 {
		model = p.order[0] // routes where the model is optional
	}
	if n, ok := p.aliases[model]; ok {
		model = n
	}
	r, ok := p.static[model]
	p.mu.RUnlock()
	if ok {
		return target{static: r, id: model}, nil
	}
	if p.opts.Catalog != nil {
		base, adapter, err := p.opts.Catalog.Resolve(model)
		if err == nil {
			return target{base: base, adapter: adapter, id: model}, nil
		}
	}
	return target{}, p.notFound(model)
}

func (p *Pool) notFound(model string) *llm.Error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.order) == 1 && p.opts.Catalog == nil {
		return llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist; this server serves %q", model, p.order[0])
	}
	return llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist", model)
}

// Info describes a servable name; a catalog model that is not loaded is
// described from its metadata.
func (p *Pool) Info(_ context.Context, model string) (llm.ModelInfo, *llm.Error) {
	t, e := p.resolve(model)
	if e != nil {
		return llm.ModelInfo{}, e
	}
	if t.static != nil {
		return t.static.Info(t.id), nil
	}
	p.mu.RLock()
	r := p.live[t.base.Name]
	p.mu.RUnlock()
	if r != nil {
		mi := r.Info(t.id)
		if t.adapter != nil {
			mi.Parent = t.base.Name
		}
		return mi, nil
	}
	mi, err := p.coldInfo(t.base)
	if err != nil {
		return llm.ModelInfo{}, llm.Errorf(llm.CodeLoadFailed, "model", "the model %q cannot be served: %s", t.id, redactPaths(err.Error()))
	}
	mi.ID = t.id
	if t.adapter != nil {
		mi.Parent = t.base.Name
	}
	return mi, nil
}

// coldInfo reads (once) what validation needs of a model not loaded.
func (p *Pool) coldInfo(e Entry) (llm.ModelInfo, error) {
	p.infoMu.Lock()
	defer p.infoMu.Unlock()
	if mi, ok := p.infos[e.Name]; ok {
		return mi, nil
	}
	if p.opts.Size == nil {
		return llm.ModelInfo{State: llm.StateAvailable}, nil
	}
	_, mi, err := p.opts.Size(e)
	if err != nil {
		return mi, err
	}
	mi.State = llm.StateAvailable
	p.infos[e.Name] = mi
	return mi, nil
}

// Models lists every servable name with its state: added models first,
// then the catalog's.
func (p *Pool) Models(context.Context) []llm.ModelInfo {
	p.mu.RLock()
	var out []llm.ModelInfo
	for _, name := range p.order {
		out = append(out, p.static[name].Info(name))
	}
	live := make(map[string]*Runner, len(p.live))
	for k, v := range p.live {
		live[k] = v
	}
	p.mu.RUnlock()
	if p.opts.Catalog == nil {
		return out
	}
	loading := p.loadingNames()
	bases := map[string]llm.ModelInfo{}
	for _, e := range p.opts.Catalog.Entries() {
		if e.Kind == KindAdapter {
			// An adapter is served by its base: listed with the base's
			// state and limits, and its Parent.
			mi, ok := bases[e.Base]
			if !ok {
				continue
			}
			mi.ID, mi.Parent = e.Name, e.Base
			out = append(out, mi)
			continue
		}
		var mi llm.ModelInfo
		switch {
		case live[e.Name] != nil:
			mi = live[e.Name].Info(e.Name)
		default:
			mi, _ = p.coldInfo(e)
			mi.ID, mi.State = e.Name, llm.StateAvailable
			if loading[e.Name] {
				mi.State = llm.StateLoading
			}
		}
		bases[e.Name] = mi
		out = append(out, mi)
	}
	return out
}

func (p *Pool) loadingNames() map[string]bool {
	if !p.running.Load() {
		return nil
	}
	reply := make(chan map[string]bool, 1)
	select {
	case p.inbox <- loadingMsg{reply}:
		return <-reply
	case <-p.done:
		return nil
	}
}

// Generate runs req on its model, waiting for the model to load if it must.
func (p *Pool) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	t, e := p.resolve(req.Model)
	if e != nil {
		return nil, e
	}
	if t.static != nil {
		return t.static.Generate(ctx, req, "")
	}
	start := time.Now()
	r, release, e := p.acquire(ctx, t.base.Name)
	if e != nil {
		return nil, e
	}
	st, e := r.generate(ctx, req, t.adapterName())
	if e != nil {
		release()
		return nil, e
	}
	st.usage.Timings.Load = time.Since(start)
	st.onEnd = release
	return st, nil
}

// withRunner runs f on the model's runner under a lease.
func withRunner[T any](p *Pool, ctx context.Context, model string, f func(*Runner) (T, *llm.Error)) (T, *llm.Error) {
	var zero T
	t, e := p.resolve(model)
	if e != nil {
		return zero, e
	}
	if t.static != nil {
		return f(t.static)
	}
	r, release, e := p.acquire(ctx, t.base.Name)
	if e != nil {
		return zero, e
	}
	defer release()
	return f(r)
}

// Tokenize tokenizes with the named model's vocabulary.
func (p *Pool) Tokenize(ctx context.Context, req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	return withRunner(p, ctx, req.Model, func(r *Runner) (*llm.TokenizeResult, *llm.Error) { return r.Tokenize(req) })
}

// Detokenize turns token ids of the named model into text.
func (p *Pool) Detokenize(ctx context.Context, req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	return withRunner(p, ctx, req.Model, func(r *Runner) (*llm.DetokenizeResult, *llm.Error) { return r.Detokenize(req) })
}

// Embed computes embeddings with the named model.
func (p *Pool) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	return withRunner(p, ctx, req.Model, func(r *Runner) (*llm.EmbedResult, *llm.Error) { return r.Embed(req) })
}

// Load sums the running and waiting sequences of every loaded model.
func (p *Pool) Load() llm.LoadInfo {
	var l llm.LoadInfo
	for _, r := range p.Runners() {
		st := r.sched.Stats()
		l.Running += st.Running
		l.Waiting += st.Waiting
	}
	return l
}

// Messages to the owner goroutine.
type (
	acquireMsg struct {
		name  string
		reply chan grant // buffered: the owner never blocks on it
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

// acquire waits for a lease on a catalog base model. release must be
// called exactly once when the work is done.
func (p *Pool) acquire(ctx context.Context, name string) (*Runner, func(), *llm.Error) {
	if p.opts.Load == nil {
		return nil, nil, llm.Errorf(llm.CodeInternal, "", "the pool has no loader for %q", name)
	}
	req := &acquireMsg{name: name, reply: make(chan grant, 1), since: time.Now()}
	select {
	case p.inbox <- req:
	case <-p.done:
		return nil, nil, llm.Errorf(llm.CodeUnavailable, "", "the server is shutting down")
	case <-ctx.Done():
		return nil, nil, ErrorOf(ctx.Err())
	}
	select {
	case g := <-req.reply:
		if g.err != nil {
			return nil, nil, g.err
		}
		var once sync.Once
		return g.r, func() { once.Do(func() { p.send(releaseMsg{name}) }) }, nil
	case <-ctx.Done():
		p.send(cancelMsg{req})
		return nil, nil, ErrorOf(ctx.Err())
	case <-p.done:
		return nil, nil, llm.Errorf(llm.CodeUnavailable, "", "the server is shutting down")
	}
}

func (p *Pool) send(m any) {
	select {
	case p.inbox <- m:
	case <-p.done:
	}
}

// resident is a catalog model that is loaded or loading. Owned by Run.
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

// Run owns residency until ctx ends; then it unloads every catalog model
// it loaded (after their leases are released or ctx's end makes them
// moot) and returns.
func (p *Pool) Run(ctx context.Context) error {
	p.stats.Models = map[string]ModelStats{}
	p.running.Store(true)
	defer close(p.done)
	defer p.running.Store(false)
	res := map[string]*resident{}
	waiting := map[string][]*acquireMsg{}
	loadTimes := map[string]time.Duration{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()

	grantAll := func(r *resident) {
		for _, w := range waiting[r.name] {
			w.granted = true
			r.inFlight++
			w.reply <- grant{r: r.loaded.Runner}
		}
		delete(waiting, r.name)
		r.lastUsed = time.Now()
	}
	failAll := func(name string, e *llm.Error) {
		for _, w := range waiting[name] {
			w.reply <- grant{err: e}
		}
		delete(waiting, name)
	}
	count := func(name string, f func(*ModelStats)) {
		ms := p.stats.Models[name]
		f(&ms)
		p.stats.Models[name] = ms
	}
	unload := func(r *resident, why string) {
		delete(res, r.name)
		p.mu.Lock()
		delete(p.live, r.name)
		p.mu.Unlock()
		p.stats.Evictions++
		if why == "swap" || why == "drained for a swap" {
			p.stats.Swaps++
		}
		count(r.name, func(m *ModelStats) { m.Evictions++ })
		p.log.Info("unloading model", "model", r.name, "why", why)
		// In this goroutine, so that the memory is free before the load
		// it makes room for starts. The model is idle (no leases), so
		// its scheduler stops at once.
		r.loaded.Close()
	}
	startLoad := func(name string) {
		e, ok := p.opts.Catalog.Base(name)
		if !ok {
			failAll(name, llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist", name))
			return
		}
		bytes, _, _ := p.size(e)
		lctx, cancel := context.WithCancel(ctx)
		r := &resident{name: name, loading: true, bytes: bytes, cancel: cancel, pinned: e.Config.Pinned}
		res[name] = r
		p.stats.ColdStarts++
		p.log.Info("loading model", "model", name, "waiting", len(waiting[name]))
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t0 := time.Now()
			l, err := p.opts.Load(lctx, e)
			m := loadedMsg{name: name, l: l, err: err, took: time.Since(t0)}
			select {
			case p.inbox <- m:
			case <-ctx.Done():
				if l != nil {
					l.Close()
				}
			}
		}()
	}
	plan := func() {
		if p.opts.Catalog == nil {
			return
		}
		now := time.Now()
		in := SwapInput{Now: now, Policy: p.opts.Policy, MaxModels: p.opts.MaxModels, MemoryBudget: p.opts.MemoryBudget,
			MinResidency: p.opts.MinResidency, MaxSwapWait: p.opts.MaxSwapWait}
		for _, r := range res {
			in.Resident = append(in.Resident, ResidentModel{Name: r.name, Bytes: r.bytes, LoadedAt: r.loadedAt, LastUsed: r.lastUsed,
				InFlight: r.inFlight, LoadTime: r.loadTime, Pinned: r.pinned, Loading: r.loading, Draining: r.draining})
		}
		for name, ws := range waiting {
			if len(ws) == 0 {
				continue
			}
			e, _ := p.opts.Catalog.Base(name)
			bytes, _, _ := p.size(e)
			in.Waiting = append(in.Waiting, WaitingModel{Name: name, Bytes: bytes, Requests: len(ws), Since: ws[0].since, LoadTime: loadTimes[name]})
		}
		slices.SortFunc(in.Resident, func(a, b ResidentModel) int { return cmpString(a.Name, b.Name) })
		slices.SortFunc(in.Waiting, func(a, b WaitingModel) int { return cmpString(a.Name, b.Name) })
		out := PlanSwaps(in)
		for _, name := range out.Evict {
			if r := res[name]; r != nil && r.inFlight == 0 && !r.loading {
				unload(r, "swap")
			}
		}
		for _, name := range out.Drain {
			if r := res[name]; r != nil {
				r.draining = true
			}
		}
		for _, name := range out.TooLarge {
			failAll(name, llm.Errorf(llm.CodeLoadFailed, "model", "the model %q does not fit: it needs more than the memory budget (%d bytes) or model slots (%d) allow", name, p.opts.MemoryBudget, p.opts.MaxModels))
		}
		for _, name := range out.Load {
			if res[name] == nil {
				startLoad(name)
			}
		}
		// Keep-alive: unload models idle past it.
		if ka := p.opts.KeepAlive; ka > 0 {
			for _, r := range res {
				if !r.loading && !r.pinned && r.inFlight == 0 && now.Sub(r.lastUsed) > ka {
					unload(r, "keep-alive expired")
				}
			}
		}
	}

	// Pinned models load at start.
	if p.opts.Catalog != nil {
		for _, e := range p.opts.Catalog.Entries() {
			if e.Kind == KindBase && e.Config.Pinned && res[e.Name] == nil {
				startLoad(e.Name)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			for _, r := range res {
				if r.cancel != nil {
					r.cancel()
				}
				if r.loaded != nil {
					unload(r, "shutdown")
				}
			}
			for name := range waiting {
				failAll(name, llm.Errorf(llm.CodeUnavailable, "", "the server is shutting down"))
			}
			p.wg.Wait()
			return nil
		case <-tick.C:
			if len(waiting) > 0 || p.opts.KeepAlive > 0 {
				plan()
			}
		case m := <-p.inbox:
			switch m := m.(type) {
			case *acquireMsg:
				r := res[m.name]
				if r != nil && !r.loading && !r.draining {
					m.granted = true
					r.inFlight++
					r.lastUsed = time.Now()
					m.reply <- grant{r: r.loaded.Runner}
					continue
				}
				waiting[m.name] = append(waiting[m.name], m)
				plan()
			case cancelMsg:
				if m.req.granted {
					if r := res[m.req.name]; r != nil {
						r.inFlight--
					}
				} else {
					ws := waiting[m.req.name]
					if i := slices.Index(ws, m.req); i >= 0 {
						waiting[m.req.name] = slices.Delete(ws, i, i+1)
					}
					if len(waiting[m.req.name]) == 0 {
						delete(waiting, m.req.name)
						// Nobody waits for this load any more: abandon it.
						if r := res[m.req.name]; r != nil && r.loading {
							r.cancel()
						}
					}
				}
				plan()
			case releaseMsg:
				if r := res[m.name]; r != nil {
					r.inFlight--
					r.lastUsed = time.Now()
					if r.draining && r.inFlight == 0 {
						unload(r, "drained for a swap")
					}
				}
				plan()
			case loadedMsg:
				r := res[m.name]
				if r == nil || !r.loading {
					if m.l != nil {
						m.l.Close()
					}
					continue
				}
				if m.err != nil {
					delete(res, m.name)
					p.stats.LoadFailures++
					count(m.name, func(ms *ModelStats) { ms.LoadFailures++ })
					e := llm.Errorf(llm.CodeLoadFailed, "model", "the model %q failed to load: %s", m.name, loadFailure(m.err))
					if errors.Is(m.err, context.Canceled) {
						e = llm.Errorf(llm.CodeCancelled, "", "the load of %q was abandoned", m.name)
					}
					p.log.Warn("model load failed", "model", m.name, "err", m.err)
					failAll(m.name, e)
					plan()
					continue
				}
				p.stats.Loads++
				count(m.name, func(ms *ModelStats) { ms.Loads++; ms.LoadSeconds += m.took.Seconds() })
				r.loaded, r.loading, r.cancel = m.l, false, nil
				r.loadedAt, r.loadTime = time.Now(), m.took
				if m.l.Bytes > 0 {
					r.bytes = m.l.Bytes
				}
				loadTimes[m.name] = m.took
				p.mu.Lock()
				p.live[m.name] = m.l.Runner
				p.mu.Unlock()
				p.log.Info("model loaded", "model", m.name, "took", m.took.Round(time.Millisecond), "waiting", len(waiting[m.name]))
				grantAll(r)
				plan()
			case statsMsg:
				out := p.stats
				out.Models = make(map[string]ModelStats, len(p.stats.Models)+len(res))
				for k, v := range p.stats.Models {
					out.Models[k] = v
				}
				for name, r := range res {
					ms := out.Models[name]
					ms.InFlight, ms.Resident = r.inFlight, !r.loading
					out.Models[name] = ms
				}
				m.reply <- out
			case loadingMsg:
				out := map[string]bool{}
				for name, r := range res {
					if r.loading {
						out[name] = true
					}
				}
				m.reply <- out
			}
		}
	}
}

// size is the memory estimate of a catalog model (0 when unknown).
func (p *Pool) size(e Entry) (int64, llm.ModelInfo, error) {
	if p.opts.Size == nil {
		return 0, llm.ModelInfo{}, nil
	}
	return p.opts.Size(e)
}

// loadFailure describes a load error without the file paths it may name.
func loadFailure(err error) string {
	return redactPaths(err.Error())
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
