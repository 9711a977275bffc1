package app

import (
	"reflect"
	"testing"
)

func TestCompare(t *testing.T) {
	base := func() []Spec {
		return []Spec{
			{Name: "chat", RoutePrefix: "/chat", Ingress: "router", Deployments: []DeploymentSpec{
				{Name: "router", Kind: "router", Replicas: 1, Calls: []string{"small"}, UserConfig: map[string]any{"threshold": 0.5}},
				{Name: "small", Kind: KindLLM, Replicas: 1, Models: []string{"tiny"}},
			}},
			{Name: "old", RoutePrefix: "/old", Ingress: "m", Deployments: []DeploymentSpec{{Name: "m", Kind: KindLLM, Replicas: 1, Models: []string{"tiny"}}}},
		}
	}
	if d := Compare(base(), base()); !d.Empty() {
		t.Errorf("same specs: got %+v, want no change", d)
	}
	next := base()
	next = next[:1] // "old" removed
	next = append(next, Spec{Name: "new", RoutePrefix: "/new", Ingress: "m", Deployments: []DeploymentSpec{{Name: "m", Kind: KindLLM, Replicas: 1, Models: []string{"x"}}}})
	chat := &next[0]
	chat.RoutePrefix = "/talk"
	chat.Middleware = []MiddlewareSpec{{Kind: "auth"}}
	chat.Deployments = []DeploymentSpec{
		{Name: "router", Kind: "router", Replicas: 1, Calls: []string{"small"}, UserConfig: map[string]any{"threshold": 0.7}},
		{Name: "small", Kind: KindLLM, Replicas: 3, Models: []string{"tiny"}},
		{Name: "large", Kind: KindLLM, Replicas: 1, Models: []string{"big"}},
	}
	got := Compare(base(), next)
	want := Diff{
		Added:   []string{"new"},
		Removed: []string{"old"},
		Changed: []AppChange{{
			Name:   "chat",
			Fields: []string{"route_prefix", "middleware"},
			Added:  []string{"large"},
			Changed: []DeploymentChange{
				{Name: "router", Fields: []string{"user_config"}},
				{Name: "small", Fields: []string{"replicas"}},
			},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if c := got.Changed[0].Changed; !c[0].Reconfigure() || c[0].Scale() || !c[1].Scale() || c[1].Reconfigure() {
		t.Errorf("Reconfigure/Scale: got %v %v / %v %v, want true false / false true", c[0].Reconfigure(), c[0].Scale(), c[1].Scale(), c[1].Reconfigure())
	}
}

func TestCompareDeploymentFields(t *testing.T) {
	o := DeploymentSpec{Name: "d", Kind: "a", Replicas: 1}
	n := DeploymentSpec{Name: "d", Kind: "b", Replicas: 2, MaxOngoingRequests: 4, Models: []string{"m"}, Calls: []string{"x"}, UserConfig: map[string]any{"k": "v"}}
	got := deploymentFields(o, n)
	want := []string{"kind", "replicas", "max_ongoing_requests", "models", "calls", "user_config"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if f := deploymentFields(DeploymentSpec{UserConfig: map[string]any{}}, DeploymentSpec{}); f != nil {
		t.Errorf("empty and nil user config: got %v, want no change", f)
	}
}
