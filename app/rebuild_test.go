package app

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
)

// tally answers with its prefix and how many calls it has served: state a
// kept deployment carries across a reload. Reconfigure takes a new prefix
// unless its kind is marked fixed.
type tally struct {
	prefix atomic.Pointer[string]
	calls  atomic.Int64
}

type tallyConfig struct {
	Prefix string `json:"prefix"`
}

func (t *tally) Reconfigure(cfg any) error {
	p := cfg.(*tallyConfig).Prefix
	t.prefix.Store(&p)
	return nil
}

func (t *tally) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	n := t.calls.Add(1)
	text := *t.prefix.Load() + strings.Repeat("|", int(n))
	return &textStream{text: text}, nil
}

// fixedTally cannot be reconfigured.
type fixedTally struct{ t *tally }

func (f fixedTally) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	return f.t.Generate(ctx, req)
}

type textStream struct {
	text string
	done int
}

func (s *textStream) Header() llm.Header { return llm.Header{} }
func (s *textStream) Close()             {}
func (s *textStream) Recv(context.Context) (llm.Event, bool) {
	s.done++
	switch s.done {
	case 1:
		return llm.Event{Text: s.text}, true
	case 2:
		return llm.Event{Final: true, Usage: &llm.Usage{}}, true
	}
	return llm.Event{}, false
}

type forward struct{ next *deploy.Handle }

func (f forward) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	return f.next.Stream(ctx, req)
}

func tallyRegistry() *Registry {
	reg := NewRegistry()
	newTally := func(cfg any) *tally {
		t := &tally{}
		p := cfg.(*tallyConfig).Prefix
		t.prefix.Store(&p)
		return t
	}
	reg.Register("tally", Kind{Calls: 0, Config: func() any { return &tallyConfig{} },
		New: func(cfg any, _ []*deploy.Handle) (deploy.Deployment, error) { return newTally(cfg), nil }})
	reg.Register("fixed", Kind{Calls: 0, Config: func() any { return &tallyConfig{} },
		New: func(cfg any, _ []*deploy.Handle) (deploy.Deployment, error) { return fixedTally{newTally(cfg)}, nil }})
	reg.Register("forward", Kind{Calls: 1,
		New: func(_ any, calls []*deploy.Handle) (deploy.Deployment, error) { return forward{calls[0]}, nil }})
	return reg
}

// TestRebuildKeepsWhatDidNotChange: a reload keeps an unchanged
// deployment's replicas (its call count goes on), hands a changed user
// config to a Reconfigurable one in place, and builds anew a deployment
// that cannot take it, one whose replicas changed, and whatever calls a
// deployment built anew.
func TestRebuildKeepsWhatDidNotChange(t *testing.T) {
	env := Env{Registry: tallyRegistry()}
	spec := func(kind, prefix string, replicas int) Spec {
		s, err := New("t").Deploy("count", kind, tallyConfig{Prefix: prefix}).Scale(replicas, 0).
			Deploy("front", "forward", nil, "count").Ingress("front").Spec()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	call := func(a *App) string {
		t.Helper()
		res, e := a.Handles["front"].Call(context.Background(), &llm.Request{Model: "m"})
		if e != nil {
			t.Fatal(e)
		}
		return res.Texts[0]
	}
	a, err := Build(spec("tally", "a", 1), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := call(a); got != "a|" {
		t.Fatalf("first call %q", got)
	}
	steps := []struct {
		spec      Spec
		keepCount bool
		want      string
	}{
		{spec("tally", "a", 1), true, "a||"},  // unchanged: kept
		{spec("tally", "b", 1), true, "b|||"}, // user_config changed: reconfigured in place
		{spec("tally", "b", 2), false, "b|"},  // replicas changed: built anew
		{spec("fixed", "b", 2), false, "b|"},  // another kind: built anew
		{spec("fixed", "c", 2), false, "c|"},  // not reconfigurable: built anew
	}
	for i, st := range steps {
		next, err := Rebuild(a, st.spec, env)
		if err != nil {
			t.Fatal(err)
		}
		kept := next.Handles["count"] == a.Handles["count"]
		if kept != st.keepCount {
			t.Fatalf("step %d: count kept %v, want %v", i, kept, st.keepCount)
		}
		if kept != (next.Handles["front"] == a.Handles["front"]) {
			t.Fatalf("step %d: front kept %v while its callee kept %v", i, !kept, kept)
		}
		if got := call(next); got != st.want {
			t.Fatalf("step %d: %q, want %q", i, got, st.want)
		}
		a = next
	}
}
