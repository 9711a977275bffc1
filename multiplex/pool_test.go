package multiplex

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/scheduler"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// countingLoader wraps the engine loader and counts loads and the models
// loaded at any one time.
type countingLoader struct {
	inner             *EngineLoader
	loads, live, peak atomic.Int64
	mu                sync.Mutex // guards loadedNames
	loadedNames       []string
	delay             time.Duration
}

func (c *countingLoader) Load(ctx context.Context, e Entry) (*Loaded, error) {
	if c.delay > 0 {
		select {
		case <-time.After(c.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l, err := c.inner.Load(ctx, e)
	if err != nil {
		return nil, err
	}
	c.loads.Add(1)
	c.mu.Lock()
	c.loadedNames = append(c.loadedNames, e.Name)
	c.mu.Unlock()
	n := c.live.Add(1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	inner := l.Close
	l.Close = func() { c.live.Add(-1); inner() }
	return l, nil
}

// modelDir writes copies of the tiny synthesized model under the given
// names into a fresh directory.
func modelDir(t *testing.T, names ...string) string {
	t.Helper()
	src, err := os.ReadFile(modeltest.Preset(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n+".gguf"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startPool serves every model in dir; it stops when the test ends.
func startPool(t *testing.T, dir string, o PoolOptions) (*Pool, *countingLoader) {
	t.Helper()
	cat, err := NewCatalog(CatalogOptions{ModelsDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	el := &EngineLoader{Defaults: scheduler.Options{Parallel: 4, Cells: 1024, Steps: scheduler.NewStepGate()}}
	cl := &countingLoader{inner: el}
	o.Catalog, o.Load, o.Size = cat, cl.Load, el.Size
	p := NewPool(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pool: %v", err)
		}
		if n := cl.live.Load(); n != 0 {
			t.Errorf("%d models still loaded after the pool stopped", n)
		}
	})
	return p, cl
}

// complete runs a completion to its end and returns its text and finish
// reason.
func complete(ctx context.Context, p *Pool, model, prompt string, maxTokens int) (string, llm.Finish, *llm.Error) {
	st, e := p.Generate(ctx, &llm.Request{Model: model, Prompts: []llm.Prompt{{Text: prompt}}, Params: llm.Params{MaxTokens: maxTokens, IgnoreEOS: true}})
	if e != nil {
		return "", "", e
	}
	defer st.Close()
	var text strings.Builder
	var finish llm.Finish
	for {
		ev, ok := st.Recv(ctx)
		if !ok {
			return text.String(), finish, ev.Error
		}
		if ev.Final {
			return text.String(), finish, ev.Error
		}
		if ev.Error != nil {
			return text.String(), finish, ev.Error
		}
		text.WriteString(ev.Text)
		if ev.Finish != "" {
			finish = ev.Finish
		}
	}
}

func TestTwentyConcurrentColdRequestsCauseOneLoad(t *testing.T) {
	p, cl := startPool(t, modelDir(t, "a", "b"), PoolOptions{})
	cl.delay = 200 * time.Millisecond // widen the window in which requests pile up
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, fin, e := complete(context.Background(), p, "a", fmt.Sprintf("request %d", i), 4); e != nil || fin != llm.FinishLength {
				errs <- fmt.Errorf("request %d: finish %q, error %v", i, fin, e)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := cl.loads.Load(); n != 1 {
		t.Fatalf("20 cold requests caused %d loads, want 1", n)
	}
	if st := p.Stats(); st.Loads != 1 || st.ColdStarts != 1 {
		t.Fatalf("pool stats %+v, want one load and one cold start", st)
	}
}

func TestCyclingThroughMoreModelsThanFitAllSucceed(t *testing.T) {
	p, cl := startPool(t, modelDir(t, "a", "b", "c"), PoolOptions{MaxModels: 2, MinResidency: time.Millisecond, MaxSwapWait: 50 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				model := string(rune('a' + (w+i)%3))
				if _, fin, e := complete(context.Background(), p, model, "the cat", 3); e != nil || fin != llm.FinishLength {
					errs <- fmt.Errorf("client %d request %d (%s): finish %q, error %v", w, i, model, fin, e)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if peak := cl.peak.Load(); peak > 2 {
		t.Fatalf("%d models were loaded at once; --max-models is 2", peak)
	}
	if cl.loads.Load() < 3 {
		t.Fatalf("only %d loads for 3 models that do not fit together", cl.loads.Load())
	}
}

func TestEvictionWaitsForTheRunningStream(t *testing.T) {
	p, _ := startPool(t, modelDir(t, "a", "b"), PoolOptions{MaxModels: 1, MinResidency: time.Millisecond, MaxSwapWait: time.Millisecond})
	ctx := context.Background()
	// Warm a, then start a long stream on it.
	if _, _, e := complete(ctx, p, "a", "warm", 1); e != nil {
		t.Fatal(e)
	}
	st, e := p.Generate(ctx, &llm.Request{Model: "a", Prompts: []llm.Prompt{{Text: "long"}}, Params: llm.Params{MaxTokens: 64, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	defer st.Close()
	first, ok := st.Recv(ctx)
	if !ok || first.Error != nil {
		t.Fatalf("first event: %+v", first)
	}
	// A request for b needs a's place; it must not cut a's stream.
	bDone := make(chan error, 1)
	go func() {
		_, fin, e := complete(ctx, p, "b", "other", 2)
		if e != nil {
			bDone <- e
			return
		}
		if fin != llm.FinishLength {
			bDone <- fmt.Errorf("b finished with %q", fin)
			return
		}
		bDone <- nil
	}()
	tokens, finish := len(first.Tokens), first.Finish
	for {
		ev, ok := st.Recv(ctx)
		if !ok {
			t.Fatalf("a's stream ended without a final event: %+v", ev)
		}
		if ev.Final {
			if ev.Error != nil {
				t.Fatalf("a's stream failed: %v", ev.Error)
			}
			if ev.Usage.CompletionTokens != 64 {
				t.Fatalf("a's stream produced %d tokens, want 64", ev.Usage.CompletionTokens)
			}
			break
		}
		if ev.Error != nil {
			t.Fatalf("a's stream got an error event: %v", ev.Error)
		}
		tokens += len(ev.Tokens)
		if ev.Finish != "" {
			finish = ev.Finish
		}
	}
	st.Close()
	if finish != llm.FinishLength {
		t.Fatalf("a finished with %q after %d tokens, want length", finish, tokens)
	}
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("b: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("b never ran after a's stream ended")
	}
}

func TestFailedLoadIsReportedAndNotCached(t *testing.T) {
	dir := modelDir(t, "good")
	if err := os.WriteFile(filepath.Join(dir, "broken.gguf"), []byte("GGUF but not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := startPool(t, dir, PoolOptions{})
	ctx := context.Background()
	for try := range 2 {
		_, _, e := complete(ctx, p, "broken", "hi", 2)
		if e == nil || e.Code != llm.CodeLoadFailed {
			t.Fatalf("try %d: broken model gave %v, want %s", try, e, llm.CodeLoadFailed)
		}
		if strings.Contains(e.Message, dir) {
			t.Fatalf("the error names the file's directory: %q", e.Message)
		}
	}
	if st := p.Stats(); st.LoadFailures != 2 {
		t.Fatalf("load failures %d, want 2 (a failed load is not cached)", st.LoadFailures)
	}
	if _, fin, e := complete(ctx, p, "good", "hi", 2); e != nil || fin != llm.FinishLength {
		t.Fatalf("good model beside a broken one: %q %v", fin, e)
	}
	if _, e := p.Info(ctx, "broken"); e == nil || e.Code != llm.CodeLoadFailed {
		t.Fatalf("Info of the broken model: %v", e)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(p)
	for _, c := range []struct {
		series, model string
		want          float64
	}{
		{"llmux_model_load_failures_total", "broken", 2},
		{"llmux_model_loads_total", "good", 1},
		{"llmux_model_loaded", "good", 1},
		{"llmux_model_requests_in_flight", "good", 0},
	} {
		if got := gathered(t, reg, c.series, c.model); got != c.want {
			t.Errorf("%s{model=%q} = %g, want %g", c.series, c.model, got, c.want)
		}
	}
	if problems, err := testutil.CollectAndLint(p); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %+v", err, problems)
	}
	states := map[string]llm.ModelState{}
	for _, mi := range p.Models(ctx) {
		states[mi.ID] = mi.State
	}
	if states["good"] != llm.StateLoaded || states["broken"] != llm.StateAvailable {
		t.Fatalf("model states %v", states)
	}
}

// gathered reads one labelled series from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name, model string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == model {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{model=%q}", name, model)
	return 0
}

func TestALoadNobodyWaitsForIsAbandoned(t *testing.T) {
	cat, err := NewCatalog(CatalogOptions{ModelsDirs: []string{modelDir(t, "slow")}})
	if err != nil {
		t.Fatal(err)
	}
	abandoned := make(chan struct{})
	load := func(ctx context.Context, e Entry) (*Loaded, error) {
		<-ctx.Done() // a load that only ends when abandoned
		close(abandoned)
		return nil, ctx.Err()
	}
	p := NewPool(PoolOptions{Catalog: cat, Load: load})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	rctx, leave := context.WithCancel(context.Background())
	errc := make(chan *llm.Error, 1)
	go func() {
		_, e := p.Generate(rctx, &llm.Request{Model: "slow", Prompts: []llm.Prompt{{Text: "x"}}})
		errc <- e
	}()
	time.Sleep(50 * time.Millisecond) // let the request reach the pool
	leave()
	if e := <-errc; e == nil || e.Code != llm.CodeCancelled {
		t.Fatalf("the request that left got %v", e)
	}
	select {
	case <-abandoned:
	case <-time.After(10 * time.Second):
		t.Fatal("the load went on after its only waiter left")
	}
}

func TestUnknownNameIsNotFoundBeforeAnyLoad(t *testing.T) {
	p, cl := startPool(t, modelDir(t, "a"), PoolOptions{})
	_, e := p.Generate(context.Background(), &llm.Request{Model: "zzz", Prompts: []llm.Prompt{{Text: "x"}}})
	if e == nil || e.Code != llm.CodeModelNotFound {
		t.Fatalf("unknown model: %v", e)
	}
	if n := cl.loads.Load(); n != 0 {
		t.Fatalf("an unknown name caused %d loads", n)
	}
}

// fakePool serves a catalog of the given names with a loader that loads
// nothing (its runners are nil), for tests of the owner's decisions alone.
func fakePool(t *testing.T, o PoolOptions, names ...string) *Pool {
	t.Helper()
	cat, err := NewCatalog(CatalogOptions{ModelsDirs: []string{modelDir(t, names...)}})
	if err != nil {
		t.Fatal(err)
	}
	o.Catalog = cat
	o.Load = func(ctx context.Context, e Entry) (*Loaded, error) { return &Loaded{Close: func() {}}, nil }
	p := NewPool(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func TestARequestThatCannotGetItsModelByItsDeadlineIsRefusedAtOnce(t *testing.T) {
	p := fakePool(t, PoolOptions{MaxModels: 1, MaxSwapWait: 5 * time.Second, MinResidency: time.Hour}, "a", "b")
	ctx := context.Background()
	_, release, e := p.acquire(ctx, "a", time.Time{})
	if e != nil {
		t.Fatal(e)
	}
	defer release()
	// b does not fit beside a, which is busy: the swap may be held back
	// for MaxSwapWait, longer than this request may wait.
	start := time.Now()
	_, _, e = p.acquire(ctx, "b", time.Now().Add(time.Second))
	if e == nil || e.Code != llm.CodeOverloaded || e.RetryAfter < 5*time.Second {
		t.Fatalf("got %+v, want overloaded with Retry-After ≥ 5s", e)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("refused after %v, not at once", d)
	}
	// With a deadline past the predicted wait, it waits; a deadline that
	// passes while waiting ends the wait with the same error.
	_, _, e = p.acquire(ctx, "b", time.Now().Add(6*time.Second))
	if e == nil || e.Code != llm.CodeOverloaded {
		t.Fatalf("after waiting: %+v", e)
	}
}
