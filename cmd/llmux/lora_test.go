package main

import (
	"testing"

	"github.com/llmux/llmux/multiplex"
)

func TestLoRAFlag(t *testing.T) {
	var l loraFlag
	for _, bad := range []string{"name=a", "base=m,path", "base=m,path=p,scale=x", "base=m,path=p,color=red"} {
		if err := l.Set(bad); err == nil {
			t.Errorf("--lora %q accepted", bad)
		}
	}
	if err := l.Set("name=a,base=m,path=/x/a.gguf,scale=0.5"); err != nil {
		t.Fatal(err)
	}
	if err := l.Set("base=stem,path=/x/b.gguf"); err != nil {
		t.Fatal(err)
	}
	list := []multiplex.ModelConfig{{Name: "m", Path: "/models/m.gguf"}, {Path: "/models/stem.gguf"}}
	if err := l.attach(list); err != nil {
		t.Fatal(err)
	}
	if a := list[0].Adapters; len(a) != 1 || a[0] != (multiplex.AdapterConfig{Name: "a", Path: "/x/a.gguf", Scale: 0.5}) {
		t.Fatalf("model m's adapters: %+v", a)
	}
	if a := list[1].Adapters; len(a) != 1 || a[0].Path != "/x/b.gguf" {
		t.Fatalf("model stem's adapters: %+v", a)
	}
	if err := (&loraFlag{v: []loraArg{{base: "nope"}}}).attach(list); err == nil {
		t.Fatal("an adapter of an unknown model was accepted")
	}
}
