package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
)

// Env is what Build needs from the server it runs in.
type Env struct {
	Registry *Registry
	// LLM returns the backend serving an llm deployment's models (the
	// model pool, or a replica set).
	LLM func(d DeploymentSpec) (llm.Backend, error)
	// Routes returns the HTTP routes (the OpenAI API) over a backend.
	Routes func(b llm.Backend) http.Handler
}

// App is a built application.
type App struct {
	Spec Spec
	// Handles are its deployments by name.
	Handles map[string]*deploy.Handle
	// Backend is what its routes serve: generation through the ingress,
	// everything else (model lists, tokenizing, embeddings) from its llm
	// deployments.
	Backend llm.Backend
	// Handler serves its routes behind its middleware, at paths relative
	// to its route prefix.
	Handler http.Handler

	built map[string]*built
}

// Build builds a resolved, checked spec: each deployment after the ones
// it calls, then the middleware chain around the routes.
func Build(spec Spec, env Env) (*App, error) { return Rebuild(nil, spec, env) }

// Rebuild builds spec as Build does, keeping what it can of prev (the
// same application before a config change): a deployment whose spec is
// unchanged keeps its replicas (and their state, such as a cache); one
// whose user_config alone changed keeps them too when they are
// Reconfigurable, and gets the new config; anything else — and anything
// that calls a deployment built anew — is built anew. The middleware
// chain is always built anew.
func Rebuild(prev *App, spec Spec, env Env) (*App, error) {
	if probs := Check("application", []Spec{spec}, env.Registry, nil); len(probs) > 0 {
		msgs := make([]string, len(probs))
		for i, p := range probs {
			msgs[i] = p.String()
		}
		return nil, fmt.Errorf("application %s: %s", spec.Name, strings.Join(msgs, "; "))
	}
	a := &App{Spec: spec, Handles: map[string]*deploy.Handle{}, built: map[string]*built{}}
	var llms []llm.Backend
	for _, d := range order(spec.Deployments) {
		if b := a.keep(prev, d); b != nil {
			a.Handles[d.Name], a.built[d.Name] = b.h, b
			if b.backend != nil && !slices.Contains(llms, b.backend) {
				llms = append(llms, b.backend)
			}
			continue
		}
		if d.Kind == KindLLM {
			b, err := env.LLM(d)
			if err != nil {
				return nil, fmt.Errorf("application %s: deployment %s: %w", spec.Name, d.Name, err)
			}
			a.Handles[d.Name] = deploy.ForBackend(d.Name, b)
			a.built[d.Name] = &built{spec: d, h: a.Handles[d.Name], backend: b, fresh: true}
			if !slices.Contains(llms, b) { // deployments may share the pool
				llms = append(llms, b)
			}
			continue
		}
		k, _ := env.Registry.kind(d.Kind)
		cfg, err := decodeConfig(k.Config, d.UserConfig)
		if err != nil {
			return nil, fmt.Errorf("application %s: deployment %s: %w", spec.Name, d.Name, err)
		}
		calls := make([]*deploy.Handle, len(d.Calls))
		for i, c := range d.Calls {
			calls[i] = a.Handles[c]
		}
		b := &built{spec: d, kind: k, fresh: true, cfg: new(atomic.Pointer[any])}
		b.cfg.Store(&cfg)
		h, err := deploy.New(d.Name, deploy.Options{Replicas: d.Replicas, MaxOngoing: d.MaxOngoingRequests, Autoscale: d.Autoscaling}, func() (deploy.Deployment, error) {
			return k.New(*b.cfg.Load(), calls) // the config in force when it is built
		})
		if err != nil {
			return nil, fmt.Errorf("application %s: %w", spec.Name, err)
		}
		b.h = h
		a.Handles[d.Name], a.built[d.Name] = h, b
	}
	a.Backend = &ingressBackend{ingress: a.Handles[spec.Ingress], llms: llms}
	var handler http.Handler
	if env.Routes != nil {
		handler = env.Routes(a.Backend)
	}
	for i := len(spec.Middleware) - 1; i >= 0; i-- {
		m := spec.Middleware[i]
		k, _ := env.Registry.middlewareKind(m.Kind)
		cfg, err := decodeConfig(k.Config, m.Config)
		if err != nil {
			return nil, fmt.Errorf("application %s: middleware %s: %w", spec.Name, m.Kind, err)
		}
		wrap, err := k.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("application %s: middleware %s: %w", spec.Name, m.Kind, err)
		}
		handler = wrap(handler)
	}
	a.Handler = handler
	return a, nil
}

// built is one deployment of a built application.
type built struct {
	spec    DeploymentSpec
	h       *deploy.Handle
	backend llm.Backend // an llm deployment's
	kind    Kind
	cfg     *atomic.Pointer[any] // the decoded user config new replicas get (shared by every build that keeps the handle)
	fresh   bool                 // built by this Build, not kept
}

// keep returns prev's deployment d when it can serve on: same spec but
// for a user config its replicas take through Reconfigure, and every
// deployment it calls kept too (a rebuilt callee means new handles).
func (a *App) keep(prev *App, d DeploymentSpec) *built {
	if prev == nil {
		return nil
	}
	p := prev.built[d.Name]
	if p == nil {
		return nil
	}
	for _, c := range d.Calls {
		if b := a.built[c]; b == nil || b.fresh {
			return nil
		}
	}
	same := p.spec
	same.UserConfig = d.UserConfig
	if !reflect.DeepEqual(same, d) {
		return nil
	}
	if reflect.DeepEqual(p.spec.UserConfig, d.UserConfig) {
		return &built{spec: d, h: p.h, backend: p.backend, kind: p.kind, cfg: p.cfg}
	}
	cfg, err := decodeConfig(p.kind.Config, d.UserConfig)
	if err != nil {
		return nil
	}
	if err := p.h.Each(func(x deploy.Deployment) error {
		r, ok := x.(Reconfigurable)
		if !ok {
			return errNotReconfigurable
		}
		return r.Reconfigure(cfg)
	}); err != nil {
		return nil // built anew with the new config
	}
	p.cfg.Store(&cfg) // replicas the kept handle builds from now on get it
	return &built{spec: d, h: p.h, kind: p.kind, cfg: p.cfg}
}

var errNotReconfigurable = errors.New("not reconfigurable")

// Run runs the application's autoscalers until ctx ends.
func (a *App) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, h := range a.Handles {
		wg.Add(1)
		go func() { defer wg.Done(); h.Run(ctx) }()
	}
	wg.Wait()
	return nil
}

// Mount serves several applications on one handler: each under its route
// prefix (stripped before its routes see the request), the one at "/"
// answering the rest.
func Mount(apps ...*App) http.Handler {
	mux := http.NewServeMux()
	root := false
	for _, a := range apps {
		if a.Spec.RoutePrefix == "/" {
			mux.Handle("/", a.Handler)
			root = true
			continue
		}
		p := a.Spec.RoutePrefix
		mux.Handle(p+"/", http.StripPrefix(p, a.Handler))
	}
	if !root {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"message":"no application serves this path","type":"not_found_error","param":null,"code":"unknown_route"}}`))
		})
	}
	return mux
}

// ingressBackend serves an application's routes: generation goes through
// the ingress deployment (and whatever it calls); the rest is answered by
// the first of its llm deployments that knows the model.
type ingressBackend struct {
	ingress *deploy.Handle
	llms    []llm.Backend
}

var _ llm.Backend = (*ingressBackend)(nil)

func (b *ingressBackend) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	return b.ingress.Stream(ctx, req)
}

// owner is the llm deployment that knows model, or the first one's
// answer when none does (a not-found error names the model).
func (b *ingressBackend) owner(ctx context.Context, model string) (llm.Backend, llm.ModelInfo, *llm.Error) {
	if len(b.llms) == 0 {
		return nil, llm.ModelInfo{}, llm.Errorf(llm.CodeModelNotFound, "model", "this application serves no model")
	}
	var first *llm.Error
	for _, l := range b.llms {
		mi, e := l.Info(ctx, model)
		if e == nil {
			return l, mi, nil
		}
		if first == nil || e.Code != llm.CodeModelNotFound {
			first = e
		}
	}
	return nil, llm.ModelInfo{}, first
}

func (b *ingressBackend) Info(ctx context.Context, model string) (llm.ModelInfo, *llm.Error) {
	_, mi, e := b.owner(ctx, model)
	return mi, e
}

func (b *ingressBackend) Models(ctx context.Context) []llm.ModelInfo {
	var out []llm.ModelInfo
	seen := map[string]bool{}
	for _, l := range b.llms {
		for _, mi := range l.Models(ctx) {
			if !seen[mi.ID] {
				seen[mi.ID] = true
				out = append(out, mi)
			}
		}
	}
	return out
}

func (b *ingressBackend) Tokenize(ctx context.Context, req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	l, _, e := b.owner(ctx, req.Model)
	if e != nil {
		return nil, e
	}
	return l.Tokenize(ctx, req)
}

func (b *ingressBackend) Detokenize(ctx context.Context, req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	l, _, e := b.owner(ctx, req.Model)
	if e != nil {
		return nil, e
	}
	return l.Detokenize(ctx, req)
}

func (b *ingressBackend) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	l, _, e := b.owner(ctx, req.Model)
	if e != nil {
		return nil, e
	}
	return l.Embed(ctx, req)
}

// Load sums the loads of the backends under the llm deployments, each
// once (deployments restricted to parts of one catalog share it).
func (b *ingressBackend) Load() llm.LoadInfo {
	var l llm.LoadInfo
	var seen []llm.Backend
	for _, x := range b.llms {
		if u, ok := x.(interface{ Unwrap() llm.Backend }); ok {
			x = u.Unwrap()
		}
		if slices.Contains(seen, x) {
			continue
		}
		seen = append(seen, x)
		l.Add(x.Load())
	}
	l.Tidy()
	return l
}
