package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/server"
)

// reservedPrefixes are the serving process's own routes: the default
// application (every catalog model) answers them at the root.
var reservedPrefixes = []string{"/v1", "/health", "/ready", "/metrics", "/tokenize", "/detokenize", "/-"}

// checkApplicationModels reports an llm deployment naming a model the
// catalog does not have.
func checkApplicationModels(specs []app.Spec, catalog *multiplex.Catalog) error {
	for _, a := range specs {
		for _, d := range a.Deployments {
			for _, m := range d.Models {
				if _, _, err := catalog.Resolve(m); err != nil {
					return fmt.Errorf("application %s: deployment %s: %w", a.Name, d.Name, err)
				}
			}
		}
	}
	return nil
}

// buildApplications builds the config's applications over the serving
// backend: each llm deployment serves its models from it; each
// application gets its own OpenAI routes (with base's limits, its own
// request metrics at PREFIX/metrics, and its own middleware in place of
// --api-key).
//
// The models of llm deployments must be in catalog. prev are the running
// applications, by name, when a reload rebuilds them: what did not change
// keeps its replicas (app.Rebuild).
func buildApplications(specs []app.Spec, catalog *multiplex.Catalog, be llm.Backend, base server.Options, prev map[string]*app.App) ([]*app.App, []server.Mounted, error) {
	if err := checkApplicationModels(specs, catalog); err != nil {
		return nil, nil, err
	}
	var apps []*app.App
	var out []server.Mounted
	reg := defaultRegistry()
	for _, spec := range specs {
		if spec.RoutePrefix == "/" {
			return nil, nil, fmt.Errorf("application %s: route_prefix / belongs to the default application (every catalog model); mount it under a prefix such as /%s", spec.Name, spec.Name)
		}
		for _, p := range reservedPrefixes {
			if spec.RoutePrefix == p || strings.HasPrefix(spec.RoutePrefix, p+"/") {
				return nil, nil, fmt.Errorf("application %s: route_prefix %s is one of llmux's own routes", spec.Name, spec.RoutePrefix)
			}
		}
		opts := base
		opts.APIKeys, opts.Auth, opts.Applications, opts.Deployments = nil, nil, nil, nil
		opts.Registry, opts.Application = prometheus.NewRegistry(), true
		a, err := app.Rebuild(prev[spec.Name], spec, app.Env{Registry: reg,
			LLM:    func(d app.DeploymentSpec) (llm.Backend, error) { return app.Restrict(be, d.Models), nil },
			Routes: func(b llm.Backend) http.Handler { return server.New(b, opts).Handler() },
		})
		if err != nil {
			return nil, nil, err
		}
		apps = append(apps, a)
		out = append(out, server.Mounted{Prefix: spec.RoutePrefix, Handler: a.Handler})
	}
	return apps, out, nil
}

// runApplications runs applications' autoscalers until the returned stop
// is called (a reload replaces them) or ctx ends.
func runApplications(ctx context.Context, apps []*app.App) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, a := range apps {
		wg.Add(1)
		go func() { defer wg.Done(); a.Run(ctx) }()
	}
	return func() { cancel(); wg.Wait() }
}
