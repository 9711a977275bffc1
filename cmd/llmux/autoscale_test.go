package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmux/llmux/models/modeltest"
)

// TestServeScalesToZeroAndBack runs `llmux serve` with autoscaling from
// zero replicas (this test binary is the replica process; see TestMain):
// describing models starts no replica and /ready is 200 with none, a
// completion starts one and waits for it (its Server-Timing shows the
// start), /-/status shows the autoscaler, and once idle the replica
// drains away.
func TestServeScalesToZeroAndBack(t *testing.T) {
	model := modeltest.Preset(t, "tiny")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--model", "tiny=" + model, "--port", strconv.Itoa(port), "--admin-key", "k",
			"--max-replicas", "2", "--min-replicas", "0", "--upscale-delay", "100ms", "--downscale-delay", "1s", "--look-back-period", "200ms",
			"--threads", "2", "--parallel", "2", "--ctx-size", "512", "--shutdown-timeout", "1s", "--log-level", "error"})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	get := func(path string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		return resp.StatusCode
	}
	type status struct {
		Deployments []struct {
			Replicas []struct {
				State string `json:"state"`
				PID   int    `json:"pid"`
			} `json:"replicas"`
			Autoscaling *struct {
				Replicas int `json:"target_replicas"`
				Max      int `json:"max_replicas"`
			} `json:"autoscaling"`
		} `json:"deployments"`
	}
	readStatus := func() status {
		t.Helper()
		var st status
		if code := get("/-/status", &st); code != http.StatusOK || len(st.Deployments) != 1 || st.Deployments[0].Autoscaling == nil {
			t.Fatalf("/-/status: %d %+v", code, st)
		}
		return st
	}
	deadline := time.Now().Add(60 * time.Second)
	for get("/health", nil) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := readStatus(); len(st.Deployments[0].Replicas) != 0 || st.Deployments[0].Autoscaling.Replicas != 0 || st.Deployments[0].Autoscaling.Max != 2 {
		t.Fatalf("at start: %+v", st)
	}
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if code := get("/v1/models", &models); code != http.StatusOK || len(models.Data) != 1 || models.Data[0].ID != "tiny" {
		t.Fatalf("/v1/models with no replica: %d %+v", code, models)
	}
	if code := get("/ready", nil); code != http.StatusOK {
		t.Fatalf("/ready with no replica, scaled to zero: %d, want 200 (a request starts one)", code)
	}
	if st := readStatus(); len(st.Deployments[0].Replicas) != 0 {
		t.Fatalf("listing the models started a replica: %+v", st)
	}

	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"tiny","prompt":"wake","max_tokens":4}`))
	if err != nil {
		t.Fatal(err)
	}
	var comp struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	json.NewDecoder(resp.Body).Decode(&comp)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || comp.Usage.CompletionTokens == 0 {
		t.Fatalf("a completion at zero replicas: %d %+v", resp.StatusCode, comp)
	}
	// Validation was answered without a replica, so the request waited in
	// generation, where the wait is its start phase.
	if timing := resp.Header.Get("Server-Timing"); !strings.Contains(timing, "start;dur=") {
		t.Errorf("Server-Timing %q has no start phase", timing)
	}
	st := readStatus()
	if r := st.Deployments[0].Replicas; len(r) != 1 || r[0].State != "ready" || st.Deployments[0].Autoscaling.Replicas != 1 {
		t.Fatalf("after the first request: %+v", st)
	}
	pid := st.Deployments[0].Replicas[0].PID
	if os.Getenv("GOMAXPROCS") == "" {
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Split(string(env), "\x00"), "GOMAXPROCS=1") {
			t.Errorf("the replica (pid %d) runs without GOMAXPROCS=1 in its environment", pid)
		}
	}
	for len(readStatus().Deployments[0].Replicas) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle replica was not scaled away: %+v", readStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		t.Fatalf("the replica scaled away (pid %d) still runs", pid)
	}
}

// alive reports whether a process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
