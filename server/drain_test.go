package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/scheduler"
)

// streamEnd is how one SSE stream ended.
type streamEnd struct {
	done     bool   // data: [DONE] arrived
	errEvent string // the error event's body, if one came
	err      error
}

// readStream posts body and reads the SSE stream to its end; started is
// closed at the first data line.
func readStream(addr, body string, started chan<- struct{}) streamEnd {
	return readStreamAt(addr, "", body, started)
}

// readStreamAt is readStream for an application mounted at prefix.
func readStreamAt(addr, prefix, body string, started chan<- struct{}) streamEnd {
	resp, err := http.Post("http://"+addr+prefix+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return streamEnd{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return streamEnd{err: fmt.Errorf("status %d: %s", resp.StatusCode, b)}
	}
	var end streamEnd
	first := true
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if first {
			first = false
			close(started)
		}
		switch {
		case line == "[DONE]":
			end.done = true
		case strings.HasPrefix(line, `{"error"`):
			end.errEvent = line
		}
	}
	if first {
		close(started)
	}
	end.err = sc.Err()
	return end
}

// runTiny runs a scheduler over the tiny model; stop ends it and frees
// the model.
func runTiny(t *testing.T, so scheduler.Options) (sched *scheduler.Scheduler, stop func()) {
	t.Helper()
	m, sched := loadScheduler(t, modeltest.Preset(t, "tiny"), so)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sched.Run(ctx); close(done) }()
	return sched, func() { cancel(); <-done; sched.Close(); m.Close() }
}

// TestShutdownDrainsTenStreams: with 10 streams in flight, a shutdown at
// once makes /ready and new generation requests answer 503 (the listener
// stays open); streams that finish within the shutdown timeout end
// normally; the ones still running then end with an SSE error event and
// [DONE]; Serve returns; the scheduler is back to no running sequence.
// serveOnLoopback runs srv.Serve on a fresh loopback listener; shutdown
// ends it (as SIGTERM does in llmux serve) and served then yields Serve's
// result.
func serveOnLoopback(t *testing.T, srv *Server) (addr string, shutdown context.CancelFunc, served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return ln.Addr().String(), cancel, done
}

func TestShutdownDrainsTenStreams(t *testing.T) {
	sched, stop := runTiny(t, scheduler.Options{Parallel: 10, Cells: 32768})
	defer stop()
	srv := New(backendFor(t, sched, "tiny"), Options{ShutdownTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	addr, shutdown, served := serveOnLoopback(t, srv)

	// Five short streams finish within the timeout; five long ones
	// (3000 tokens, at least a millisecond each) cannot.
	ends := make([]streamEnd, 10)
	var wg sync.WaitGroup
	var starts []chan struct{}
	for i := range ends {
		tokens := 4
		if i%2 == 1 {
			tokens = 3000
		}
		started := make(chan struct{})
		starts = append(starts, started)
		body := fmt.Sprintf(`{"model":"tiny","prompt":"the cat %d","max_tokens":%d,"ignore_eos":true,"stream":true}`, i, tokens)
		wg.Add(1)
		go func() { defer wg.Done(); ends[i] = readStream(addr, body, started) }()
	}
	for _, s := range starts {
		<-s
	}
	shutdown()
	began := time.Now()

	// Draining: readiness and new work get 503 on a fresh connection.
	deadline := time.Now().Add(5 * time.Second)
	for !srv.Draining() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r, err := http.Get("http://" + addr + "/ready")
	if err != nil {
		t.Fatalf("/ready while draining: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != 503 {
		t.Errorf("/ready while draining: %d", r.StatusCode)
	}
	r, err = http.Post("http://"+addr+"/v1/completions", "application/json", strings.NewReader(`{"model":"tiny","prompt":"hi","max_tokens":1}`))
	if err != nil {
		t.Fatalf("a new request while draining: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != 503 {
		t.Errorf("a new request while draining: %d", r.StatusCode)
	}

	wg.Wait()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second+4*time.Second {
		t.Errorf("shutdown took %v with a 2s timeout", took) // liveness bound
	}
	for i, e := range ends {
		switch {
		case e.err != nil:
			t.Errorf("stream %d: %v", i, e.err)
		case !e.done:
			t.Errorf("stream %d ended without [DONE]", i)
		case i%2 == 0 && e.errEvent != "":
			t.Errorf("short stream %d ended with an error: %s", i, e.errEvent)
		case i%2 == 1 && !strings.Contains(e.errEvent, "shutting down"):
			t.Errorf("long stream %d: error event %q, want one saying the server is shutting down", i, e.errEvent)
		}
	}
	for time.Now().Before(deadline.Add(5 * time.Second)) {
		if st := sched.Stats(); st.Running == 0 && st.Waiting == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("sequences still running after the shutdown: %+v", sched.Stats())
}

// TestACancellationStormLeavesNoTrace: 200 streaming clients leave after
// half a second (some queued, some prefilling, some decoding); then a
// fresh request's first token comes within 2 s, and the pod-wide gauges
// (running, waiting, KV usage) are back to zero within 5 s.
func TestACancellationStormLeavesNoTrace(t *testing.T) {
	ts := startServer(t, modeltest.Preset(t, "tiny"), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		scheduler.Options{Parallel: 8, Cells: 16384, MaxQueue: 512})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			body := fmt.Sprintf(`{"model":"%s","prompt":"storm %d the cat saw a big red ball","max_tokens":1000,"ignore_eos":true,"stream":true}`, ts.model, i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // left before the headers came: queued
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()

	start := time.Now()
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"`+ts.model+`","prompt":"after the storm","max_tokens":4,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	ttft := time.Since(start)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("the fresh request: %q %v", line, err)
	}
	if ttft > 2*time.Second {
		t.Errorf("the fresh request's first token took %v after the storm", ttft) // the bound
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := ts.srv.backend.Load()
		if l.Running == 0 && l.Waiting == 0 && l.KVCellsActive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the storm the load is %+v", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := ts.sched.Stats(); st.Cancelled == 0 {
		t.Fatalf("no request was cancelled: %+v", st)
	}
}

// TestALeavingClientCancelsItsWorkAtEveryStage: a client that leaves
// while its request is queued behind another, while its long prompt is
// prefilled, or while a non-streamed request decodes, cancels that work:
// the scheduler counts it cancelled and the load (running, waiting, KV
// cells held) is back to zero within 5 s.
func TestALeavingClientCancelsItsWorkAtEveryStage(t *testing.T) {
	ts := startServer(t, modeltest.Preset(t, "tiny"), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		scheduler.Options{Parallel: 1, Cells: 8192, Chunk: 16, TokenBudget: 16})
	post := func(ctx context.Context, body string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	long := fmt.Sprintf(`{"model":"%s","prompt":"%s","max_tokens":3000,"ignore_eos":true,"stream":true}`, ts.model, strings.Repeat("the cat saw a big red ball ", 4))
	bigPrompt := fmt.Sprintf(`{"model":"%s","prompt":"%s","max_tokens":4}`, ts.model, strings.Repeat("the cat saw a big red ball and the dog ran ", 150))
	nonStreamed := fmt.Sprintf(`{"model":"%s","prompt":"once upon a time","max_tokens":3000,"ignore_eos":true}`, ts.model)
	for _, stage := range []struct {
		name  string
		run   func(ctx context.Context)
		leave time.Duration
	}{
		{"queued behind a running stream", func(ctx context.Context) {
			// One slot: the second request waits for the first.
			first, stopFirst := context.WithCancel(context.Background())
			defer stopFirst()
			go post(first, long)
			deadline := time.Now().Add(10 * time.Second)
			for ts.srv.backend.Load().Running == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			post(ctx, long)
		}, 300 * time.Millisecond},
		{"prefilling a long prompt", func(ctx context.Context) { post(ctx, bigPrompt) }, 50 * time.Millisecond},
		{"decoding, not streamed", func(ctx context.Context) { post(ctx, nonStreamed) }, 300 * time.Millisecond},
	} {
		before := ts.sched.Stats().Cancelled
		ctx, cancel := context.WithTimeout(context.Background(), stage.leave)
		stage.run(ctx)
		cancel()
		deadline := time.Now().Add(5 * time.Second)
		for {
			l := ts.srv.backend.Load()
			if l.Running == 0 && l.Waiting == 0 && l.KVCellsActive == 0 && ts.sched.Stats().Cancelled > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: 5 s after the client left, load %+v, cancelled %d (was %d)", stage.name, l, ts.sched.Stats().Cancelled, before)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestShutdownDrainsMountedApplications: an application's streams drain
// with the server's: a new request to it gets 503 while draining, and a
// stream still running at the timeout ends with an error event.
func TestShutdownDrainsMountedApplications(t *testing.T) {
	sched, stop := runTiny(t, scheduler.Options{Parallel: 2, Cells: 16384})
	defer stop()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	backend := backendFor(t, sched, "tiny")
	app := New(backend, Options{Logger: quiet, Application: true})
	srv := New(backend, Options{ShutdownTimeout: time.Second, Logger: quiet,
		Applications: []Mounted{{Prefix: "/app", Handler: app.Handler()}}})
	addr, shutdown, served := serveOnLoopback(t, srv)
	started := make(chan struct{})
	end := make(chan streamEnd, 1)
	go func() {
		end <- readStreamAt(addr, "/app", `{"model":"tiny","prompt":"the cat","max_tokens":6000,"ignore_eos":true,"stream":true}`, started)
	}()
	<-started
	shutdown()
	for deadline := time.Now().Add(5 * time.Second); !srv.Draining() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	r, err := http.Post("http://"+addr+"/app/v1/completions", "application/json", strings.NewReader(`{"model":"tiny","prompt":"hi","max_tokens":1}`))
	if err != nil {
		t.Fatalf("a new application request while draining: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != 503 {
		t.Errorf("a new application request while draining: %d", r.StatusCode)
	}
	e := <-end
	if e.err != nil || !e.done || !strings.Contains(e.errEvent, "shutting down") {
		t.Errorf("the application's stream ended with %+v, want an error event saying the server is shutting down, then [DONE]", e)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
