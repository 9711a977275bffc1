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
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

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
	// Replicas is how many instances serve (default 1).
	Replicas int
	// MaxOngoing bounds the requests in flight on one replica (0: no
	// bound); when every replica is full, calls wait for room until their
	// context ends.
	MaxOngoing int
}

// Handle calls a deployment.
type Handle struct {
	name string
	// Exactly one of reps (a Go deployment) and backend (an LLM deployment).
	reps       []*goReplica
	maxOngoing int
	backend    llm.Backend

	mu   sync.Mutex // guards rng and wake
	rng  *rand.Rand
	wake chan struct{} // closed and replaced when a replica frees room
}

// goReplica is one instance of a Go deployment.
type goReplica struct {
	d       Deployment
	mu      sync.Mutex // guards ongoing
	ongoing int
}

// New starts a Go deployment: build is called once per replica.
func New(name string, opts Options, build func() (Deployment, error)) (*Handle, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	h := &Handle{name: name, maxOngoing: opts.MaxOngoing, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)), wake: make(chan struct{})}
	for i := range opts.Replicas {
		d, err := build()
		if err != nil {
			return nil, fmt.Errorf("deployment %s: replica %d: %w", name, i, err)
		}
		h.reps = append(h.reps, &goReplica{d: d})
	}
	return h, nil
}

// ForBackend is a handle to an LLM deployment (a replica set, or a pool in
// this process).
func ForBackend(name string, b llm.Backend) *Handle {
	return &Handle{name: name, backend: b}
}

// Name is the deployment's name.
func (h *Handle) Name() string { return h.name }

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
// called in turn, across processes.
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
	r, e := h.acquire(ctx)
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
	return &handleStream{Stream: st, done: func() { h.release(r); cancel() }}, nil
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
// requests), waiting for room when every replica is full.
func (h *Handle) acquire(ctx context.Context) (*goReplica, *llm.Error) {
	for {
		h.mu.Lock()
		wake := h.wake
		n := len(h.reps)
		a := h.reps[h.rng.IntN(n)]
		b := a
		if n > 1 {
			i := h.rng.IntN(n - 1)
			if h.reps[i] == a {
				i = n - 1
			}
			b = h.reps[i]
		}
		h.mu.Unlock()
		if r := h.tryTake(a, b); r != nil {
			return r, nil
		}
		// Both sampled replicas are full: take any with room, else wait.
		for _, r := range h.reps {
			if h.tryTake(r, r) != nil {
				return r, nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, llm.Errorf(llm.CodeOverloaded, "", "deployment %s: every replica is at max_ongoing_requests", h.name)
		}
	}
}

// tryTake counts a request on the less busy of a and b if it has room.
func (h *Handle) tryTake(a, b *goReplica) *goReplica {
	a.mu.Lock()
	oa := a.ongoing
	a.mu.Unlock()
	b.mu.Lock()
	ob := b.ongoing
	b.mu.Unlock()
	r := a
	if ob < oa {
		r = b
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if h.maxOngoing > 0 && r.ongoing >= h.maxOngoing {
		return nil
	}
	r.ongoing++
	return r
}

func (h *Handle) release(r *goReplica) {
	r.mu.Lock()
	r.ongoing--
	r.mu.Unlock()
	h.mu.Lock()
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
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

// Status of a Go deployment's replicas (requests in flight on each).
func (h *Handle) Status() []replica.ReplicaStatus {
	out := make([]replica.ReplicaStatus, 0, len(h.reps))
	for i, r := range h.reps {
		r.mu.Lock()
		out = append(out, replica.ReplicaStatus{Name: fmt.Sprintf("%s-%d", h.name, i), State: "ready", Ongoing: r.ongoing, Models: []string{}})
		r.mu.Unlock()
	}
	return out
}

// handleStream releases the call's replica slot once, when the stream is
// closed or ends.
type handleStream struct {
	llm.Stream
	once sync.Once
	done func()
}

func (s *handleStream) Recv(ctx context.Context) (llm.Event, bool) {
	ev, ok := s.Stream.Recv(ctx)
	if !ok || ev.Final {
		s.once.Do(s.done)
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
