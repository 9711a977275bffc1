// Package deploy composes deployments, in the manner of Ray Serve: a
// deployment is Go code (or an LLM served by replica processes) that
// turns a generation request into a stream of events; it runs as several
// replicas; callers reach it through a Handle, which picks a replica,
// bounds the requests in flight on each, and carries the caller's context
// (cancellation, deadline) and the multiplexed model id.
//
// Go deployments run their replicas in process: each replica is one value
// of the user's type, and a panic in it fails that request with an
// internal error instead of taking the process down. An LLM deployment's
// replicas are processes behind an llm.Backend (replica.Set), reached
// through the same Handle.
package deploy

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmux/llmux/autoscale"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/replica"
)

// Deployment is Go code that serves requests. It may call other
// deployments through handles it was given when it was built.
type Deployment interface {
	Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error)
}

// Options configure a Go deployment.
type Options struct {
	// Replicas is how many instances serve (default 1), unless Autoscale
	// is set.
	Replicas int
	// MaxOngoing bounds the requests in flight on one replica (0: no
	// bound); when every replica is full, calls wait for room until their
	// context ends.
	MaxOngoing int
	// Autoscale, when set, scales the deployment between its MinReplicas
	// and MaxReplicas from the calls in flight, starting with its
	// InitialReplicas; Handle.Run runs the autoscaler.
	Autoscale *autoscale.Config
	// HealthCheckPeriod and HealthCheckTimeout pace the health checks of
	// a deployment whose type is a Checker (defaults 10 s and 30 s).
	HealthCheckPeriod  time.Duration
	HealthCheckTimeout time.Duration
	Logger             *slog.Logger
}

// Handle calls a deployment.
type Handle struct {
	name string
	// Exactly one of build (a Go deployment) and backend (an LLM deployment).
	build      func() (Deployment, error)
	maxOngoing int
	backend    llm.Backend
	log        *slog.Logger
	auto       *autoscale.Autoscaler // nil without autoscaling

	healthPeriod, healthTimeout time.Duration

	scaleMu sync.Mutex // serializes Scale (replicas are built outside mu)

	mu     sync.Mutex   // guards reps, target, next, rng and wake
	reps   []*goReplica // serving and draining replicas
	target int
	next   int // number of the next replica built (for its name)
	rng    *rand.Rand
	wake   chan struct{} // closed and replaced when a replica frees room or joins

	// waiting counts calls waiting for a replica with room.
	waiting atomic.Int64
}

// goReplica is one instance of a Go deployment.
type goReplica struct {
	d        Deployment
	name     string
	mu       sync.Mutex // guards ongoing, draining and closed
	ongoing  int
	draining bool // scaled away: takes no new call, closes after its last
	closed   bool
}

var _ autoscale.Target = (*Handle)(nil)

// New starts a Go deployment: build is called once per replica, now for
// the initial replicas and later for those the deployment scales up to.
// A replica that was scaled down is closed (its Close method, if it has
// one, is called) after its last call.
func New(name string, opts Options, build func() (Deployment, error)) (*Handle, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := &Handle{name: name, build: build, maxOngoing: opts.MaxOngoing, log: opts.Logger,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)), wake: make(chan struct{}),
		healthPeriod: cmp.Or(opts.HealthCheckPeriod, DefaultHealthCheckPeriod), healthTimeout: cmp.Or(opts.HealthCheckTimeout, DefaultHealthCheckTimeout)}
	n := opts.Replicas
	if opts.Autoscale != nil {
		cfg := *opts.Autoscale
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("deployment %s: %w", name, err)
		}
		n = cfg.Initial()
		h.auto = autoscale.New(name, cfg, h, opts.Logger)
	}
	h.target = n
	for range n {
		r, err := h.newReplica()
		if err != nil {
			return nil, err
		}
		h.reps = append(h.reps, r)
	}
	return h, nil
}

// newReplica builds one replica; a panic in the user's constructor is
// an error.
func (h *Handle) newReplica() (_ *goReplica, err error) {
	h.mu.Lock()
	i := h.next
	h.next++
	h.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("deployment %s: replica %d: its constructor panicked: %v", h.name, i, p)
		}
	}()
	d, err := h.build()
	if err != nil {
		return nil, fmt.Errorf("deployment %s: replica %d: %w", h.name, i, err)
	}
	return &goReplica{d: d, name: fmt.Sprintf("%s-%d", h.name, i)}, nil
}

// ForBackend is a handle to an LLM deployment (a replica set, or a pool in
// this process).
func ForBackend(name string, b llm.Backend) *Handle {
	return &Handle{name: name, backend: b}
}

// Name is the deployment's name.
func (h *Handle) Name() string { return h.name }

// Run runs the deployment's autoscaler and health checks until ctx ends
// (an LLM deployment's replica set runs its own).
func (h *Handle) Run(ctx context.Context) error {
	if h.backend == nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() { defer close(done); h.runHealth(ctx) }()
	}
	if h.auto == nil {
		<-ctx.Done()
		return nil
	}
	return h.auto.Run(ctx)
}

// runHealth checks the replicas every health period until ctx ends.
func (h *Handle) runHealth(ctx context.Context) {
	t := time.NewTicker(h.healthPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.checkHealth(ctx)
		}
	}
}

// Autoscaling reports the autoscaler's last decision (nil without
// autoscaling).
func (h *Handle) Autoscaling() *autoscale.Status {
	if h.auto == nil {
		return nil
	}
	st := h.auto.Status()
	return &st
}

// Scale asks for n replicas of a Go deployment. Missing ones are built (a
// draining replica is taken back first); a replica that fails to build
// is logged and built again at the next Scale. Surplus ones drain: they
// take no new calls, and are closed after their last one.
func (h *Handle) Scale(n int) {
	if h.backend != nil {
		return // an LLM deployment scales itself (replica.Set)
	}
	n = max(n, 0)
	h.scaleMu.Lock()
	defer h.scaleMu.Unlock()
	h.mu.Lock()
	h.target = n
	var active, draining []*goReplica
	for _, r := range h.reps {
		r.mu.Lock()
		if r.draining {
			draining = append(draining, r)
		} else {
			active = append(active, r)
		}
		r.mu.Unlock()
	}
	undrained := false
	for len(active) < n && len(draining) > 0 {
		r := draining[0]
		draining = draining[1:]
		r.mu.Lock()
		if !r.closed {
			r.draining, undrained = false, true
			active = append(active, r)
		}
		r.mu.Unlock()
	}
	need := n - len(active)
	var idle []*goReplica
	if need < 0 {
		// Drain those with the fewest calls in flight, newest first.
		slices.SortStableFunc(active, func(a, b *goReplica) int {
			oa, ob := a.load(), b.load()
			if oa != ob {
				return ob - oa
			}
			return 0
		})
		for _, r := range active[n:] {
			r.mu.Lock()
			r.draining = true
			if r.ongoing == 0 {
				r.closed = true
				idle = append(idle, r)
			}
			r.mu.Unlock()
		}
		h.reps = slices.DeleteFunc(h.reps, func(r *goReplica) bool { return slices.Contains(idle, r) })
	}
	if undrained {
		h.signal()
	}
	h.mu.Unlock()
	for _, r := range idle {
		closeDeployment(r.d)
	}
	for range need {
		r, err := h.newReplica()
		if err != nil {
			h.log.Error("could not start a replica", "deployment", h.name, "err", err)
			return
		}
		h.mu.Lock()
		h.reps = append(h.reps, r)
		h.signal()
		h.mu.Unlock()
	}
}

// Each calls f on every replica's value (serving and draining), one at a
// time, and returns the first error. A Go deployment only.
func (h *Handle) Each(f func(Deployment) error) error {
	h.mu.Lock()
	reps := slices.Clone(h.reps)
	h.mu.Unlock()
	for _, r := range reps {
		if err := f(r.d); err != nil {
			return err
		}
	}
	return nil
}

func (r *goReplica) load() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ongoing
}

// Ongoing is the calls in flight on the replicas or waiting for one: the
// load the autoscaler samples.
func (h *Handle) Ongoing() int {
	if h.backend != nil {
		l := h.backend.Load()
		return l.Running + l.Waiting
	}
	n := int(h.waiting.Load())
	h.mu.Lock()
	reps := slices.Clone(h.reps)
	h.mu.Unlock()
	for _, r := range reps {
		n += r.load()
	}
	return n
}

// closeDeployment closes a replica's value if it can be closed.
func closeDeployment(d Deployment) {
	defer func() { _ = recover() }()
	switch c := d.(type) {
	case interface{ Close() error }:
		_ = c.Close()
	case interface{ Close() }:
		c.Close()
	}
}

// signal wakes calls waiting for room. h.mu is held.
func (h *Handle) signal() {
	close(h.wake)
	h.wake = make(chan struct{})
}

// CallOption changes one call.
type CallOption func(*callOptions)

type callOptions struct {
	model   string
	timeout time.Duration
}

// WithModel sets the multiplexed model id the request is for (Ray Serve's
// multiplexed_model_id), overriding the request's model.
func WithModel(id string) CallOption { return func(o *callOptions) { o.model = id } }

// WithTimeout bounds the whole call, the stream's end included.
func WithTimeout(d time.Duration) CallOption { return func(o *callOptions) { o.timeout = d } }

// Stream calls the deployment and returns its events. Closing the stream,
// or ending ctx, cancels the call in the deployment and everything it
// called in turn, across processes. A call that waited for a replica to
// start (the deployment was scaled to zero) reports the wait as the
// Start timing of its final event's usage.
func (h *Handle) Stream(ctx context.Context, req *llm.Request, opts ...CallOption) (llm.Stream, *llm.Error) {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	if o.model != "" {
		r := *req
		r.Model = o.model
		req = &r
	}
	cancel := context.CancelFunc(func() {})
	if o.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
	}
	if h.backend != nil {
		st, e := h.backend.Generate(ctx, req)
		if e != nil {
			cancel()
			return nil, e
		}
		return &handleStream{Stream: st, done: cancel}, nil
	}
	r, waited, e := h.acquire(ctx)
	if e != nil {
		cancel()
		return nil, e
	}
	st, e := r.generate(ctx, req)
	if e != nil {
		h.release(r)
		cancel()
		return nil, e
	}
	return &handleStream{Stream: st, started: waited, done: func() { h.release(r); cancel() }}, nil
}

// generate calls the user's code, turning a panic into an error.
func (r *goReplica) generate(ctx context.Context, req *llm.Request) (st llm.Stream, e *llm.Error) {
	defer func() {
		if p := recover(); p != nil {
			st, e = nil, llm.Errorf(llm.CodeInternal, "", "deployment panicked: %v\n%s", p, debug.Stack())
		}
	}()
	st, e = r.d.Generate(ctx, req)
	if st != nil {
		st = &safeStream{Stream: st}
	}
	return st, e
}

// acquire picks a replica with room (power of two choices on ongoing
// requests), waiting for room when every replica is full, and for a
// replica when there is none (a deployment scaled to zero pokes its
// autoscaler, which starts one at once). waited is how long the call
// waited while there was no replica.
func (h *Handle) acquire(ctx context.Context) (_ *goReplica, waited time.Duration, _ *llm.Error) {
	var none time.Time // since when there has been no replica
	counted := false
	defer func() {
		if counted {
			h.waiting.Add(-1)
		}
	}()
	for {
		h.mu.Lock()
		wake := h.wake
		var serving []*goReplica
		for _, r := range h.reps {
			r.mu.Lock()
			if !r.draining {
				serving = append(serving, r)
			}
			r.mu.Unlock()
		}
		var a, b *goReplica
		if n := len(serving); n > 0 {
			a = serving[h.rng.IntN(n)]
			b = a
			if n > 1 {
				i := h.rng.IntN(n - 1)
				if serving[i] == a {
					i = n - 1
				}
				b = serving[i]
			}
		}
		zero := h.target == 0
		h.mu.Unlock()
		if a != nil {
			if !none.IsZero() {
				waited += time.Since(none)
				none = time.Time{}
			}
			if r := h.tryTake(a, b); r != nil {
				return r, waited, nil
			}
			// Both sampled replicas are full: take any with room, else wait.
			for _, r := range serving {
				if h.tryTake(r, r) != nil {
					return r, waited, nil
				}
			}
		} else {
			if none.IsZero() {
				none = time.Now()
			}
			if zero && h.auto != nil {
				h.auto.Poke()
			}
		}
		if !counted {
			counted = true
			h.waiting.Add(1)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			if a == nil {
				return nil, waited, llm.Errorf(llm.CodeUnavailable, "", "deployment %s: no replica is ready", h.name)
			}
			return nil, waited, llm.Errorf(llm.CodeOverloaded, "", "deployment %s: every replica is at max_ongoing_requests", h.name)
		}
	}
}

// tryTake counts a request on the less busy of a and b if it has room
// and is not draining.
func (h *Handle) tryTake(a, b *goReplica) *goReplica {
	r := a
	if b.load() < a.load() {
		r = b
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.draining || (h.maxOngoing > 0 && r.ongoing >= h.maxOngoing) {
		return nil
	}
	r.ongoing++
	return r
}

// release ends a call on r; a draining replica's last call closes it.
func (h *Handle) release(r *goReplica) {
	r.mu.Lock()
	r.ongoing--
	last := r.draining && r.ongoing == 0 && !r.closed
	if last {
		r.closed = true
	}
	r.mu.Unlock()
	h.mu.Lock()
	if last {
		h.reps = slices.DeleteFunc(h.reps, func(x *goReplica) bool { return x == r })
	}
	h.signal()
	h.mu.Unlock()
	if last {
		closeDeployment(r.d)
	}
}

// Result is a whole call's output.
type Result struct {
	// Texts holds each choice's text, by index.
	Texts  []string
	Finish []llm.Finish
	Usage  llm.Usage
}

// Call calls the deployment and collects its whole output.
func (h *Handle) Call(ctx context.Context, req *llm.Request, opts ...CallOption) (*Result, *llm.Error) {
	st, e := h.Stream(ctx, req, opts...)
	if e != nil {
		return nil, e
	}
	defer st.Close()
	res := &Result{}
	for {
		ev, ok := st.Recv(ctx)
		if !ok {
			if ev.Error != nil {
				return res, ev.Error
			}
			return res, llm.Errorf(llm.CodeCancelled, "", "call cancelled")
		}
		if ev.Final {
			if ev.Usage != nil {
				res.Usage = *ev.Usage
			}
			return res, ev.Error
		}
		for len(res.Texts) <= ev.Index {
			res.Texts = append(res.Texts, "")
			res.Finish = append(res.Finish, "")
		}
		res.Texts[ev.Index] += ev.Text
		if ev.Finish != "" {
			res.Finish[ev.Index] = ev.Finish
		}
		if ev.Error != nil {
			return res, ev.Error
		}
	}
}

// Status of a Go deployment's replicas (requests in flight on each; a
// replica scaled away is "draining" until its last call ends).
func (h *Handle) Status() []replica.ReplicaStatus {
	h.mu.Lock()
	reps := slices.Clone(h.reps)
	h.mu.Unlock()
	out := make([]replica.ReplicaStatus, 0, len(reps))
	for _, r := range reps {
		r.mu.Lock()
		state := "ready"
		if r.draining {
			state = "draining"
		}
		out = append(out, replica.ReplicaStatus{Name: r.name, State: state, Ongoing: r.ongoing, Models: []string{}})
		r.mu.Unlock()
	}
	return out
}

// handleStream releases the call's replica slot once, when the stream is
// closed or ends.
type handleStream struct {
	llm.Stream
	once    sync.Once
	done    func()
	started time.Duration // waited for a replica to start
}

func (s *handleStream) Recv(ctx context.Context) (llm.Event, bool) {
	ev, ok := s.Stream.Recv(ctx)
	if !ok || ev.Final {
		s.once.Do(s.done)
	}
	if ev.Final && ev.Usage != nil && s.started > 0 {
		u := *ev.Usage
		u.Timings.Start += s.started
		ev.Usage = &u
	}
	return ev, ok
}

func (s *handleStream) Close() {
	s.Stream.Close()
	s.once.Do(s.done)
}

// safeStream turns a panic in user code's stream into a final error event.
type safeStream struct {
	llm.Stream
	failed bool
}

func (s *safeStream) Recv(ctx context.Context) (ev llm.Event, ok bool) {
	if s.failed {
		return llm.Event{}, false
	}
	defer func() {
		if p := recover(); p != nil {
			s.failed = true
			ev, ok = llm.Event{Final: true, Error: llm.Errorf(llm.CodeInternal, "", "deployment panicked: %v", p)}, true
		}
	}()
	return s.Stream.Recv(ctx)
}

func (s *safeStream) Header() (h llm.Header) {
	defer func() {
		if recover() != nil {
			h = llm.Header{}
		}
	}()
	return s.Stream.Header()
}

func (s *safeStream) Close() {
	defer func() { _ = recover() }()
	s.Stream.Close()
}
