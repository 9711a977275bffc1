package deploy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sickly is a Go deployment with a health check: the instances numbered
// in sick fail it, one panics in it, and each records its close.
type sickly struct {
	words
	id     int
	sick   *sync.Map // id → true: fail the check
	closed *atomic.Int64
}

func (s *sickly) Check(context.Context) error {
	if v, ok := s.sick.Load(s.id); ok {
		if v == "panic" {
			panic("the check itself broke")
		}
		return errors.New("not well")
	}
	return nil
}

func (s *sickly) Close() { s.closed.Add(1) }

// TestAReplicaThatFailsItsHealthCheckIsReplaced: of two replicas, the one
// whose check fails (and later one whose check panics) is replaced by a
// new one and closed; calls keep succeeding throughout.
func TestAReplicaThatFailsItsHealthCheckIsReplaced(t *testing.T) {
	var sick sync.Map
	var closed atomic.Int64
	var built atomic.Int64
	h, err := New("d", Options{Replicas: 2, HealthCheckPeriod: 10 * time.Millisecond, HealthCheckTimeout: time.Second}, func() (Deployment, error) {
		return &sickly{id: int(built.Add(1)) - 1, sick: &sick, closed: &closed}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	names := func() string {
		var out []string
		for _, r := range h.Status() {
			out = append(out, r.Name)
		}
		return strings.Join(out, ",")
	}
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for names() != want {
			if time.Now().After(deadline) {
				t.Fatalf("replicas %s, want %s", names(), want)
			}
			if _, e := h.Call(ctx, prompt("still serving")); e != nil {
				t.Fatalf("a call failed while replicas were replaced: %v", e)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("d-0,d-1")
	sick.Store(0, true)
	waitFor("d-1,d-2")
	sick.Store(2, "panic")
	waitFor("d-1,d-3")
	if closed.Load() != 2 {
		t.Fatalf("%d replicas closed, want the 2 replaced", closed.Load())
	}
}
