package multiplex

import (
	"context"
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
	// QueueTimeout bounds how long a request waits for its model to load
	// when it sets no deadline of its own (default 60s).
	QueueTimeout time.Duration
	Logger       *slog.Logger
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
	Waiting                        int     // requests waiting for it to load
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
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = time.Minute
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
	var mi llm.ModelInfo
	if r != nil {
		mi = r.Info(t.id)
	} else {
		var err error
		if mi, err = p.coldInfo(t.base); err != nil {
			return llm.ModelInfo{}, llm.Errorf(llm.CodeLoadFailed, "model", "the model %q cannot be served: %s", t.id, redactPaths(err.Error()))
		}
		mi.ID = t.id
	}
	if t.adapter != nil {
		mi.Parent = t.base.Name
	}
	mi.Defaults = t.base.Config.Sampling.Clone() // an adapter's are its base's
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
	r, release, e := p.acquire(ctx, t.base.Name, req.Params.Deadline)
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
	r, release, e := p.acquire(ctx, t.base.Name, time.Time{})
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

// Load sums the load of every loaded model: its scheduler's sequences
// and KV cells, and the requests waiting for a model to load. Active
// lists the loaded models with their loaded adapters (each as ADAPTER and
// BASE:ADAPTER); MaxActive is the base-model bound (--max-models, else the
// catalog's bases) plus the catalog's adapters, twice (their two names).
func (p *Pool) Load() llm.LoadInfo {
	var l llm.LoadInfo
	for name, r := range p.Runners() {
		st := r.sched.Stats()
		l.Running += st.Running
		l.Waiting += st.Waiting
		l.KVCellsActive += st.KV.CellsActive
		l.KVCells += st.KV.Cells
		l.Active = append(l.Active, name)
		// An adapter serves under its own name and as BASE:ADAPTER: both
		// are listed, so that a router matching the request's model name
		// (the inference extension's LoRA affinity) finds either.
		for _, a := range st.Adapters {
			l.Active = append(l.Active, a, name+":"+a)
		}
	}
	for name, m := range p.Stats().Models {
		l.Waiting += m.Waiting
		if m.Waiting > 0 {
			l.Loading = append(l.Loading, name)
		}
	}
	if c := p.opts.Catalog; c != nil {
		bases, adapters := 0, 0
		for _, e := range c.Entries() {
			switch e.Kind {
			case KindBase:
				bases++
				if e.Config.Pinned && !slices.Contains(l.Active, e.Name) && l.Unready == "" {
					l.Unready = fmt.Sprintf("pinned model %s is not loaded yet", e.Name)
				}
			case KindAdapter:
				adapters++
			}
		}
		if p.opts.MaxModels > 0 {
			bases = min(bases, p.opts.MaxModels)
		}
		l.MaxActive = bases + 2*adapters // each adapter listed under its two names
	} else {
		l.MaxActive = len(l.Active)
	}
	l.Tidy()
	return l
}

// acquire waits for a lease on a catalog base model, until deadline (zero:
// QueueTimeout from now). release must be called exactly once when the
// work is done.
func (p *Pool) acquire(ctx context.Context, name string, deadline time.Time) (*Runner, func(), *llm.Error) {
	if p.opts.Load == nil {
		return nil, nil, llm.Errorf(llm.CodeInternal, "", "the pool has no loader for %q", name)
	}
	now := time.Now()
	if deadline.IsZero() {
		deadline = now.Add(p.opts.QueueTimeout)
	}
	req := &acquireMsg{name: name, reply: make(chan grant, 1), since: now, deadline: deadline}
	timer := time.NewTimer(deadline.Sub(now))
	defer timer.Stop()
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
	case <-timer.C:
		p.send(cancelMsg{req})
		return nil, nil, &llm.Error{Code: llm.CodeOverloaded, Message: fmt.Sprintf("the model %q did not become available within %v", name, deadline.Sub(now).Round(time.Millisecond)), RetryAfter: p.opts.MaxSwapWait}
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
