package main

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/replica"
	"github.com/llmux/llmux/server"
)

// idle is a backend that serves no model: enough for the status route.
type idle struct{ llm.Backend }

func (idle) Models(context.Context) []llm.ModelInfo { return nil }
func (idle) Load() llm.LoadInfo                     { return llm.LoadInfo{Running: 2} }

func TestStatusPrintsDeploymentsWithTheAdminKey(t *testing.T) {
	srv := server.New(idle{}, server.Options{AdminKeys: []string{"adm"}, Deployments: func() any {
		return []deploymentStatus{{Name: "llm", Kind: "llm", Replicas: []replica.ReplicaStatus{{Name: "replica-0", PID: 42, State: "ready", Restarts: 1, Models: []string{"m"}}}}}
	}})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	if err := runStatus(context.Background(), []string{"--base-url", hs.URL, "--admin-key", "wrong"}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong admin key: %v", err)
	}
	r, w, _ := os.Pipe()
	stdout := os.Stdout
	os.Stdout = w
	err := runStatus(context.Background(), []string{"--base-url", hs.URL, "--admin-key", "adm"})
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"replica-0"`, `"pid": 42`, `"restarts": 1`, `"running": 2`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status lacks %s:\n%s", want, out)
		}
	}
}
