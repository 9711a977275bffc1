package app

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

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
}

// Build builds a resolved, checked spec: each deployment after the ones
// it calls, then the middleware chain around the routes.
func Build(spec Spec, env Env) (*App, error) {
	if probs := Check("application", []Spec{spec}, env.Registry, nil); len(probs) > 0 {
		msgs := make([]string, len(probs))
		for i, p := range probs {
			msgs[i] = p.String()
		}
		return nil, fmt.Errorf("application %s: %s", spec.Name, strings.Join(msgs, "; "))
	}
	a := &App{Spec: spec, Handles: map[string]*deploy.Handle{}}
	var llms []llm.Backend
	for _, d := range order(spec.Deployments) {
		if d.Kind == KindLLM {
			b, err := env.LLM(d)
			if err != nil {
				return nil, fmt.Errorf("application %s: deployment %s: %w", spec.Name, d.Name, err)
			}
			a.Handles[d.Name] = deploy.ForBackend(d.Name, b)
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
		h, err := deploy.New(d.Name, deploy.Options{Replicas: d.Replicas, MaxOngoing: d.MaxOngoingRequests, Autoscale: d.Autoscaling}, func() (deploy.Deployment, error) {
			return k.New(cfg, calls)
		})
		if err != nil {
			return nil, fmt.Errorf("application %s: %w", spec.Name, err)
		}
		a.Handles[d.Name] = h
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

// Load sums the llm deployments' loads.
func (b *ingressBackend) Load() llm.LoadInfo {
	var l llm.LoadInfo
	for _, x := range b.llms {
		l.Add(x.Load())
	}
	l.Tidy()
	return l
}
