package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/llmux/llmux/deploy"
)

// Kind is a Go deployment that applications can name: how to read its
// user config and how to build one replica of it.
type Kind struct {
	// Config returns a new value of the kind's user config type (a
	// pointer); user_config is decoded into it strictly (unknown keys are
	// mistakes). If it has a Validate() error method, that runs too. Nil:
	// the kind takes no config.
	Config func() any
	// New builds one replica from the decoded config and the handles the
	// spec's calls name, in that order.
	New func(cfg any, calls []*deploy.Handle) (deploy.Deployment, error)
	// Calls is how many handles it needs (-1: any number).
	Calls int
}

// MiddlewareKind is HTTP middleware that applications can name.
type MiddlewareKind struct {
	Config func() any
	New    func(cfg any) (func(http.Handler) http.Handler, error)
}

// Reconfigurable is a deployment that takes a changed user config without
// being rebuilt (Ray Serve's reconfigure).
type Reconfigurable interface {
	Reconfigure(cfg any) error
}

// Registry holds the kinds an application may name.
type Registry struct {
	mu          sync.RWMutex
	deployments map[string]Kind
	middleware  map[string]MiddlewareKind
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{deployments: map[string]Kind{}, middleware: map[string]MiddlewareKind{}}
}

// Register adds a deployment kind; a name may be registered once.
func (r *Registry) Register(name string, k Kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.deployments[name]; dup || name == KindLLM {
		panic(fmt.Sprintf("app: deployment kind %q registered twice", name))
	}
	r.deployments[name] = k
}

// RegisterMiddleware adds a middleware kind.
func (r *Registry) RegisterMiddleware(name string, k MiddlewareKind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.middleware[name]; dup {
		panic(fmt.Sprintf("app: middleware kind %q registered twice", name))
	}
	r.middleware[name] = k
}

func (r *Registry) kind(name string) (Kind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.deployments[name]
	return k, ok
}

func (r *Registry) middlewareKind(name string) (MiddlewareKind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.middleware[name]
	return k, ok
}

func (r *Registry) hasDeployment(name string) bool { _, ok := r.kind(name); return ok }
func (r *Registry) hasMiddleware(name string) bool { _, ok := r.middlewareKind(name); return ok }

func (r *Registry) deploymentKinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedKeys(r.deployments)
}

func (r *Registry) middlewareKinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedKeys(r.middleware)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkDeployment decodes d's user config and checks its handle count.
func (r *Registry) checkDeployment(d DeploymentSpec) error {
	k, _ := r.kind(d.Kind)
	if k.Calls >= 0 && len(d.Calls) != k.Calls {
		return fmt.Errorf("kind %s calls %d deployment(s); calls: lists %d", d.Kind, k.Calls, len(d.Calls))
	}
	_, err := decodeConfig(k.Config, d.UserConfig)
	return err
}

func (r *Registry) checkMiddleware(m MiddlewareSpec) error {
	k, _ := r.middlewareKind(m.Kind)
	_, err := decodeConfig(k.Config, m.Config)
	return err
}

// decodeConfig decodes raw into a new config value strictly and validates
// it.
func decodeConfig(newConfig func() any, raw map[string]any) (any, error) {
	if newConfig == nil {
		if len(raw) > 0 {
			return nil, fmt.Errorf("this kind takes no config")
		}
		return nil, nil
	}
	cfg := newConfig()
	if len(raw) > 0 {
		b, err := json.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	if v, ok := cfg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	return cfg, nil
}

// ConfigMap turns a typed user config into the spec's map form (its JSON
// keys), so that a spec built in Go equals the one read from YAML.
func ConfigMap(cfg any) (map[string]any, error) {
	if cfg == nil {
		return nil, nil
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("a user config must be a JSON object: %w", err)
	}
	return m, nil
}
