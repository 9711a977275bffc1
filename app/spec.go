// Package app composes applications, as Ray Serve does: an application is
// a set of deployments — LLM deployments served by the model pool or
// replica processes, and Go deployments of the user's code — with one of
// them, the ingress, bound to an HTTP route prefix behind a chain of HTTP
// middleware. Deployments receive handles to the deployments they call
// when they are built (constructor injection).
//
// An application is described by a Spec, plain data that the Go API
// (Builder) and the config file's `applications:` list both produce; Build
// turns a resolved Spec into running deployments and an http.Handler.
package app

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/llmux/llmux/autoscale"
)

// Spec is one application.
type Spec struct {
	Name string `yaml:"name" json:"name"`
	// RoutePrefix is where its HTTP routes are mounted ("/" by default):
	// "/chat" serves /chat/v1/chat/completions and the rest.
	RoutePrefix string `yaml:"route_prefix" json:"route_prefix"`
	// Ingress is the deployment the OpenAI routes call.
	Ingress string `yaml:"ingress" json:"ingress"`
	// Middleware is the HTTP middleware in front of the routes, outermost
	// first (auth, ...).
	Middleware []MiddlewareSpec `yaml:"middleware,omitempty" json:"middleware,omitempty"`
	// Deployments are the application's deployments, each once.
	Deployments []DeploymentSpec `yaml:"deployments" json:"deployments"`
}

// DeploymentSpec is one deployment of an application.
type DeploymentSpec struct {
	Name string `yaml:"name" json:"name"`
	// Kind is "llm" (models from the catalog) or the registered name of a
	// Go deployment (Registry).
	Kind string `yaml:"kind" json:"kind"`
	// Replicas is how many replicas serve it (default 1), unless
	// Autoscaling is set.
	Replicas int `yaml:"replicas,omitempty" json:"replicas,omitempty"`
	// Autoscaling scales a Go deployment's replicas between its bounds
	// from the requests in flight (Ray Serve's autoscaling_config). LLM
	// deployments of llmux serve scale with its --max-replicas flags.
	Autoscaling *autoscale.Config `yaml:"autoscaling_config,omitempty" json:"autoscaling_config,omitempty"`
	// MaxOngoingRequests bounds the requests in flight on one replica (0:
	// no bound).
	MaxOngoingRequests int `yaml:"max_ongoing_requests,omitempty" json:"max_ongoing_requests,omitempty"`
	// Models are the catalog models an llm deployment serves (names or
	// aliases); Go deployments have none.
	Models []string `yaml:"models,omitempty" json:"models,omitempty"`
	// Calls names the deployments it receives handles to, in the order its
	// constructor gets them.
	Calls []string `yaml:"calls,omitempty" json:"calls,omitempty"`
	// UserConfig is handed to the deployment's constructor (and to its
	// Reconfigure, when the config changes).
	UserConfig map[string]any `yaml:"user_config,omitempty" json:"user_config,omitempty"`
}

// MiddlewareSpec is one HTTP middleware of an application.
type MiddlewareSpec struct {
	// Kind is a registered middleware ("auth").
	Kind   string         `yaml:"kind" json:"kind"`
	Config map[string]any `yaml:"config,omitempty" json:"config,omitempty"`
}

// KindLLM is the kind of deployments that serve catalog models.
const KindLLM = "llm"

// Resolve fills the defaults: route prefix "/", one replica, and an
// ingress of the only deployment when there is one.
func (s Spec) Resolve() Spec {
	if s.RoutePrefix == "" {
		s.RoutePrefix = "/"
	}
	if s.RoutePrefix != "/" {
		s.RoutePrefix = "/" + strings.Trim(s.RoutePrefix, "/")
	}
	if s.Ingress == "" && len(s.Deployments) == 1 {
		s.Ingress = s.Deployments[0].Name
	}
	s.Deployments = slices.Clone(s.Deployments)
	for i := range s.Deployments {
		d := &s.Deployments[i]
		if d.Replicas == 0 {
			d.Replicas = 1
		}
		d.UserConfig = normalize(d.UserConfig)
	}
	s.Middleware = slices.Clone(s.Middleware)
	for i := range s.Middleware {
		s.Middleware[i].Config = normalize(s.Middleware[i].Config)
	}
	return s
}

// normalize gives a config map the form JSON gives it (numbers as
// float64, nested maps as map[string]any), whether it came from YAML or
// from a Go value, so equal configs compare equal. A map JSON cannot hold
// is left as it is (Check reports it).
func normalize(m map[string]any) map[string]any {
	if len(m) == 0 {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return m
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return m
	}
	return out
}

// Problem is one mistake in a spec: where (a path of keys and indices,
// "applications[0].deployments[2].calls[1]"), what is wrong, and how to
// fix it.
type Problem struct {
	Path    string
	Message string
	Fix     string
}

func (p Problem) String() string {
	if p.Fix == "" {
		return p.Path + ": " + p.Message
	}
	return p.Path + ": " + p.Message + " (" + p.Fix + ")"
}

// Check finds the mistakes in resolved application specs that need no
// running parts: names, kinds, handles to missing deployments, cycles,
// clashing route prefixes. path is where the list sits ("applications").
// hasModel, when set, says whether the catalog has a model.
func Check(path string, apps []Spec, reg *Registry, hasModel func(string) bool) []Problem {
	var out []Problem
	add := func(p, msg, fix string, args ...any) {
		out = append(out, Problem{Path: p, Message: fmt.Sprintf(msg, args...), Fix: fix})
	}
	names := map[string]int{}
	prefixes := map[string]int{}
	for i, a := range apps {
		ap := fmt.Sprintf("%s[%d]", path, i)
		if a.Name == "" {
			add(ap+".name", "an application needs a name", "add name: <app>")
		} else if j, dup := names[a.Name]; dup {
			add(ap+".name", "application %q is defined twice (also %s[%d])", "give each application its own name", a.Name, path, j)
		} else {
			names[a.Name] = i
		}
		if !strings.HasPrefix(a.RoutePrefix, "/") || strings.ContainsAny(a.RoutePrefix, " ?#*:") {
			add(ap+".route_prefix", "route prefix %q is not a path", "write it as /name", a.RoutePrefix)
		} else if j, dup := prefixes[a.RoutePrefix]; dup {
			add(ap+".route_prefix", "route prefix %q is also %s[%d]'s", "give each application its own route_prefix", a.RoutePrefix, path, j)
		} else {
			for p, j := range prefixes {
				if under(a.RoutePrefix, p) || under(p, a.RoutePrefix) {
					add(ap+".route_prefix", "route prefix %q overlaps %q of %s[%d]", "use prefixes that do not nest", a.RoutePrefix, p, path, j)
				}
			}
			prefixes[a.RoutePrefix] = i
		}
		out = append(out, checkDeployments(ap, a, reg, hasModel)...)
		for k, m := range a.Middleware {
			mp := fmt.Sprintf("%s.middleware[%d]", ap, k)
			if !reg.hasMiddleware(m.Kind) {
				add(mp+".kind", "unknown middleware %q", "use one of: "+strings.Join(reg.middlewareKinds(), ", "), m.Kind)
				continue
			}
			if err := reg.checkMiddleware(m); err != nil {
				add(mp+".config", "%v", "", err)
			}
		}
	}
	return out
}

// under reports whether path p lies under prefix q ("/a/b" under "/a"),
// "/" being under nothing and over nothing (the default application
// answers what the others do not).
func under(p, q string) bool {
	return q != "/" && p != "/" && strings.HasPrefix(p, q+"/")
}

func checkDeployments(ap string, a Spec, reg *Registry, hasModel func(string) bool) []Problem {
	var out []Problem
	add := func(p, msg, fix string, args ...any) {
		out = append(out, Problem{Path: p, Message: fmt.Sprintf(msg, args...), Fix: fix})
	}
	index := map[string]int{}
	for i, d := range a.Deployments {
		dp := fmt.Sprintf("%s.deployments[%d]", ap, i)
		switch {
		case d.Name == "":
			add(dp+".name", "a deployment needs a name", "add name: <deployment>")
		case !validName(d.Name):
			add(dp+".name", "deployment name %q has characters other than letters, digits, '-' and '_'", "rename it", d.Name)
		default:
			if j, dup := index[d.Name]; dup {
				add(dp+".name", "deployment %q is defined twice (also deployments[%d])", "give each deployment its own name", d.Name, j)
			} else {
				index[d.Name] = i
			}
		}
		if d.Replicas < 0 {
			add(dp+".replicas", "replicas is %d", "use 1 or more", d.Replicas)
		}
		if d.Autoscaling != nil {
			if d.Kind == KindLLM {
				add(dp+".autoscaling_config", "llm deployments scale with the serve flags", "remove autoscaling_config; use --min-replicas and --max-replicas")
			} else if err := d.Autoscaling.Validate(); err != nil {
				add(dp+".autoscaling_config", "%v", "", err)
			}
		}
		if d.MaxOngoingRequests < 0 {
			add(dp+".max_ongoing_requests", "max_ongoing_requests is %d", "use 0 (no bound) or more", d.MaxOngoingRequests)
		}
		switch {
		case d.Kind == KindLLM:
			if len(d.Models) == 0 {
				add(dp+".models", "an llm deployment serves no model", "list catalog models under models:")
			}
			for k, m := range d.Models {
				if hasModel != nil && !hasModel(m) {
					add(fmt.Sprintf("%s.models[%d]", dp, k), "model %q is not in the catalog", "add it under the top-level models: list or with --model", m)
				}
			}
			if len(d.Calls) > 0 {
				add(dp+".calls", "an llm deployment calls nothing", "remove calls:")
			}
		case d.Kind == "":
			add(dp+".kind", "a deployment needs a kind", "kind: llm, or one of: "+strings.Join(reg.deploymentKinds(), ", "))
		case !reg.hasDeployment(d.Kind):
			add(dp+".kind", "unknown deployment kind %q", "use llm or one of: "+strings.Join(reg.deploymentKinds(), ", "), d.Kind)
		default:
			if len(d.Models) > 0 {
				add(dp+".models", "only llm deployments serve models", "remove models: or make it kind: llm")
			}
			if err := reg.checkDeployment(d); err != nil {
				add(dp+".user_config", "%v", "", err)
			}
		}
	}
	for i, d := range a.Deployments {
		for k, c := range d.Calls {
			if _, ok := index[c]; !ok {
				add(fmt.Sprintf("%s.deployments[%d].calls[%d]", ap, i, k), "deployment %q calls %q, which this application does not define", "define it under deployments: or fix the name", d.Name, c)
			}
		}
	}
	if a.Ingress == "" {
		add(ap+".ingress", "the application has no ingress", "name the deployment its routes call: ingress: <deployment>")
	} else if _, ok := index[a.Ingress]; !ok {
		add(ap+".ingress", "ingress %q is not a deployment of this application", "name one of its deployments", a.Ingress)
	}
	if cyc := cycle(a.Deployments); len(cyc) > 0 {
		add(ap+".deployments", "deployments call each other in a cycle: %s", "a deployment may not call itself through others", strings.Join(cyc, " → "))
	}
	return out
}

func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

// cycle returns a cycle of calls (its names, first repeated last), or nil.
func cycle(ds []DeploymentSpec) []string {
	calls := map[string][]string{}
	for _, d := range ds {
		calls[d.Name] = d.Calls
	}
	const (
		unseen = iota
		open
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(n string) []string
	visit = func(n string) []string {
		state[n] = open
		stack = append(stack, n)
		for _, c := range calls[n] {
			if _, ok := calls[c]; !ok {
				continue
			}
			switch state[c] {
			case open:
				i := slices.Index(stack, c)
				return append(slices.Clone(stack[i:]), c)
			case unseen:
				if cyc := visit(c); cyc != nil {
					return cyc
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return nil
	}
	for _, d := range ds {
		if state[d.Name] == unseen {
			if cyc := visit(d.Name); cyc != nil {
				return cyc
			}
		}
	}
	return nil
}

// order returns the deployments callees first, so each is built after the
// deployments it calls (the spec must be free of cycles).
func order(ds []DeploymentSpec) []DeploymentSpec {
	byName := map[string]DeploymentSpec{}
	for _, d := range ds {
		byName[d.Name] = d
	}
	seen := map[string]bool{}
	var out []DeploymentSpec
	var visit func(d DeploymentSpec)
	visit = func(d DeploymentSpec) {
		if seen[d.Name] {
			return
		}
		seen[d.Name] = true
		for _, c := range d.Calls {
			if cd, ok := byName[c]; ok {
				visit(cd)
			}
		}
		out = append(out, d)
	}
	for _, d := range ds {
		visit(d)
	}
	return out
}
