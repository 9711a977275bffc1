package replica

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llmux/llmux/autoscale"
	"github.com/llmux/llmux/llm"
)

// SetOptions configure a Set of replica processes.
type SetOptions struct {
	// Replicas is how many processes serve (default 1), unless Autoscale
	// is set.
	Replicas int
	// Autoscale, when set, scales the set between its MinReplicas and
	// MaxReplicas from the requests in flight (starting with its
	// InitialReplicas), instead of keeping Replicas processes.
	Autoscale *autoscale.Config
	// Describe, when set, answers Info and Models while no replica is
	// ready (scaled to zero, or starting), so that describing a model
	// does not wait for a replica: a request then waits in Generate, where
	// the wait is reported as its start phase. Names it does not know are
	// asked of a replica when adapters were registered at run time.
	Describe Describer
	// Process is the template of each replica's process; its Name is the
	// prefix of the replicas' names (name-0, name-1, ...).
	Process ProcessOptions
	// Customize, when set, adapts replica i's process (its GPUs: added
	// arguments and environment). A replica takes the lowest index no
	// other member of the set holds, so indices stay below the most
	// replicas the set has had at once.
	Customize func(i int, po *ProcessOptions)
	// MaxOngoing bounds the requests in flight on one replica (0: no
	// bound), as Ray Serve's max_ongoing_requests.
	MaxOngoing int
	// MinBackoff and MaxBackoff bound the wait before a replica that exited
	// is restarted (defaults 500ms and 30s); the wait doubles with every
	// exit within a minute of the last start.
	MinBackoff, MaxBackoff time.Duration
	// HealthInterval is how often each replica is asked for its load and
	// models (default 1s); three failed checks in a row restart it.
	HealthInterval time.Duration
	// RetryWait bounds how long a request waits for a replica with room
	// (429 after it) or for one to become ready (503 after it); default
	// 30s. A request does not give up while a replica is starting.
	RetryWait time.Duration
	// StopGrace is how long a replica that is stopped (shutdown, or
	// scaled down once drained) has to exit after SIGTERM before it is
	// killed (default 10s).
	StopGrace time.Duration
	Logger    *slog.Logger
}

// Describer describes models without running them (a multiplex.Pool
// that is not running does).
type Describer interface {
	Info(ctx context.Context, model string) (llm.ModelInfo, *llm.Error)
	Models(ctx context.Context) []llm.ModelInfo
}

// Member states.
const (
	stateStarting   = "starting"
	stateReady      = "ready"
	stateRestarting = "restarting"
	stateFailed     = "failed"
	stateDraining   = "draining" // scaled down: takes no new requests, finishes its own
	stateStopping   = "stopping"
	stateStopped    = "stopped"
)

// member is one replica slot of the set. mu guards every field but ctx
// and cancel, which the set's mu guards until the member is launched.
type member struct {
	name     string
	index    int
	ctx      context.Context // ends when the member is retired or the set stops
	cancel   context.CancelFunc
	wake     chan struct{} // 1-slot: retired, or its last request finished
	mu       sync.Mutex
	proc     *process
	state    string
	retired  bool // scaled down: stop once drained, do not restart
	ongoing  int
	restarts int
	loaded   map[string]bool
	loading  map[string]bool
	lastErr  string
}

// ReplicaStatus describes one replica for status pages.
type ReplicaStatus struct {
	Name     string   `json:"name"`
	PID      int      `json:"pid"`
	State    string   `json:"state"`
	Restarts int      `json:"restarts"`
	Ongoing  int      `json:"ongoing"`
	Models   []string `json:"models"`
	LastErr  string   `json:"last_error,omitempty"`
}

// Set is an llm.Backend over replica processes: it starts and supervises
// them, routes each call with Pick, and retries a request that had not
// produced anything on another replica when its replica fails. Scale
// changes how many replicas run; with SetOptions.Autoscale an autoscaler
// calls it from the load.
type Set struct {
	opts  SetOptions
	log   *slog.Logger
	ready chan struct{} // 1-slot wake: some replica became ready
	rngMu sync.Mutex    // guards rng
	rng   *rand.Rand
	auto  *autoscale.Autoscaler // nil without autoscaling
	err   error                 // a configuration error Run returns

	mu      sync.Mutex // guards members, target, runCtx, stopped and wg.Add
	members []*member  // every member until it has stopped after being retired
	target  int
	runCtx  context.Context // set by Run
	stopped bool            // Run's context ended: no more launches
	wg      sync.WaitGroup  // supervise goroutines

	// waiting counts requests waiting for a replica with room or a ready
	// one (ongoing requests not yet on any replica).
	waiting atomic.Int64

	adaptersMu sync.Mutex // guards adapters
	// adapters registered at run time, replayed on replicas that start.
	adapters []llm.AdapterRequest
}

var (
	_ llm.Backend      = (*Set)(nil)
	_ autoscale.Target = (*Set)(nil)
)

// NewSet describes a set; Run starts it.
func NewSet(o SetOptions) *Set {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = time.Second
	}
	if o.RetryWait <= 0 {
		o.RetryWait = 30 * time.Second
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Process.Name == "" {
		o.Process.Name = "replica"
	}
	s := &Set{opts: o, log: o.Logger, ready: make(chan struct{}, 1), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	n := o.Replicas
	if o.Autoscale != nil {
		cfg := *o.Autoscale
		if s.err = cfg.Validate(); s.err != nil {
			s.err = fmt.Errorf("replica set %s: %w", o.Process.Name, s.err)
		}
		n = cfg.Initial()
		s.auto = autoscale.New(o.Process.Name, cfg, s, o.Logger)
	}
	s.Scale(n)
	return s
}

// Run starts the replicas and keeps them running (and, with autoscaling,
// scales them) until ctx ends; then it stops them (SIGTERM, then SIGKILL
// after StopGrace) and returns. It returns a configuration error at once.
func (s *Set) Run(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	s.mu.Lock()
	s.runCtx = ctx
	for _, m := range s.members {
		s.launch(m)
	}
	s.mu.Unlock()
	if s.auto != nil {
		_ = s.auto.Run(ctx) // the configuration was validated by NewSet
	}
	<-ctx.Done()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// supervise runs one replica: start, check its health, restart it with
// growing backoff when it exits or stops answering; once it is retired,
// stop it when it has drained.
func (s *Set) supervise(m *member) {
	defer s.wg.Done()
	ctx := m.ctx
	backoff := s.opts.MinBackoff
	for ctx.Err() == nil {
		po := s.opts.Process
		po.Name = m.name
		po.Command = slices.Clone(po.Command)
		po.Env = slices.Clone(po.Env)
		if s.opts.Customize != nil {
			s.opts.Customize(m.index, &po)
		}
		began := time.Now()
		p, err := start(ctx, po)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			m.mu.Lock()
			m.state, m.lastErr = stateFailed, err.Error()
			m.restarts++
			m.mu.Unlock()
			s.log.Error("replica failed to start", "replica", m.name, "err", err, "retry_in", backoff)
		} else {
			s.replayAdapters(ctx, p)
			// Know what it holds (its pinned models) before it takes
			// requests, rather than a health interval later: the router
			// sends each request where its model is loaded.
			_ = s.refresh(ctx, m, p)
			m.mu.Lock()
			if ctx.Err() != nil || m.retired { // retired, or the set stopped, while it started
				m.state = stateStopping
				m.mu.Unlock()
				p.stop(s.opts.StopGrace)
				break
			}
			m.proc, m.state, m.lastErr = p, stateReady, ""
			m.mu.Unlock()
			s.log.Info("replica ready", "replica", m.name, "pid", p.pid())
			s.wake()
			why := s.watch(ctx, m, p)
			m.mu.Lock()
			m.proc, m.ongoing = nil, 0
			clear(m.loaded)
			clear(m.loading)
			if ctx.Err() != nil || m.retired {
				m.state = stateStopping
				m.mu.Unlock()
				p.stop(s.opts.StopGrace)
				if why != "drained" && ctx.Err() == nil {
					s.log.Warn("a draining replica exited", "replica", m.name, "why", why)
				}
				break
			}
			m.state, m.lastErr = stateRestarting, why
			m.restarts++
			m.mu.Unlock()
			p.kill()
			s.log.Error("replica exited; restarting", "replica", m.name, "why", why, "retry_in", backoff)
		}
		if time.Since(began) > time.Minute {
			backoff = s.opts.MinBackoff
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
	m.mu.Lock()
	m.state = stateStopped
	retired := m.retired
	m.mu.Unlock()
	m.cancel()
	if retired {
		s.remove(m)
		s.log.Info("replica stopped", "replica", m.name)
	}
}

// watch polls a running replica until it exits, fails three health checks
// in a row, has drained after being retired, or ctx ends; it returns why
// it stopped watching.
func (s *Set) watch(ctx context.Context, m *member, p *process) string {
	t := time.NewTicker(s.opts.HealthInterval)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-ctx.Done():
			return "shutdown"
		case <-p.exited:
			return fmt.Sprintf("exited: %v", p.err)
		case <-m.wake:
			m.mu.Lock()
			drained := m.retired && m.ongoing == 0
			if drained {
				m.state = stateStopping // pick no longer takes it
			}
			m.mu.Unlock()
			if drained {
				return "drained"
			}
		case <-t.C:
			if e := s.refresh(ctx, m, p); e != nil {
				if failed++; failed >= 3 {
					return "failed 3 health checks: " + e.Message
				}
				continue
			}
			failed = 0
		}
	}
}

// refresh asks the replica which models it holds (its health check), so
// that the router sends each request where its model is loaded.
func (s *Set) refresh(ctx context.Context, m *member, p *process) *llm.Error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	models, e := call[empty, []llm.ModelInfo](cctx, p.client, "Models", &empty{})
	cancel()
	if e != nil {
		return e
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.loaded)
	for _, mi := range models {
		switch mi.State {
		case llm.StateLoaded:
			m.loaded[mi.ID] = true
			delete(m.loading, mi.ID)
		case llm.StateLoading:
			// Loading on its own (a pinned model at start): the router
			// sends the model's requests here rather than start a second
			// load elsewhere.
			m.loading[mi.ID] = true
		case llm.StateAvailable:
			// A load this set caused shows as loading until the replica
			// reports it loaded (or the next check after it failed).
		}
	}
	return nil
}

func (s *Set) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Status describes every replica, those draining included.
func (s *Set) Status() []ReplicaStatus {
	members := s.snapshot()
	out := make([]ReplicaStatus, 0, len(members))
	for _, m := range members {
		m.mu.Lock()
		st := ReplicaStatus{Name: m.name, State: m.state, Restarts: m.restarts, Ongoing: m.ongoing, LastErr: m.lastErr, Models: []string{}}
		if m.proc != nil {
			st.PID = m.proc.pid()
		}
		for name := range m.loaded {
			st.Models = append(st.Models, name)
		}
		m.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// pick chooses a ready replica for model, skipping those in tried, and
// counts the request as ongoing there; it returns nil when none is
// ready with room.
func (s *Set) pick(model string, prefix uint64, tried map[*member]bool) (*member, *process) {
	members := s.snapshot()
	states := make([]ReplicaState, len(members))
	for i, m := range members {
		m.mu.Lock()
		states[i] = ReplicaState{Ready: m.state == stateReady && !tried[m], Ongoing: m.ongoing, MaxOngoing: s.opts.MaxOngoing, Loaded: copyOf(m.loaded), Loading: copyOf(m.loading)}
		m.mu.Unlock()
	}
	s.rngMu.Lock()
	i := Pick(model, prefix, states, s.rng.IntN)
	s.rngMu.Unlock()
	if i < 0 {
		return nil, nil
	}
	m := members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != stateReady || m.proc == nil {
		return nil, nil
	}
	m.ongoing++
	if model != "" && !m.loaded[model] {
		m.loading[model] = true // this request makes it load the model
	}
	return m, m.proc
}

// anyIn reports whether some replica is in one of the states.
func (s *Set) anyIn(states ...string) bool {
	for _, m := range s.snapshot() {
		m.mu.Lock()
		r := slices.Contains(states, m.state)
		m.mu.Unlock()
		if r {
			return true
		}
	}
	return false
}

// anyReady reports whether some replica is ready.
func (s *Set) anyReady() bool { return s.anyIn(stateReady) }

// done ends one request on m; the last one on a draining replica lets
// it stop.
func (m *member) done() {
	m.mu.Lock()
	if m.ongoing > 0 {
		m.ongoing--
	}
	drained := m.retired && m.ongoing == 0
	m.mu.Unlock()
	if drained {
		m.poke()
	}
}

func copyOf(in map[string]bool) map[string]bool {
	out := make(map[string]bool, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// prefixHash hashes the beginning of a request's prompt for prefix
// affinity.
func prefixHash(req *llm.Request) uint64 {
	h := fnv.New64a()
	n := 0
	add := func(s string) {
		if n >= 256 {
			return
		}
		if len(s) > 256-n {
			s = s[:256-n]
		}
		h.Write([]byte(s))
		n += len(s)
	}
	for _, m := range req.Messages {
		add(m.Role)
		add(m.Content)
	}
	for _, p := range req.Prompts {
		add(p.Text)
		for _, t := range p.Tokens {
			add(fmt.Sprint(t))
		}
	}
	return h.Sum64() | 1
}

// with runs f on a replica chosen for model, retrying on others while the
// chosen one is unreachable or overloaded, and waiting when none is ready
// with room: up to RetryWait, or longer while a replica is starting. A
// request that finds the set scaled to zero pokes the autoscaler, which
// starts a replica at once. On success the request still counts as
// ongoing on the returned member: the caller calls its done. started is
// how long the request waited while no replica was ready (for a replica
// to start).
func with[T any](ctx context.Context, s *Set, model string, prefix uint64, f func(*Client) (T, *llm.Error)) (_ T, _ *member, _ *process, started time.Duration, _ *llm.Error) {
	var zero T
	tried := map[*member]bool{}
	var overload *llm.Error
	deadline := time.Now().Add(s.opts.RetryWait)
	waiting := false // counted in s.waiting
	var noneReady time.Time
	defer func() {
		if waiting {
			s.waiting.Add(-1)
		}
	}()
	for {
		m, p := s.pick(model, prefix, tried)
		if m == nil {
			if overload != nil {
				return zero, nil, nil, started, overload
			}
			if !waiting {
				waiting = true
				s.waiting.Add(1)
			}
			ready := s.anyReady()
			if !ready {
				if noneReady.IsZero() {
					noneReady = time.Now()
				}
				if s.auto != nil && s.scaledToZero() {
					s.auto.Poke()
				}
			} else if !noneReady.IsZero() {
				started += time.Since(noneReady)
				noneReady = time.Time{}
			}
			if time.Now().After(deadline) && !s.anyIn(stateStarting) {
				if ready {
					return zero, nil, nil, started, &llm.Error{Code: llm.CodeOverloaded, Message: "every replica is at its max_ongoing_requests", RetryAfter: time.Second}
				}
				return zero, nil, nil, started, llm.Errorf(llm.CodeUnavailable, "", "no replica is ready")
			}
			clear(tried)
			select {
			case <-ctx.Done():
				return zero, nil, nil, started, llm.Errorf(llm.CodeCancelled, "", "request cancelled")
			case <-s.ready:
				s.wake() // let other waiters look too
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !noneReady.IsZero() {
			started += time.Since(noneReady)
			noneReady = time.Time{}
		}
		if waiting {
			waiting = false
			s.waiting.Add(-1)
		}
		began := time.Now()
		v, e := f(p.client)
		if e == nil {
			return v, m, p, started, nil
		}
		m.done()
		switch e.Code {
		case llm.CodeUnavailable:
			p.noteFailure()
			if p.beganBeforeFailure(began) && crashedOnIt(p) {
				// The replica crashed while it took this request: the
				// request may be what crashed it, so it is not sent to
				// another replica to crash that one too. A call that
				// began after something else had already failed on the
				// replica (a retry sent there as it died) is not blamed.
				return v, nil, nil, started, llm.Errorf(llm.CodeInternal, "", "the replica serving this request crashed (%v); the request was not retried", p.err)
			}
			tried[m] = true
			continue
		case llm.CodeOverloaded:
			tried[m] = true
			if overload == nil || e.RetryAfter < overload.RetryAfter {
				overload = e
			}
			continue
		}
		return v, nil, nil, started, e
	}
}

// crashedOnIt waits briefly for a replica whose call failed to exit, and
// reports whether it crashed on its own (an abort, a segmentation fault,
// a non-zero exit) rather than being killed from outside (SIGKILL: kill
// -9, the out-of-memory killer) or not exiting at all.
func crashedOnIt(p *process) bool {
	select {
	case <-p.exited:
	case <-time.After(time.Second):
		return false
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		return false
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal() != syscall.SIGKILL
	}
	return ee.ExitCode() != 0
}

// unaryOn runs a short call on a replica chosen for model.
func unaryOn[T any](ctx context.Context, s *Set, model string, f func(*Client) (T, *llm.Error)) (T, *llm.Error) {
	v, m, _, _, e := with(ctx, s, model, 0, f)
	if m != nil {
		m.done()
	}
	return v, e
}

// Info asks a replica that serves model; while none is ready, the
// Describer (when there is one) answers.
func (s *Set) Info(ctx context.Context, model string) (llm.ModelInfo, *llm.Error) {
	if d := s.opts.Describe; d != nil && !s.anyReady() {
		mi, e := d.Info(ctx, model)
		if e == nil || e.Code != llm.CodeModelNotFound || !s.hasRuntimeAdapters() {
			return mi, e
		}
	}
	return unaryOn(ctx, s, model, func(c *Client) (llm.ModelInfo, *llm.Error) { return c.Info(ctx, model) })
}

// Models lists the models of a ready replica (every replica serves the
// same catalog); while none is ready, the Describer (when there is one)
// answers.
func (s *Set) Models(ctx context.Context) []llm.ModelInfo {
	if d := s.opts.Describe; d != nil && !s.anyReady() {
		return d.Models(ctx)
	}
	v, _ := unaryOn(ctx, s, "", func(c *Client) ([]llm.ModelInfo, *llm.Error) {
		m := c.Models(ctx)
		if m == nil {
			return nil, llm.Errorf(llm.CodeUnavailable, "", "no answer")
		}
		return m, nil
	})
	return v
}

// Tokenize runs on a replica that serves the model.
func (s *Set) Tokenize(ctx context.Context, req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	return unaryOn(ctx, s, req.Model, func(c *Client) (*llm.TokenizeResult, *llm.Error) { return c.Tokenize(ctx, req) })
}

// Detokenize runs on a replica that serves the model.
func (s *Set) Detokenize(ctx context.Context, req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	return unaryOn(ctx, s, req.Model, func(c *Client) (*llm.DetokenizeResult, *llm.Error) { return c.Detokenize(ctx, req) })
}

// Embed runs on a replica that serves the model.
func (s *Set) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	return unaryOn(ctx, s, req.Model, func(c *Client) (*llm.EmbedResult, *llm.Error) { return c.Embed(ctx, req) })
}

// Load sums the ready replicas' loads: sequences and KV cells add up,
// active and loading names are the union, and MaxActive adds up (each
// replica holds its own models). With no replica up the set is unready,
// unless it autoscales down to zero replicas (then a request starts one).
func (s *Set) Load() llm.LoadInfo {
	var l llm.LoadInfo
	for _, m := range s.snapshot() {
		m.mu.Lock()
		p := m.proc
		m.mu.Unlock()
		if p == nil {
			continue
		}
		x := p.client.Load()
		if x.Unready != "" {
			x.Unready = m.name + ": " + x.Unready
		}
		l.Add(x)
	}
	// Requests waiting in the set for a replica (with room, or to start)
	// are queued too.
	l.Waiting += int(s.waiting.Load())
	if !s.anyReady() && !s.startsOnDemand() {
		l.Unready = "no replica is ready"
	}
	l.Tidy()
	return l
}

// Generate starts req on a replica. If that replica fails before the
// request produced anything, the request starts again on another (or on
// the same one once it is back); a stream that has produced events ends
// with an error event instead.
func (s *Set) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	st := &setStream{s: s, ctx: ctx, req: req, prefix: prefixHash(req)}
	if e := st.begin(); e != nil {
		return nil, e
	}
	return st, nil
}

// setStream is a Generate stream on some replica of a set.
type setStream struct {
	s       *Set
	ctx     context.Context
	req     *llm.Request
	prefix  uint64
	cur     llm.Stream
	m       *member
	p       *process // the replica process serving cur
	started bool     // an event has been handed out
	retries int
	// waited is how long the request waited for a replica to start.
	waited time.Duration
	// crashRetried: this request was already retried once after its
	// replica crashed on its own.
	crashRetried bool
}

func (st *setStream) begin() *llm.Error {
	cur, m, p, waited, e := with(st.ctx, st.s, st.req.Model, st.prefix, func(c *Client) (llm.Stream, *llm.Error) { return c.Generate(st.ctx, st.req) })
	st.waited += waited
	if e != nil {
		return e
	}
	st.cur, st.m, st.p = cur, m, p
	return nil
}

func (st *setStream) Header() llm.Header { return st.cur.Header() }

// Recv returns the next event. When the replica fails before this
// request produced anything, the request starts again on another replica
// (or the same one once it is back): up to three times when the replica
// was killed from outside, and once when it crashed on its own, since the
// request itself may have crashed it.
func (st *setStream) Recv(ctx context.Context) (llm.Event, bool) {
	for {
		ev, ok := st.cur.Recv(ctx)
		failed := ev.Final && ev.Error != nil && ev.Error.Code == llm.CodeUnavailable
		if failed && st.p != nil {
			st.p.noteFailure()
		}
		if failed && !st.started && st.retries < 3 && ctx.Err() == nil {
			own := crashedOnIt(st.p)
			if !own || !st.crashRetried {
				st.crashRetried = st.crashRetried || own
				st.retries++
				st.s.log.Warn("retrying a request whose replica failed before its first token", "replica", st.m.name, "crashed", own, "try", st.retries+1)
				st.release()
				if e := st.begin(); e != nil {
					return llm.Event{Final: true, Error: e}, true
				}
				continue
			}
		}
		if !ev.Final {
			st.started = true
		} else {
			st.release()
			if ev.Usage != nil && st.waited > 0 {
				u := *ev.Usage
				u.Timings.Start = st.waited
				ev.Usage = &u
			}
		}
		return ev, ok
	}
}

func (st *setStream) release() {
	if st.cur != nil {
		st.cur.Close()
	}
	if st.m != nil {
		st.m.done()
		st.m = nil
	}
}

func (st *setStream) Close() { st.release() }
