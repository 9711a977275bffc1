package app

import (
	"reflect"
	"slices"
)

// Diff is what changed between two lists of applications, by name: the
// plain data a reload acts on (stop what was removed, start what was
// added, update or rebuild what changed), as Prometheus' ApplyConfig
// does.
type Diff struct {
	Added   []string    `json:"added,omitempty"`   // applications only in the new list
	Removed []string    `json:"removed,omitempty"` // applications only in the old list
	Changed []AppChange `json:"changed,omitempty"`
}

// Empty reports whether nothing changed.
func (d Diff) Empty() bool {
	return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0
}

// AppChange is one application in both lists that differs.
type AppChange struct {
	Name string `json:"name"`
	// Fields are its own fields that changed: route_prefix, ingress,
	// middleware.
	Fields []string `json:"fields,omitempty"`
	// Added and Removed are deployments by name.
	Added   []string           `json:"added,omitempty"`
	Removed []string           `json:"removed,omitempty"`
	Changed []DeploymentChange `json:"changed,omitempty"`
}

// DeploymentChange is one deployment in both versions of an application
// that differs.
type DeploymentChange struct {
	Name string `json:"name"`
	// Fields are the yaml keys that changed: kind, replicas,
	// max_ongoing_requests, autoscaling_config, models, calls, user_config.
	Fields []string `json:"fields,omitempty"`
}

// Reconfigure reports whether only the user config changed: a
// Reconfigurable deployment takes it without being rebuilt.
func (c DeploymentChange) Reconfigure() bool {
	return slices.Equal(c.Fields, []string{"user_config"})
}

// Scale reports whether only the replica count changed.
func (c DeploymentChange) Scale() bool {
	return slices.Equal(c.Fields, []string{"replicas"})
}

// Compare returns what changed from old to new (both resolved). Names
// keep the order of the list they come from.
func Compare(old, new []Spec) Diff {
	var d Diff
	olds := map[string]Spec{}
	for _, s := range old {
		olds[s.Name] = s
	}
	news := map[string]bool{}
	for _, s := range new {
		news[s.Name] = true
		o, ok := olds[s.Name]
		if !ok {
			d.Added = append(d.Added, s.Name)
			continue
		}
		if c := compareApp(o, s); c != nil {
			d.Changed = append(d.Changed, *c)
		}
	}
	for _, s := range old {
		if !news[s.Name] {
			d.Removed = append(d.Removed, s.Name)
		}
	}
	return d
}

func compareApp(o, n Spec) *AppChange {
	c := AppChange{Name: n.Name}
	if o.RoutePrefix != n.RoutePrefix {
		c.Fields = append(c.Fields, "route_prefix")
	}
	if o.Ingress != n.Ingress {
		c.Fields = append(c.Fields, "ingress")
	}
	if !equalMiddleware(o.Middleware, n.Middleware) {
		c.Fields = append(c.Fields, "middleware")
	}
	olds := map[string]DeploymentSpec{}
	for _, d := range o.Deployments {
		olds[d.Name] = d
	}
	news := map[string]bool{}
	for _, d := range n.Deployments {
		news[d.Name] = true
		od, ok := olds[d.Name]
		if !ok {
			c.Added = append(c.Added, d.Name)
			continue
		}
		if f := deploymentFields(od, d); len(f) > 0 {
			c.Changed = append(c.Changed, DeploymentChange{Name: d.Name, Fields: f})
		}
	}
	for _, d := range o.Deployments {
		if !news[d.Name] {
			c.Removed = append(c.Removed, d.Name)
		}
	}
	if len(c.Fields) == 0 && len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Changed) == 0 {
		return nil
	}
	return &c
}

func deploymentFields(o, n DeploymentSpec) []string {
	var f []string
	if o.Kind != n.Kind {
		f = append(f, "kind")
	}
	if o.Replicas != n.Replicas {
		f = append(f, "replicas")
	}
	if o.MaxOngoingRequests != n.MaxOngoingRequests {
		f = append(f, "max_ongoing_requests")
	}
	if !reflect.DeepEqual(o.Autoscaling, n.Autoscaling) {
		f = append(f, "autoscaling_config")
	}
	if !slices.Equal(o.Models, n.Models) {
		f = append(f, "models")
	}
	if !slices.Equal(o.Calls, n.Calls) {
		f = append(f, "calls")
	}
	if !equalConfig(o.UserConfig, n.UserConfig) {
		f = append(f, "user_config")
	}
	return f
}

func equalMiddleware(a, b []MiddlewareSpec) bool {
	return slices.EqualFunc(a, b, func(x, y MiddlewareSpec) bool {
		return x.Kind == y.Kind && equalConfig(x.Config, y.Config)
	})
}

// equalConfig compares user configs, nil and empty alike.
func equalConfig(a, b map[string]any) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
