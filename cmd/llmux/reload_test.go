package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmux/llmux/app"
)

const reloadBefore = `parallel: 2
applications:
  - name: a
    route_prefix: /a
    deployments:
      - {name: m, kind: llm, models: [tiny]}
  - name: b
    route_prefix: /b
    deployments:
      - {name: m, kind: llm, models: [tiny]}
`

const reloadAfter = `parallel: 3
applications:
  - name: a
    route_prefix: /a
    deployments:
      - {name: m, kind: llm, models: [tiny], replicas: 2}
  - name: c
    route_prefix: /c
    deployments:
      - {name: m, kind: llm, models: [tiny]}
`

// TestReload re-reads a changed file: the hook gets both lists and the
// log says what changed; an invalid file is logged and ignored.
func TestReload(t *testing.T) {
	path := writeConfig(t, reloadBefore)
	first, err := readConfig(path, defaultRegistry(), false)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var gotOld, gotNew []app.Spec
	r := &reloader{path: path, registry: defaultRegistry(), logger: slog.New(slog.NewTextHandler(&logs, nil)), current: first,
		onReload: func(old, new []app.Spec) error { gotOld, gotNew = old, new; return nil }}

	os.WriteFile(path, []byte(reloadAfter), 0o644)
	if !r.reload() {
		t.Fatalf("valid file refused:\n%s", logs.String())
	}
	if len(gotOld) != 2 || gotOld[1].Name != "b" || len(gotNew) != 2 || gotNew[1].Name != "c" {
		t.Errorf("hook got old %v, new %v", gotOld, gotNew)
	}
	for _, want := range []string{
		`msg="config reload: application added" application=c`,
		`msg="config reload: application removed" application=b`,
		`msg="config reload: deployment changed" application=a deployment=m fields=replicas`,
		`msg="config key changed: it applies after a restart" key=parallel was=2 now=3`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}

	logs.Reset()
	gotNew = nil
	os.WriteFile(path, []byte(strings.Replace(reloadAfter, "kind: llm, models: [tiny], replicas: 2", "kind: lm, models: [tiny], replicas: 2", 1)), 0o644)
	if r.reload() {
		t.Fatal("invalid file taken")
	}
	if gotNew != nil || r.current.Applications[1].Name != "c" {
		t.Errorf("invalid file applied: hook got %v, current %v", gotNew, r.current.Applications)
	}
	if want := `llmux.yaml:6:25: applications[0].deployments[0].kind: unknown deployment kind \"lm\"`; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs.String())
	}
}

// TestWatchConfigSIGHUP sends this process SIGHUP: the file is re-read.
func TestWatchConfigSIGHUP(t *testing.T) {
	path := writeConfig(t, reloadBefore)
	f := newServeFlags()
	if err := f.parse([]string{"-f", path}); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan []app.Spec, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchConfig(ctx, f, slog.New(slog.DiscardHandler), func(_, new []app.Spec) error { reloaded <- new; return nil })
	os.WriteFile(path, []byte(reloadAfter), 0o644)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case apps := <-reloaded:
		if len(apps) != 2 || apps[1].Name != "c" {
			t.Errorf("reloaded %v", apps)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reload after SIGHUP")
	}
}
