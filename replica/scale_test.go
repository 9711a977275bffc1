package replica

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmux/llmux/autoscale"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
)

// newTestSet is startSet's set (this test binary as the replicas, on the
// tiny model) with o's scaling settings, running until the test ends.
func newTestSet(t *testing.T, o SetOptions) *Set {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "LLMUX_REPLICA_CHILD=1", "LLMUX_REPLICA_MODEL="+modeltest.Preset(t, "tiny"))
	o.MinBackoff, o.HealthInterval, o.RetryWait = 100*time.Millisecond, 200*time.Millisecond, 5*time.Minute
	o.Process = ProcessOptions{Name: "r", Command: []string{exe, "-test.run=^$"}, Env: env, SocketDir: t.TempDir()}
	s := NewSet(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		for _, st := range s.Status() {
			if st.PID != 0 && alive(st.PID) {
				t.Errorf("replica %s (pid %d) still runs after the set stopped", st.Name, st.PID)
			}
		}
	})
	return s
}

// byState counts the set's replicas by state.
func byState(s *Set) map[string]int {
	out := map[string]int{}
	for _, r := range s.Status() {
		out[r.State]++
	}
	return out
}

// waitFor polls cond until it holds (60 s at most).
func waitFor(t *testing.T, what string, s *Set, cond func(map[string]int) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := byState(s)
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: replicas %v (%+v)", what, st, s.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// only reports whether the set has exactly n replicas, all ready.
func only(n int) func(map[string]int) bool {
	return func(st map[string]int) bool {
		total := 0
		for _, c := range st {
			total += c
		}
		return st[stateReady] == n && total == n
	}
}

func TestScaleStartsReplicasAndDrainsThemDown(t *testing.T) {
	s := newTestSet(t, SetOptions{Replicas: 1, MaxOngoing: 1})
	waitFor(t, "one replica", s, only(1))
	s.Scale(3)
	waitFor(t, "three replicas", s, only(3))
	// One stream on each replica (MaxOngoing 1 spreads them), held open:
	// a stream counts as ongoing until it is read to its end or closed.
	ctx := context.Background()
	streams := make([]llm.Stream, 3)
	for i := range streams {
		st, e := s.Generate(ctx, &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: fmt.Sprintf("held %d", i)}}, Params: llm.Params{MaxTokens: 8, IgnoreEOS: true}})
		if e != nil {
			t.Fatal(e)
		}
		streams[i] = st
	}
	for _, r := range s.Status() {
		if r.Ongoing != 1 {
			t.Fatalf("the streams did not spread: %+v", s.Status())
		}
	}
	s.Scale(1)
	if st := byState(s); st[stateReady] != 1 || st[stateDraining] != 2 {
		t.Fatalf("after scaling to one with a stream on each: %v", st)
	}
	time.Sleep(300 * time.Millisecond)
	if st := byState(s); st[stateDraining] != 2 {
		t.Fatalf("a replica stopped before its stream ended: %v", st)
	}
	// The streams on the draining replicas finish.
	for i, st := range streams {
		events, final := 0, llm.Event{}
		for {
			ev, ok := st.Recv(ctx)
			if !ok || ev.Final {
				final = ev
				break
			}
			events++
		}
		st.Close()
		if final.Error != nil || events != 8 {
			t.Errorf("stream %d: %d events, then %+v", i, events, final)
		}
	}
	waitFor(t, "the drained replicas stopped", s, only(1))
	if o := run(ctx, s, "after", 4, nil); o.err != nil || o.finish != llm.FinishLength {
		t.Fatalf("a request after scaling down: %+v", o)
	}
	// Scaling up while a replica drains takes it back instead of
	// starting another.
	st, e := s.Generate(ctx, &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "held again"}}, Params: llm.Params{MaxTokens: 4, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	defer st.Close()
	pid := s.Status()[0].PID
	s.Scale(0)
	if st := byState(s); st[stateDraining] != 1 {
		t.Fatalf("scaled to zero with a stream open: %v", st)
	}
	s.Scale(1)
	if r := s.Status(); len(r) != 1 || r[0].State != stateReady || r[0].PID != pid {
		t.Fatalf("scaled back to one while draining: %+v, want replica pid %d ready again", r, pid)
	}
}

// TestAutoscalingFollowsALoadRamp is the acceptance test for replica
// processes: a load ramp driven by the test takes the set from one
// replica to four, and back to one as the load goes down, with no failed
// request (those running on replicas scaled away finish there).
func TestAutoscalingFollowsALoadRamp(t *testing.T) {
	cfg := autoscale.DefaultConfig()
	cfg.MinReplicas, cfg.MaxReplicas, cfg.TargetOngoingRequests = 1, 4, 1
	cfg.UpscaleDelay, cfg.DownscaleDelay = 300*time.Millisecond, time.Second
	cfg.LookBackPeriod, cfg.MetricsInterval = 300*time.Millisecond, 50*time.Millisecond
	s := newTestSet(t, SetOptions{Autoscale: &cfg})
	waitFor(t, "the initial replica", s, only(1))

	var failed, served atomic.Int64
	var wg sync.WaitGroup
	var stops []context.CancelFunc
	client := func() {
		ctx, stop := context.WithCancel(context.Background())
		stops = append(stops, stop)
		i := len(stops)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				o := run(context.Background(), s, fmt.Sprintf("client %d request %d", i, n), 16, nil)
				if o.err != nil || o.finish != llm.FinishLength {
					failed.Add(1)
					t.Errorf("client %d request %d: %+v", i, n, o)
					return
				}
				served.Add(1)
			}
		}()
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
		wg.Wait()
	}()
	// Up: one more client every 100 ms up to eight (two per replica at
	// four replicas, twice the target), until four replicas serve.
	most := 0
	began := time.Now()
	deadline := began.Add(90 * time.Second)
	for {
		if len(stops) < 8 {
			client()
		}
		most = max(most, byState(s)[stateReady])
		if most == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if most != 4 {
		t.Fatalf("the load ramp reached %d ready replicas, want 4 (autoscaler: %+v)", most, s.Autoscaling())
	}
	t.Logf("four replicas after %v, %d requests served", time.Since(began).Round(time.Millisecond), served.Load())
	// Down: the clients leave one by one every 100 ms but one, which goes
	// on while the surplus replicas drain.
	time.Sleep(300 * time.Millisecond)
	for i := len(stops) - 1; i > 0; i-- {
		stops[i]()
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "back to one replica under one client's load", s, only(1))
	before := served.Load()
	t.Logf("one replica after %v, %d requests served", time.Since(began).Round(time.Millisecond), before)
	deadline = time.Now().Add(30 * time.Second)
	for served.Load() < before+2 && failed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stops[0]()
	wg.Wait()
	if as := s.Autoscaling(); as == nil || as.Replicas != 1 {
		t.Fatalf("autoscaler status %+v", as)
	}
	if failed.Load() != 0 || served.Load() < before+2 {
		t.Fatalf("%d requests failed, %d served (%d after the scale-down)", failed.Load(), served.Load(), served.Load()-before)
	}
	t.Logf("%d requests served, none failed", served.Load())
}

// TestScaleFromZero: a set at zero replicas starts one for the first
// request, which waits for it and reports the wait as its start phase;
// with no more requests the set goes back to zero.
func TestScaleFromZero(t *testing.T) {
	cfg := autoscale.DefaultConfig()
	zero := 0
	cfg.MinReplicas, cfg.MaxReplicas, cfg.InitialReplicas = 0, 2, &zero
	cfg.UpscaleDelay, cfg.DownscaleDelay = time.Hour, 500*time.Millisecond // from zero ignores the upscale delay
	cfg.LookBackPeriod, cfg.MetricsInterval = 200*time.Millisecond, 50*time.Millisecond
	s := newTestSet(t, SetOptions{Autoscale: &cfg})
	time.Sleep(200 * time.Millisecond)
	if r := s.Status(); len(r) != 0 {
		t.Fatalf("replicas before any request: %+v", r)
	}
	st, e := s.Generate(context.Background(), &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "wake up"}}, Params: llm.Params{MaxTokens: 4, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	var final llm.Event
	for {
		ev, ok := st.Recv(context.Background())
		if !ok || ev.Final {
			final = ev
			break
		}
	}
	st.Close()
	if final.Error != nil || final.Usage == nil {
		t.Fatalf("final event %+v", final)
	}
	if final.Usage.Timings.Start <= 0 {
		t.Fatalf("the request waited for a replica to start, but its start phase is %v", final.Usage.Timings.Start)
	}
	t.Logf("start phase %v", final.Usage.Timings.Start)
	waitFor(t, "back to zero", s, func(st map[string]int) bool { return len(st) == 0 })
	// A replica that is ready reports no start phase.
	s2 := newTestSet(t, SetOptions{Replicas: 1})
	waitFor(t, "one replica", s2, only(1))
	st, e = s2.Generate(context.Background(), &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "awake"}}, Params: llm.Params{MaxTokens: 2, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	for {
		ev, ok := st.Recv(context.Background())
		if !ok || ev.Final {
			final = ev
			break
		}
	}
	st.Close()
	if final.Usage == nil || final.Usage.Timings.Start != 0 {
		t.Fatalf("a request on a ready replica: %+v", final.Usage)
	}
}
