package app

import (
	"fmt"

	"github.com/llmux/llmux/autoscale"
)

// Builder writes a Spec in Go: the same application the config file's
// applications: list describes.
//
//	spec, err := app.New("chat").
//		LLM("small", "tiny").
//		LLM("large", "big").
//		Deploy("router", "keyword-router", routerConfig, "small", "large").
//		Ingress("router").
//		Use("auth", authConfig).
//		Spec()
type Builder struct {
	spec Spec
	err  error
}

// New starts an application at route prefix "/".
func New(name string) *Builder { return &Builder{spec: Spec{Name: name}} }

// Route mounts the application at prefix.
func (b *Builder) Route(prefix string) *Builder { b.spec.RoutePrefix = prefix; return b }

// LLM adds a deployment serving catalog models.
func (b *Builder) LLM(name string, models ...string) *Builder {
	b.spec.Deployments = append(b.spec.Deployments, DeploymentSpec{Name: name, Kind: KindLLM, Models: models})
	return b
}

// Deploy adds a Go deployment of a registered kind with its user config
// (a struct or map; nil for none) and the deployments it calls.
func (b *Builder) Deploy(name, kind string, userConfig any, calls ...string) *Builder {
	cfg, err := ConfigMap(userConfig)
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("deployment %s: %w", name, err)
	}
	b.spec.Deployments = append(b.spec.Deployments, DeploymentSpec{Name: name, Kind: kind, UserConfig: cfg, Calls: calls})
	return b
}

// Scale sets the last added deployment's replicas and its bound on
// requests in flight per replica.
func (b *Builder) Scale(replicas, maxOngoing int) *Builder {
	if n := len(b.spec.Deployments); n > 0 {
		b.spec.Deployments[n-1].Replicas, b.spec.Deployments[n-1].MaxOngoingRequests = replicas, maxOngoing
	}
	return b
}

// Autoscale makes the last added (Go) deployment autoscale.
func (b *Builder) Autoscale(cfg autoscale.Config) *Builder {
	if n := len(b.spec.Deployments); n > 0 {
		b.spec.Deployments[n-1].Autoscaling = &cfg
	}
	return b
}

// Ingress names the deployment the routes call.
func (b *Builder) Ingress(name string) *Builder { b.spec.Ingress = name; return b }

// Use adds HTTP middleware of a registered kind (outermost first).
func (b *Builder) Use(kind string, config any) *Builder {
	cfg, err := ConfigMap(config)
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("middleware %s: %w", kind, err)
	}
	b.spec.Middleware = append(b.spec.Middleware, MiddlewareSpec{Kind: kind, Config: cfg})
	return b
}

// Spec returns the resolved spec.
func (b *Builder) Spec() (Spec, error) {
	if b.err != nil {
		return Spec{}, b.err
	}
	return b.spec.Resolve(), nil
}
