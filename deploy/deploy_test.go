package deploy

import (
	"context"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/replica"
	"github.com/llmux/llmux/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// words is a Go deployment that streams the words of the request's first
// prompt, one event each; it counts the calls it served.
type words struct {
	calls atomic.Int64
	hold  time.Duration // how long each call takes before its first event
	boom  bool          // panic on a prompt containing "boom"
}

func (w *words) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	w.calls.Add(1)
	text := req.Prompts[0].Text
	if w.boom && strings.Contains(text, "boom") {
		panic("user code failed on " + text)
	}
	if w.hold > 0 {
		time.Sleep(w.hold)
	}
	return &sliceStream{parts: strings.Fields(text + " " + req.Model)}, nil
}

type sliceStream struct {
	parts []string
	i     int
}

func (s *sliceStream) Header() llm.Header { return llm.Header{} }
func (s *sliceStream) Recv(context.Context) (llm.Event, bool) {
	if s.i > len(s.parts) {
		return llm.Event{}, false
	}
	s.i++
	if s.i > len(s.parts) {
		return llm.Event{Final: true, Usage: &llm.Usage{CompletionTokens: len(s.parts)}}, true
	}
	ev := llm.Event{Text: s.parts[s.i-1] + " "}
	if s.i == len(s.parts) {
		ev.Finish = llm.FinishStop
	}
	return ev, true
}
func (s *sliceStream) Close() {}

func prompt(text string) *llm.Request {
	return &llm.Request{Model: "m", Prompts: []llm.Prompt{{Text: text}}}
}

func TestHandleSpreadsCallsEvenlyOverReplicas(t *testing.T) {
	var reps []*words
	h, err := New("words", Options{Replicas: 4}, func() (Deployment, error) {
		w := &words{hold: 200 * time.Microsecond}
		reps = append(reps, w)
		return w, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, e := h.Call(context.Background(), prompt(fmt.Sprint("call ", i))); e != nil {
				t.Error(e)
			}
		}()
	}
	wg.Wait()
	for i, w := range reps {
		if n := w.calls.Load(); math.Abs(float64(n)-250) > 50 {
			t.Errorf("replica %d served %d of 1000 calls, want 250 ± 20%%", i, n)
		}
	}
}

func TestAPanicInADeploymentFailsOneRequest(t *testing.T) {
	h, err := New("fragile", Options{Replicas: 1}, func() (Deployment, error) { return &words{boom: true}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, e := h.Call(context.Background(), prompt("boom now")); e == nil || e.Code != llm.CodeInternal {
		t.Fatalf("panicking call: %v", e)
	}
	res, e := h.Call(context.Background(), prompt("still here"))
	if e != nil || strings.TrimSpace(strings.Join(res.Texts, "")) != "still here m" {
		t.Fatalf("next call: %+v %v", res, e)
	}
	if st := h.Status(); st[0].Ongoing != 0 {
		t.Fatalf("the panicking call still counts as ongoing: %+v", st)
	}
}

func TestWithModelSetsTheMultiplexedModel(t *testing.T) {
	h, _ := New("words", Options{}, func() (Deployment, error) { return &words{}, nil })
	res, e := h.Call(context.Background(), prompt("hello"), WithModel("lora-7"))
	if e != nil || strings.TrimSpace(strings.Join(res.Texts, "")) != "hello lora-7" {
		t.Fatalf("got %+v %v", res, e)
	}
}

func TestMaxOngoingMakesCallsWaitForRoom(t *testing.T) {
	h, _ := New("slow", Options{Replicas: 1, MaxOngoing: 1}, func() (Deployment, error) { return &words{hold: 50 * time.Millisecond}, nil })
	st, e := h.Stream(context.Background(), prompt("first"))
	if e != nil {
		t.Fatal(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, e := h.Call(ctx, prompt("second")); e == nil || e.Code != llm.CodeOverloaded {
		t.Fatalf("a call to a full deployment: %v, want overloaded when its context ends", e)
	}
	st.Close()
	if _, e := h.Call(context.Background(), prompt("third")); e != nil {
		t.Fatalf("after the first call ended: %v", e)
	}
}

// proxy is a Go deployment that forwards every request to another
// deployment through a handle.
type proxy struct{ next *Handle }

func (p *proxy) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	return p.next.Stream(ctx, req)
}

// TestCancellationCrossesTwoHopsAndASocket: client → Go proxy → LLM
// deployment reached over a replica connection (a Unix socket); the
// client leaves and the model's scheduler frees the sequence.
func TestCancellationCrossesTwoHopsAndASocket(t *testing.T) {
	m, err := engine.LoadModel(modeltest.Preset(t, "tiny"), engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sched, err := scheduler.New(m, scheduler.Options{Parallel: 2, Cells: 1024})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); sched.Run(sctx) }()
	defer func() { stop(); <-schedDone; sched.Close() }()
	runner := multiplex.NewRunner("tiny", sched)
	defer runner.Close()
	pool := multiplex.NewPool(multiplex.PoolOptions{})
	pool.Add("tiny", nil, runner)

	sock := filepath.Join(t.TempDir(), "llm.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- replica.Serve(serveCtx, ln, pool, nil) }()
	defer func() { stopServe(); <-served }()
	client, err := replica.Dial("llm", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	llmHandle := ForBackend("llm", client)
	front, _ := New("proxy", Options{}, func() (Deployment, error) { return &proxy{next: llmHandle}, nil })
	ctx, cancel := context.WithCancel(context.Background())
	st, e := front.Stream(ctx, &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "on and on"}}, Params: llm.Params{MaxTokens: 100000, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	for range 3 {
		if ev, ok := st.Recv(ctx); !ok || ev.Error != nil {
			t.Fatalf("event %+v", ev)
		}
	}
	if sched.Stats().Running != 1 {
		t.Fatalf("running %d, want 1", sched.Stats().Running)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for sched.Stats().Running != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the model still runs the abandoned request: %+v", sched.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.Close()
	if s := front.Status(); s[0].Ongoing != 0 {
		t.Fatalf("the proxy's replica still counts the call: %+v", s)
	}
}

// BenchmarkHandleHop measures what one in-process handle hop adds: per
// call (a request with one event) and per streamed event.
func BenchmarkHandleHop(b *testing.B) {
	req := prompt("x")
	d := &words{}
	h, _ := New("words", Options{Replicas: 2}, func() (Deployment, error) { return d, nil })
	ctx := context.Background()
	drain := func(st llm.Stream) {
		for {
			if ev, ok := st.Recv(ctx); !ok || ev.Final {
				break
			}
		}
		st.Close()
	}
	b.Run("call/direct", func(b *testing.B) {
		for b.Loop() {
			st, _ := d.Generate(ctx, req)
			drain(st)
		}
	})
	b.Run("call/handle", func(b *testing.B) {
		for b.Loop() {
			st, _ := h.Stream(ctx, req)
			drain(st)
		}
	})
	long := prompt(strings.Repeat("w ", 1000))
	b.Run("1000-events/direct", func(b *testing.B) {
		for b.Loop() {
			st, _ := d.Generate(ctx, long)
			drain(st)
		}
	})
	b.Run("1000-events/handle", func(b *testing.B) {
		for b.Loop() {
			st, _ := h.Stream(ctx, long)
			drain(st)
		}
	})
}
