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
	"syscall"
	"time"

	"github.com/llmux/llmux/llm"
)

// SetOptions configure a Set of replica processes.
type SetOptions struct {
	// Replicas is how many processes serve (default 1).
	Replicas int
	// Process is the template of each replica's process; its Name is the
	// prefix of the replicas' names (name-0, name-1, ...).
	Process ProcessOptions
	// Customize, when set, adapts replica i's process (its GPUs: added
	// arguments and environment).
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
	// 30s.
	RetryWait time.Duration
	Logger    *slog.Logger
}

// member is one replica slot of the set. mu guards every field.
type member struct {
	name     string
	index    int
	mu       sync.Mutex
	proc     *process
	state    string // starting, ready, restarting, failed, stopped
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
// produced anything on another replica when its replica fails.
type Set struct {
	opts    SetOptions
	log     *slog.Logger
	members []*member
	ready   chan struct{} // 1-slot wake: some replica became ready
	rngMu   sync.Mutex    // guards rng
	rng     *rand.Rand

	adaptersMu sync.Mutex // guards adapters
	// adapters registered at run time, replayed on replicas that start.
	adapters []llm.AdapterRequest
}

var _ llm.Backend = (*Set)(nil)

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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Process.Name == "" {
		o.Process.Name = "replica"
	}
	s := &Set{opts: o, log: o.Logger, ready: make(chan struct{}, 1), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	for i := range o.Replicas {
		s.members = append(s.members, &member{name: fmt.Sprintf("%s-%d", o.Process.Name, i), index: i, state: "starting",
			loaded: map[string]bool{}, loading: map[string]bool{}})
	}
	return s
}

// Run starts every replica and keeps it running until ctx ends; then it
// stops them (SIGTERM, then SIGKILL after 10 s) and returns.
func (s *Set) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, m := range s.members {
		wg.Add(1)
		go func() { defer wg.Done(); s.supervise(ctx, m) }()
	}
	wg.Wait()
	return nil
}

// supervise runs one replica: start, check its health, restart it with
// growing backoff when it exits or stops answering.
func (s *Set) supervise(ctx context.Context, m *member) {
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
			m.state, m.lastErr = "failed", err.Error()
			m.restarts++
			m.mu.Unlock()
			s.log.Error("replica failed to start", "replica", m.name, "err", err, "retry_in", backoff)
		} else {
			s.replayAdapters(ctx, p)
			m.mu.Lock()
			m.proc, m.state, m.lastErr = p, "ready", ""
			m.mu.Unlock()
			s.log.Info("replica ready", "replica", m.name, "pid", p.pid())
			s.wake()
			why := s.watch(ctx, m, p)
			m.mu.Lock()
			m.proc, m.ongoing = nil, 0
			clear(m.loaded)
			clear(m.loading)
			if ctx.Err() != nil {
				m.state = "stopped"
				m.mu.Unlock()
				p.stop(10 * time.Second)
				break
			}
			m.state, m.lastErr = "restarting", why
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
	m.state = "stopped"
	m.mu.Unlock()
}

// watch polls a running replica until it exits, fails three health checks
// in a row, or ctx ends; it returns why it stopped watching.
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
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			models, e := call[empty, []llm.ModelInfo](cctx, p.client, "Models", &empty{})
			cancel()
			if e != nil {
				if failed++; failed >= 3 {
					return "failed 3 health checks: " + e.Message
				}
				continue
			}
			failed = 0
			m.mu.Lock()
			clear(m.loaded)
			for _, mi := range models {
				switch mi.State {
				case llm.StateLoaded:
					m.loaded[mi.ID] = true
					delete(m.loading, mi.ID)
				case llm.StateAvailable:
					// A load this set caused shows as loading until the
					// replica reports it loaded (or the next check after
					// it failed).
				}
			}
			m.mu.Unlock()
		}
	}
}

func (s *Set) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Status describes every replica.
func (s *Set) Status() []ReplicaStatus {
	out := make([]ReplicaStatus, 0, len(s.members))
	for _, m := range s.members {
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
	states := make([]ReplicaState, len(s.members))
	for i, m := range s.members {
		m.mu.Lock()
		states[i] = ReplicaState{Ready: m.state == "ready" && !tried[m], Ongoing: m.ongoing, MaxOngoing: s.opts.MaxOngoing, Loaded: copyOf(m.loaded), Loading: copyOf(m.loading)}
		m.mu.Unlock()
	}
	s.rngMu.Lock()
	i := Pick(model, prefix, states, s.rng.IntN)
	s.rngMu.Unlock()
	if i < 0 {
		return nil, nil
	}
	m := s.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != "ready" || m.proc == nil {
		return nil, nil
	}
	m.ongoing++
	if model != "" && !m.loaded[model] {
		m.loading[model] = true // this request makes it load the model
	}
	return m, m.proc
}

// anyReady reports whether some replica is ready.
func (s *Set) anyReady() bool {
	for _, m := range s.members {
		m.mu.Lock()
		r := m.state == "ready"
		m.mu.Unlock()
		if r {
			return true
		}
	}
	return false
}

func (m *member) done() {
	m.mu.Lock()
	if m.ongoing > 0 {
		m.ongoing--
	}
	m.mu.Unlock()
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
// chosen one is unreachable or overloaded, and waiting (up to RetryWait)
// when none is ready. On success the request still counts as ongoing on
// the returned member: the caller calls its done.
func with[T any](ctx context.Context, s *Set, model string, prefix uint64, f func(*Client) (T, *llm.Error)) (T, *member, *process, *llm.Error) {
	var zero T
	tried := map[*member]bool{}
	var overload *llm.Error
	deadline := time.Now().Add(s.opts.RetryWait)
	for {
		m, p := s.pick(model, prefix, tried)
		if m == nil {
			if overload != nil {
				return zero, nil, nil, overload
			}
			if time.Now().After(deadline) {
				if s.anyReady() {
					return zero, nil, nil, &llm.Error{Code: llm.CodeOverloaded, Message: "every replica is at its max_ongoing_requests", RetryAfter: time.Second}
				}
				return zero, nil, nil, llm.Errorf(llm.CodeUnavailable, "", "no replica is ready")
			}
			clear(tried)
			select {
			case <-ctx.Done():
				return zero, nil, nil, llm.Errorf(llm.CodeCancelled, "", "request cancelled")
			case <-s.ready:
				s.wake() // let other waiters look too
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		v, e := f(p.client)
		if e == nil {
			return v, m, p, nil
		}
		m.done()
		switch e.Code {
		case llm.CodeUnavailable:
			if crashedOnIt(p) {
				// The replica crashed while it took this request: the
				// request may be what crashed it, so it is not sent to
				// another replica to crash that one too.
				return v, nil, nil, llm.Errorf(llm.CodeInternal, "", "the replica serving this request crashed (%v); the request was not retried", p.err)
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
		return v, nil, nil, e
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
	v, m, _, e := with(ctx, s, model, 0, f)
	if m != nil {
		m.done()
	}
	return v, e
}

// Info asks a replica that serves model.
func (s *Set) Info(ctx context.Context, model string) (llm.ModelInfo, *llm.Error) {
	return unaryOn(ctx, s, model, func(c *Client) (llm.ModelInfo, *llm.Error) { return c.Info(ctx, model) })
}

// Models lists the models of a ready replica (every replica serves the
// same catalog).
func (s *Set) Models(ctx context.Context) []llm.ModelInfo {
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
// replica holds its own models). With no replica up the set is unready.
func (s *Set) Load() llm.LoadInfo {
	var l llm.LoadInfo
	for _, m := range s.members {
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
	if !s.anyReady() {
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
	// crashRetried: this request was already retried once after its
	// replica crashed on its own.
	crashRetried bool
}

func (st *setStream) begin() *llm.Error {
	cur, m, p, e := with(st.ctx, st.s, st.req.Model, st.prefix, func(c *Client) (llm.Stream, *llm.Error) { return c.Generate(st.ctx, st.req) })
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
