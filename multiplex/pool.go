// Package multiplex serves many models behind one llm.Backend: it resolves
// the name a request gives to a loaded model (or adapter variant) and
// runs the request there.
package multiplex

import (
	"context"
	"fmt"
	"sync"

	"github.com/llmux/llmux/llm"
)

// Pool is an llm.Backend over loaded models, each served by a Runner.
type Pool struct {
	mu      sync.RWMutex // guards names, runners and order
	names   map[string]string
	runners map[string]*Runner
	order   []string
}

var _ llm.Backend = (*Pool)(nil)

// NewPool returns an empty pool.
func NewPool() *Pool {
	return &Pool{names: map[string]string{}, runners: map[string]*Runner{}}
}

// Add serves r under name and its aliases. Names must be unique.
func (p *Pool) Add(name string, aliases []string, r *Runner) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range append([]string{name}, aliases...) {
		if n == "" {
			return fmt.Errorf("multiplex: empty model name")
		}
		if _, dup := p.names[n]; dup {
			return fmt.Errorf("multiplex: model name %q is given twice", n)
		}
	}
	for _, n := range append([]string{name}, aliases...) {
		p.names[n] = name
	}
	p.runners[name] = r
	p.order = append(p.order, name)
	return nil
}

// Runners returns the loaded runners by canonical name.
func (p *Pool) Runners() map[string]*Runner {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string]*Runner, len(p.runners))
	for k, v := range p.runners {
		out[k] = v
	}
	return out
}

func (p *Pool) runner(model string) (*Runner, *llm.Error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if model == "" && len(p.order) > 0 {
		model = p.order[0] // routes where the model is optional
	}
	if name, ok := p.names[model]; ok {
		return p.runners[name], nil
	}
	return nil, p.notFound(model)
}

// notFound is the error for an unknown name. Called with p.mu held.
func (p *Pool) notFound(model string) *llm.Error {
	if len(p.order) == 1 {
		return llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist; this server serves %q", model, p.order[0])
	}
	return llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist", model)
}

// Info describes a servable name.
func (p *Pool) Info(_ context.Context, model string) (llm.ModelInfo, *llm.Error) {
	r, e := p.runner(model)
	if e != nil {
		return llm.ModelInfo{}, e
	}
	return r.Info(model), nil
}

// Models lists every servable name (aliases included), in the order they
// were added.
func (p *Pool) Models(context.Context) []llm.ModelInfo {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []llm.ModelInfo
	for _, name := range p.order {
		out = append(out, p.runners[name].Info(name))
	}
	return out
}

// Generate runs req on the model it names.
func (p *Pool) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	r, e := p.runner(req.Model)
	if e != nil {
		return nil, e
	}
	return r.Generate(ctx, req, "")
}

// Tokenize tokenizes with the named model's vocabulary.
func (p *Pool) Tokenize(_ context.Context, req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	r, e := p.runner(req.Model)
	if e != nil {
		return nil, e
	}
	return r.Tokenize(req)
}

// Detokenize turns token ids of the named model into text.
func (p *Pool) Detokenize(_ context.Context, req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	r, e := p.runner(req.Model)
	if e != nil {
		return nil, e
	}
	return r.Detokenize(req)
}

// Embed computes embeddings with the named model.
func (p *Pool) Embed(_ context.Context, req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	r, e := p.runner(req.Model)
	if e != nil {
		return nil, e
	}
	return r.Embed(req)
}

// Load sums the running and waiting sequences of every loaded model.
func (p *Pool) Load() llm.LoadInfo {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var l llm.LoadInfo
	for _, r := range p.runners {
		st := r.sched.Stats()
		l.Running += st.Running
		l.Waiting += st.Waiting
	}
	return l
}
