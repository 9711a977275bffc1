package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmux/llmux/models/modeltest"
)

// TestConversationOutlivesItsReplicas serves a model from two replica
// processes and keeps a Responses API conversation going while every
// replica is killed between turns: the stored responses live in the
// serving process, so each turn continues from the last whichever
// (restarted) replica serves it, with the whole conversation in its
// prompt.
func TestConversationOutlivesItsReplicas(t *testing.T) {
	port := freePort(t)
	path := filepath.Join(t.TempDir(), "llmux.yaml")
	cfg := fmt.Sprintf("replicas: 2\nport: %d\nlog-level: error\nparallel: 2\nollama-models: /nonexistent\nadmin-key: admin\nmodels:\n  - name: tiny\n    path: %s\n", port, modeltest.Preset(t, "tiny"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, base := serveConfig(t, path, port)
	post := func(body string) (id string, input int) {
		t.Helper()
		resp, err := http.Post(base+"/v1/responses", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			ID    string `json:"id"`
			Usage struct {
				InputTokens int `json:"input_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		return r.ID, r.Usage.InputTokens
	}
	pids := func() []int {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/-/status", nil)
		req.Header.Set("Authorization", "Bearer admin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Deployments []struct {
				Replicas []struct {
					PID   int    `json:"pid"`
					State string `json:"state"`
				} `json:"replicas"`
			} `json:"deployments"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st.Deployments) != 1 {
			t.Fatalf("/-/status: %+v %v", st, err)
		}
		var out []int
		for _, r := range st.Deployments[0].Replicas {
			if r.State == "ready" && r.PID > 0 {
				out = append(out, r.PID)
			}
		}
		return out
	}
	waitReady := func(old []int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			now := pids()
			fresh := len(now) == 2
			for _, p := range now {
				for _, o := range old {
					fresh = fresh && p != o
				}
			}
			if fresh {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicas %v did not restart (had %v)", now, old)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitReady(nil)
	id, input := post(`{"model":"tiny","input":"Once upon a time","max_output_tokens":4}`)
	for turn := range 3 {
		old := pids()
		for _, p := range old {
			if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		waitReady(old)
		next, in := post(`{"previous_response_id":"` + id + `","input":"and then","max_output_tokens":4}`)
		if in <= input+4 {
			t.Fatalf("turn %d: the prompt (%d tokens) does not hold the last turn (%d tokens in, 4 out)", turn+2, in, input)
		}
		id, input = next, in
	}
}
