package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmux/llmux/autoscale"
	"github.com/llmux/llmux/llm"
)

// slow is a Go deployment whose calls stream a few events, each after
// a pause: calls stay in flight long enough to be a load. It counts how
// many of its instances were closed.
type slow struct {
	pause  time.Duration
	closed *atomic.Int64
}

func (s *slow) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	return &pausedStream{pause: s.pause, left: 3}, nil
}

func (s *slow) Close() { s.closed.Add(1) }

type pausedStream struct {
	pause time.Duration
	left  int
}

func (p *pausedStream) Header() llm.Header { return llm.Header{} }
func (p *pausedStream) Recv(ctx context.Context) (llm.Event, bool) {
	select {
	case <-ctx.Done():
		return llm.Event{Final: true, Error: llm.Errorf(llm.CodeCancelled, "", "cancelled")}, true
	case <-time.After(p.pause):
	}
	if p.left == 0 {
		return llm.Event{Final: true, Usage: &llm.Usage{CompletionTokens: 3}}, true
	}
	p.left--
	return llm.Event{Text: "tick "}, true
}
func (p *pausedStream) Close() {}

// count reports the deployment's replicas: serving and draining.
func count(h *Handle) (serving, draining int) {
	for _, r := range h.Status() {
		if r.State == "draining" {
			draining++
		} else {
			serving++
		}
	}
	return
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGoDeploymentAutoscalesWithALoadRamp is the acceptance test for Go
// deployments: a load ramp takes the deployment from one replica to
// four and back to one as the load goes down, with no failed call, and
// the replicas scaled away are closed once their calls have ended.
func TestGoDeploymentAutoscalesWithALoadRamp(t *testing.T) {
	cfg := autoscale.DefaultConfig()
	cfg.MinReplicas, cfg.MaxReplicas, cfg.TargetOngoingRequests = 1, 4, 2
	cfg.UpscaleDelay, cfg.DownscaleDelay = 100*time.Millisecond, 300*time.Millisecond
	cfg.LookBackPeriod, cfg.MetricsInterval = 100*time.Millisecond, 10*time.Millisecond
	var closed atomic.Int64
	built := atomic.Int64{}
	h, err := New("ramp", Options{MaxOngoing: 2, Autoscale: &cfg}, func() (Deployment, error) {
		built.Add(1)
		return &slow{pause: 5 * time.Millisecond, closed: &closed}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if s, _ := count(h); s != 1 {
		t.Fatalf("%d replicas at start, want 1", s)
	}
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
				// A call that waits for room must get it, not fail: each
				// has a generous deadline of its own.
				cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, e := h.Call(cctx, prompt(fmt.Sprintf("client %d call %d", i, n)))
				ccancel()
				if e != nil {
					failed.Add(1)
					t.Errorf("client %d call %d: %v", i, n, e)
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
	// Up: a client more every 20 ms, up to eight (four replicas' worth at
	// two each), until four replicas serve.
	most := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		if len(stops) < 8 {
			client()
		}
		s, _ := count(h)
		most = max(most, s)
		if most == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if most != 4 {
		t.Fatalf("the load ramp reached %d replicas, want 4 (autoscaler: %+v)", most, h.Autoscaling())
	}
	// Down: the clients leave one by one every 20 ms but one, which goes
	// on while the surplus replicas drain.
	time.Sleep(100 * time.Millisecond)
	for i := len(stops) - 1; i > 0; i-- {
		stops[i]()
		time.Sleep(20 * time.Millisecond)
	}
	waitUntil(t, "back to one replica under one client's load", func() bool { s, d := count(h); return s == 1 && d == 0 })
	before := served.Load()
	waitUntil(t, "calls after the scale-down", func() bool { return served.Load() >= before+5 || failed.Load() > 0 })
	stops[0]()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed of %d", failed.Load(), served.Load()+failed.Load())
	}
	if b, c := built.Load(), closed.Load(); b-c != 1 || c < 3 {
		t.Fatalf("%d replicas built, %d closed; want all but one closed", b, c)
	}
	if as := h.Autoscaling(); as == nil || as.Replicas != 1 || as.MaxReplicas != 4 {
		t.Fatalf("autoscaling status %+v", as)
	}
	t.Logf("%d calls served, none failed; %d replicas built", served.Load(), built.Load())
}

func TestGoDeploymentScalesFromZero(t *testing.T) {
	cfg := autoscale.DefaultConfig()
	zero := 0
	cfg.MinReplicas, cfg.MaxReplicas, cfg.InitialReplicas = 0, 2, &zero
	cfg.UpscaleDelay, cfg.DownscaleDelay = time.Hour, 50*time.Millisecond
	cfg.LookBackPeriod, cfg.MetricsInterval = 50*time.Millisecond, 10*time.Millisecond
	var closed atomic.Int64
	h, err := New("lazy", Options{Autoscale: &cfg}, func() (Deployment, error) {
		time.Sleep(20 * time.Millisecond) // a replica takes a while to build
		return &slow{pause: time.Millisecond, closed: &closed}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := count(h); s != 0 {
		t.Fatalf("%d replicas before any call, want 0", s)
	}
	// Without a replica and without the autoscaler to start one, a call
	// waits until its context ends.
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if _, e := h.Call(short, prompt("too early")); e == nil || e.Code != llm.CodeUnavailable {
		t.Fatalf("a call with no replica: %v, want unavailable when its context ends", e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	st, e := h.Stream(context.Background(), prompt("first"))
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
	if final.Error != nil || final.Usage == nil || final.Usage.Timings.Start < 20*time.Millisecond {
		t.Fatalf("the first call's final event %+v, usage %+v: want its wait for the replica's build (≥ 20ms) as its start phase", final, final.Usage)
	}
	waitUntil(t, "back to zero", func() bool { s, d := count(h); return s == 0 && d == 0 })
	if closed.Load() != 1 {
		t.Fatalf("%d replicas closed, want the one scaled away", closed.Load())
	}
}

func TestGoDeploymentRefusesABadAutoscalingConfig(t *testing.T) {
	cfg := autoscale.DefaultConfig()
	cfg.MinReplicas, cfg.MaxReplicas = 3, 2
	if _, err := New("bad", Options{Autoscale: &cfg}, func() (Deployment, error) { return &words{}, nil }); err == nil {
		t.Fatal("min_replicas above max_replicas was accepted")
	}
}

// TestScaleDrainsWithoutCuttingCalls scales a deployment down while its
// replicas have calls in flight: every call finishes, and a drained
// replica is closed only after its last call.
func TestScaleDrainsWithoutCuttingCalls(t *testing.T) {
	var closed atomic.Int64
	h, err := New("drain", Options{Replicas: 3, MaxOngoing: 1}, func() (Deployment, error) {
		return &slow{pause: time.Millisecond, closed: &closed}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var streams []llm.Stream
	for i := range 3 {
		st, e := h.Stream(context.Background(), prompt(fmt.Sprint("held ", i)))
		if e != nil {
			t.Fatal(e)
		}
		streams = append(streams, st)
	}
	h.Scale(1)
	if s, d := count(h); s != 1 || d != 2 {
		t.Fatalf("after scaling to one with a call on each: %d serving, %d draining", s, d)
	}
	if closed.Load() != 0 {
		t.Fatal("a replica was closed with a call in flight")
	}
	// Scaling up takes a draining replica back.
	h.Scale(2)
	if s, d := count(h); s != 2 || d != 1 {
		t.Fatalf("after scaling back to two: %d serving, %d draining", s, d)
	}
	for i, st := range streams {
		for {
			ev, ok := st.Recv(context.Background())
			if !ok || ev.Final {
				if ev.Error != nil {
					t.Errorf("call %d: %v", i, ev.Error)
				}
				break
			}
		}
		st.Close()
	}
	if s, d := count(h); s != 2 || d != 0 || closed.Load() != 1 {
		t.Fatalf("after the calls ended: %d serving, %d draining, %d closed", s, d, closed.Load())
	}
	h.Scale(0)
	if s, d := count(h); s != 0 || d != 0 || closed.Load() != 3 {
		t.Fatalf("scaled to zero with nothing in flight: %d serving, %d draining, %d closed", s, d, closed.Load())
	}
}

// TestScaleSurvivesAFailingConstructor: a replica that cannot be built
// (an error or a panic) is left out, and built at a later Scale.
func TestScaleSurvivesAFailingConstructor(t *testing.T) {
	var builds atomic.Int64
	h, err := New("flaky", Options{Logger: slog.New(slog.DiscardHandler)}, func() (Deployment, error) {
		switch builds.Add(1) {
		case 2:
			return nil, errors.New("no room")
		case 3:
			panic("constructor bug")
		}
		return &words{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Scale(2)
	if s, _ := count(h); s != 1 {
		t.Fatalf("%d replicas after a failed build, want 1", s)
	}
	h.Scale(2)
	if s, _ := count(h); s != 1 {
		t.Fatalf("%d replicas after a panicking build, want 1", s)
	}
	h.Scale(2)
	if s, _ := count(h); s != 2 {
		t.Fatalf("%d replicas once the build works, want 2", s)
	}
	if _, e := h.Call(context.Background(), prompt("still fine")); e != nil {
		t.Fatal(e)
	}
}
