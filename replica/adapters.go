package replica

import (
	"context"
	"slices"

	"github.com/llmux/llmux/llm"
)

var (
	_ llm.AdapterManager = (*Client)(nil)
	_ llm.AdapterManager = (*Set)(nil)
)

// LoadAdapter registers an adapter on the replica.
func (c *Client) LoadAdapter(ctx context.Context, req *llm.AdapterRequest) (llm.ModelInfo, *llm.Error) {
	return call[llm.AdapterRequest, llm.ModelInfo](ctx, c, "LoadAdapter", req)
}

// UnloadAdapter removes an adapter on the replica.
func (c *Client) UnloadAdapter(ctx context.Context, name string) *llm.Error {
	_, e := call[modelArg, empty](ctx, c, "UnloadAdapter", &modelArg{Model: name})
	return e
}

// LoadAdapter registers an adapter on every running replica, and again on
// every replica that starts later.
func (s *Set) LoadAdapter(ctx context.Context, req *llm.AdapterRequest) (llm.ModelInfo, *llm.Error) {
	var info llm.ModelInfo
	for _, p := range s.running() {
		mi, e := p.client.LoadAdapter(ctx, req)
		if e != nil {
			return mi, e
		}
		info = mi
	}
	s.adaptersMu.Lock()
	s.adapters = append(s.adapters, *req)
	s.adaptersMu.Unlock()
	return info, nil
}

// UnloadAdapter removes an adapter on every running replica and from what
// restarted replicas are given.
func (s *Set) UnloadAdapter(ctx context.Context, name string) *llm.Error {
	s.adaptersMu.Lock()
	s.adapters = slices.DeleteFunc(s.adapters, func(a llm.AdapterRequest) bool { return a.Name == name })
	s.adaptersMu.Unlock()
	var first *llm.Error
	for _, p := range s.running() {
		if e := p.client.UnloadAdapter(ctx, name); e != nil && first == nil {
			first = e
		}
	}
	return first
}

// hasRuntimeAdapters reports whether adapters were registered at run time.
func (s *Set) hasRuntimeAdapters() bool {
	s.adaptersMu.Lock()
	defer s.adaptersMu.Unlock()
	return len(s.adapters) > 0
}

// running returns the replicas' live processes.
func (s *Set) running() []*process {
	var out []*process
	for _, m := range s.snapshot() {
		m.mu.Lock()
		if m.proc != nil && (m.state == stateReady || m.state == stateDraining) {
			out = append(out, m.proc)
		}
		m.mu.Unlock()
	}
	return out
}

// replayAdapters registers the adapters added at run time on a replica
// that just started.
func (s *Set) replayAdapters(ctx context.Context, p *process) {
	s.adaptersMu.Lock()
	list := slices.Clone(s.adapters)
	s.adaptersMu.Unlock()
	for i := range list {
		if _, e := p.client.LoadAdapter(ctx, &list[i]); e != nil {
			s.log.Warn("could not register an adapter on a restarted replica", "adapter", list[i].Name, "err", e.Message)
		}
	}
}
