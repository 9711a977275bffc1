package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models/modeltest"
)

func loadModel(t testing.TB, preset string) *engine.Model {
	t.Helper()
	m, err := engine.LoadModel(modeltest.Preset(t, preset), engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// start runs a scheduler until the test ends.
func start(t testing.TB, m *engine.Model, opts Options) *Scheduler {
	t.Helper()
	s, err := New(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	t.Cleanup(func() { cancel(); s.Close() })
	return s
}

type result struct {
	tokens [][]int32
	text   []string
	finish []FinishReason
	errs   []error
	usage  *Usage
	events int
}

// collect reads st to its end. It must run on the test's goroutine (it
// calls t.Fatal); goroutines call drain and report its error themselves.
func collect(t testing.TB, st *Stream) result {
	t.Helper()
	r, err := drain(st)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// drain reads st to its end and returns what it got, or the first problem
// with the stream.
func drain(st *Stream) (result, error) {
	var r result
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // liveness bound only
	defer cancel()
	for {
		ev, err := st.Recv(ctx)
		if err == io.EOF {
			return r, nil
		}
		if err != nil {
			return r, fmt.Errorf("recv: %w", err)
		}
		r.events++
		if ev.Final {
			r.usage = ev.Usage
			if ev.Err != nil {
				r.errs = append(r.errs, ev.Err)
			}
			continue
		}
		for len(r.tokens) <= ev.Index {
			r.tokens = append(r.tokens, nil)
			r.text = append(r.text, "")
			r.finish = append(r.finish, "")
		}
		for _, tk := range ev.Tokens {
			r.tokens[ev.Index] = append(r.tokens[ev.Index], tk.ID)
		}
		r.text[ev.Index] += ev.Text
		if ev.Finish != "" {
			if r.finish[ev.Index] != "" {
				return r, fmt.Errorf("choice %d finished twice (%s, %s)", ev.Index, r.finish[ev.Index], ev.Finish)
			}
			r.finish[ev.Index] = ev.Finish
		}
		if ev.Err != nil {
			r.errs = append(r.errs, ev.Err)
		}
	}
}

func tokenize(t testing.TB, m *engine.Model, s string) []int32 {
	t.Helper()
	toks, err := m.Tokenize(s, true, false)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func prompts(n int) []string {
	words := strings.Fields("the cat saw a big red ball and ran to the park with her mom one day tom went up the tree")
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for j := 0; j < 3+(i*7)%40; j++ {
			b.WriteString(words[(i+j*3)%len(words)])
			b.WriteByte(' ')
		}
		out[i] = b.String()
	}
	return out
}

// alone runs each prompt greedily on a fresh one-slot scheduler.
func alone(t testing.TB, m *engine.Model, ps []string, maxTokens int) [][]int32 {
	t.Helper()
	s := start(t, m, Options{Parallel: 1, Cells: 2048, NoPrefixCache: true})
	var out [][]int32
	for _, p := range ps {
		st, err := s.Submit(context.Background(), Request{Prompt: tokenize(t, m, p), MaxTokens: maxTokens, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, collect(t, st).tokens[0])
	}
	return out
}

// concurrently submits every prompt at once (greedy, ignore_eos, request i
// capped at maxTokens(i) tokens) and collects each stream.
func concurrently(t testing.TB, s *Scheduler, m *engine.Model, ps []string, maxTokens func(int) int) []result {
	t.Helper()
	results := make([]result, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		prompt := tokenize(t, m, p) // t.Fatal only on the test's goroutine
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Submit(context.Background(), Request{ID: fmt.Sprint(i), Prompt: prompt, MaxTokens: maxTokens(i), IgnoreEOS: true})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			r, err := drain(st)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	return results
}

func TestConcurrentRequestsCompleteAndMatchAlone(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 8, Cells: 4096})
	ps := prompts(32)
	results := concurrently(t, s, m, ps, func(i int) int { return 8 + i%17 })
	ref := alone(t, m, ps, 24)
	for i, r := range results {
		want := 8 + i%17
		if len(r.tokens) != 1 || len(r.tokens[0]) != want || r.finish[0] != FinishLength {
			t.Fatalf("request %d: %d tokens, finish %v; want %d tokens, length", i, len(r.tokens[0]), r.finish, want)
		}
		if r.usage == nil || r.usage.CompletionTokens != want || r.usage.PromptTokens != len(tokenize(t, m, ps[i])) {
			t.Fatalf("request %d: usage %+v", i, r.usage)
		}
		if !slices.Equal(r.tokens[0], ref[i][:want]) {
			t.Errorf("request %d: batched %v\nalone %v", i, r.tokens[0], ref[i][:want])
		}
	}
	if st := settled(s); st.KV.SlotsActive != 0 {
		t.Fatalf("slots still active after all requests: %+v", st.KV)
	}
}

// TestCancelFreesSlotWithinAStep: a request cancelled between two steps
// holds no KV slot in the next step, and the requests beside it run on.
//
// A long Handoff makes the scheduler wait, after each step, for the
// consumers of that step's events. The test never reads the victim before
// it reads the stats: the scheduler then holds after the step that gave
// the victim an event, and the stats read while it holds are that step's.
func TestCancelFreesSlotWithinAStep(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 3, Cells: 4096, Handoff: time.Minute})
	var streams []*Stream
	for i := range 3 {
		st, err := s.Submit(context.Background(), Request{Prompt: tokenize(t, m, prompts(3)[i]), MaxTokens: 300, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	// The survivors are read as fast as they produce.
	survivors := make([]result, 2)
	var wg sync.WaitGroup
	for i, st := range streams[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := drain(st)
			if err != nil {
				t.Errorf("survivor %d: %v", i, err)
			}
			survivors[i] = r
		}()
	}
	victim := streams[0]
	waitHeld(t, victim, "the victim's first token")
	held := s.Stats()
	victim.Close()
	// The victim's cancellation events stay unread, so the scheduler holds
	// again after the first step that follows the cancel.
	waitHeld(t, victim, "the first step after the cancel")
	next := s.Stats()
	r := collect(t, victim) // lets the scheduler go on
	if next.Steps != held.Steps+1 {
		t.Fatalf("held at step %d, then at %d; want the very next step", held.Steps, next.Steps)
	}
	if next.Cancelled != 1 || next.Running != 2 || next.KV.SlotsActive != 2 {
		t.Fatalf("step %d, the first after the cancel: %d cancelled, %d running, %d KV slots active; want 1, 2, 2 (the victim's slot freed)",
			next.Steps, next.Cancelled, next.Running, next.KV.SlotsActive)
	}
	if len(r.tokens) != 1 || len(r.tokens[0]) == 0 || len(r.errs) == 0 || !errors.Is(r.errs[len(r.errs)-1], context.Canceled) {
		t.Fatalf("victim: %d choices, errors %v; want tokens before the cancel, then context.Canceled", len(r.tokens), r.errs)
	}
	wg.Wait()
	for _, res := range survivors {
		if len(res.tokens) != 1 || len(res.tokens[0]) != 300 || res.finish[0] != FinishLength {
			t.Fatalf("survivor got %d choices, finish %v", len(res.tokens), res.finish)
		}
	}
	if st := settled(s); st.Cancelled != 1 || st.KV.SlotsActive != 0 {
		t.Fatalf("stats after: %+v", st)
	}
}

// waitHeld waits until a step is held waiting for st's consumer (events
// are queued for it, and the scheduler has published that step's stats and
// waits for them to be taken). It fails the test after 30 seconds.
func waitHeld(t *testing.T, st *Stream, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st.mu.Lock()
		held := st.taken != nil
		st.mu.Unlock()
		if held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for the scheduler to hold on %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestQueueOverflowAndInvalidRequests(t *testing.T) {
	m := loadModel(t, "tiny")
	s, err := New(m, Options{Parallel: 1, Cells: 256, MaxQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Run is not started, so nothing leaves the queue.
	p := tokenize(t, m, "the cat")
	for i := range 2 {
		if _, err := s.Submit(context.Background(), Request{Prompt: p}); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	_, err = s.Submit(context.Background(), Request{Prompt: p})
	var oe *OverloadError
	if !errors.As(err, &oe) || oe.RetryAfter <= 0 {
		t.Fatalf("third submit: %v, want *OverloadError with RetryAfter", err)
	}
	long := make([]int32, 300)
	for i := range long {
		long[i] = 300
	}
	bad := map[string]Request{
		"prompt":     {Prompt: long},
		"n":          {Prompt: p, N: 2},
		"max_tokens": {Prompt: p, MaxTokens: -1},
		"sampling":   {Prompt: p, Sampling: engine.SamplingParams{Grammar: "root ::= ("}},
		"stop":       {Prompt: p, Stop: []string{""}},
	}
	bad["prompt"] = Request{Prompt: long}
	for param, r := range bad {
		if _, err := s.Submit(context.Background(), r); !isInvalid(err, param) {
			t.Errorf("%s: got %v, want *InvalidRequestError for %s", param, err, param)
		}
	}
	if _, err := s.Submit(context.Background(), Request{Prompt: []int32{99999}}); err == nil {
		t.Error("out-of-vocabulary token accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	go s.Run(ctx)
	s.Close()
}

func TestQueuedPastDeadlineFails(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 1, Cells: 1024})
	st, err := s.Submit(context.Background(), Request{Prompt: tokenize(t, m, "the cat"), Deadline: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, st)
	var oe *OverloadError
	if len(r.errs) == 0 || !errors.As(r.errs[0], &oe) {
		t.Fatalf("got %v, want an OverloadError", r.errs)
	}
}

func TestPreemptionLosesNothing(t *testing.T) {
	m := loadModel(t, "tiny")
	ps := prompts(6)[:4]
	const gen = 100
	ref := alone(t, m, ps, gen)
	// 4 sequences of ~5-40 prompt tokens + 100 generated need ~480 cells;
	// give them 120 (llama.cpp rounds a context up to 256) so sequences
	// must be preempted and recomputed.
	s := start(t, m, Options{Parallel: 4, CacheSlots: -1, Cells: 120, TokenBudget: 64, Chunk: 32})
	results := make([]result, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		prompt := tokenize(t, m, p) // t.Fatal only on the test's goroutine
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: gen, IgnoreEOS: true})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			r, err := drain(st)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	for i, r := range results {
		if !slices.Equal(r.tokens[0], ref[i]) {
			t.Errorf("request %d after preemption:\n got  %v\n want %v", i, r.tokens[0], ref[i])
		}
	}
	if p := s.Stats().Preemptions; p == 0 {
		t.Fatal("no preemption happened; the test did not exercise it")
	} else {
		t.Logf("%d preemptions", p)
	}
}

func TestStopStringsAcrossTokens(t *testing.T) {
	m := loadModel(t, "small")
	s := start(t, m, Options{Parallel: 2, Cells: 2048})
	p := tokenize(t, m, "once upon a time the dog")
	st, err := s.Submit(context.Background(), Request{Prompt: p, MaxTokens: 60, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	// Piece texts of the free run.
	var pieces []string
	for {
		ev, err := st.Recv(context.Background())
		if err == io.EOF {
			break
		}
		if !ev.Final {
			pieces = append(pieces, ev.Text)
		}
	}
	full := strings.Join(pieces, "")
	// A stop string made of the last byte of one token's text and the first
	// two of the next, at a boundary where it does not occur earlier in the
	// text: the first occurrence spans two tokens, so the matcher must join
	// their texts to catch it.
	var stop string
	first := 0
	end := 0 // where pieces[i] ends in full
	for i := 0; i+1 < len(pieces); i++ {
		a, b := pieces[i], pieces[i+1]
		end += len(a)
		if len(a) >= 2 && len(b) >= 2 && isASCII(a) && isASCII(b) {
			cand := a[len(a)-1:] + b[:2]
			if strings.Index(full, cand) == end-1 {
				stop = cand
				first = end - 1
				break
			}
		}
	}
	if stop == "" {
		t.Fatalf("no boundary between two ASCII pieces where a stop string first occurs in %q", full)
	}
	st, err = s.Submit(context.Background(), Request{Prompt: p, MaxTokens: 60, IgnoreEOS: true, Stop: []string{"zzzzzzzz", stop}})
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, st)
	if r.finish[0] != FinishStop {
		t.Fatalf("finish %v, want stop (stop %q in %q)", r.finish[0], stop, full)
	}
	if r.text[0] != full[:first] {
		t.Fatalf("text %q, want %q (stop %q)", r.text[0], full[:first], stop)
	}
	if strings.Contains(r.text[0], stop) {
		t.Fatal("stop string leaked")
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func TestPrefixReuse(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 2, Cells: 4096})
	prefix := make([]int32, 0, 400)
	prefix = append(prefix, m.BOS())
	for len(prefix) < 400 {
		prefix = append(prefix, int32(300+len(prefix)%150))
	}
	run := func(suffix ...int32) *Usage {
		p := append(append([]int32{}, prefix...), suffix...)
		st, err := s.Submit(context.Background(), Request{Prompt: p, MaxTokens: 4, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		return collect(t, st).usage
	}
	u1 := run(10, 11, 12)
	u2 := run(20, 21, 22, 23)
	if u1.CachedTokens != 0 {
		t.Fatalf("first request reused %d tokens from an empty cache", u1.CachedTokens)
	}
	prefilled := u2.PromptTokens - u2.CachedTokens
	if prefilled >= 50 {
		t.Fatalf("second request prefilled %d tokens (cached %d of %d), want < 50", prefilled, u2.CachedTokens, u2.PromptTokens)
	}
	t.Logf("second request: cached %d, prefilled %d", u2.CachedTokens, prefilled)
}

func TestNChoicesShareThePrompt(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 4, Cells: 2048})
	p := tokenize(t, m, "the cat saw the dog")
	st, err := s.Submit(context.Background(), Request{Prompt: p, N: 3, MaxTokens: 12, IgnoreEOS: true, Sampling: engine.SamplingParams{Temperature: 1, Seed: 42}, Logprobs: true, TopLogprobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, st)
	if len(r.tokens) != 3 {
		t.Fatalf("%d choices", len(r.tokens))
	}
	for i := range 3 {
		if len(r.tokens[i]) != 12 || r.finish[i] != FinishLength {
			t.Fatalf("choice %d: %d tokens, %s", i, len(r.tokens[i]), r.finish[i])
		}
	}
	if slices.Equal(r.tokens[0], r.tokens[1]) && slices.Equal(r.tokens[1], r.tokens[2]) {
		t.Fatal("three sampled choices are identical: samplers are shared")
	}
	if r.usage.CompletionTokens != 36 || r.usage.PromptTokens != len(p) {
		t.Fatalf("usage %+v", r.usage)
	}
	// Same seed, same choices.
	st, _ = s.Submit(context.Background(), Request{Prompt: p, N: 3, MaxTokens: 12, IgnoreEOS: true, Sampling: engine.SamplingParams{Temperature: 1, Seed: 42}})
	r2 := collect(t, st)
	for i := range 3 {
		if !slices.Equal(r.tokens[i], r2.tokens[i]) {
			t.Fatalf("choice %d not reproducible with the same seed", i)
		}
	}
}

// TestConcurrentSharedPrefixComputedOnce: requests that arrive together
// with a common 400-token prefix compute it once; the rest copy it.
func TestConcurrentSharedPrefixComputedOnce(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 4, Cells: 4096})
	prefix := []int32{m.BOS()}
	for len(prefix) < 400 {
		prefix = append(prefix, int32(300+len(prefix)%150))
	}
	var streams []*Stream
	for i := range 4 {
		p := append(append([]int32{}, prefix...), int32(10+i), int32(20+i))
		st, err := s.Submit(context.Background(), Request{Prompt: p, MaxTokens: 2, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	cached := 0
	for _, st := range streams {
		cached += collect(t, st).usage.CachedTokens
	}
	if cached < 3*400 {
		t.Fatalf("4 concurrent requests reused %d prompt tokens in all, want at least %d", cached, 3*400)
	}
}

func TestExpectedPrefillDiscountsSharedPrefix(t *testing.T) {
	m := loadModel(t, "tiny")
	s, err := New(m, Options{Parallel: 1, Cells: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		go s.Run(ctx)
		s.Close()
	}()
	system := make([]int32, 200)
	for i := range system {
		system[i] = int32(300 + i%100)
	}
	a := append(append([]int32{}, system...), 5, 6, 7)
	b := append(append([]int32{}, system...), 8, 9)
	short := []int32{300, 301, 9}
	if got := s.expectedPrefill("", a); got != int64(len(a)) {
		t.Fatalf("first prompt: %d, want %d", got, len(a))
	}
	if got := s.expectedPrefill("", b); got != 2 {
		t.Fatalf("prompt sharing 200 tokens: %d, want 2", got)
	}
	if got := s.expectedPrefill("", short); got != 3 {
		t.Fatalf("a 2-token overlap is not worth discounting: %d, want 3", got)
	}
}

// TestHandoff: between steps the scheduler waits for consumers to take
// their events. A consumer that keeps up is always waited for and never
// times out; one that does not read is waited for once, then the stream
// goes on without pauses, and loses nothing.
func TestHandoff(t *testing.T) {
	m := loadModel(t, "tiny")
	prompt, _ := m.Tokenize("the cat", true, false)

	// A long pause: a broken handoff would make every step wait it out.
	prompt1 := start(t, m, Options{Parallel: 2, Cells: 512, Handoff: time.Minute})
	st, err := prompt1.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 24, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := collect(t, st); len(r.tokens) != 1 || len(r.tokens[0]) != 24 {
		t.Fatalf("prompt consumer got %+v", r)
	}
	if n := prompt1.Stats().HandoffTimeouts; n != 0 {
		t.Fatalf("a consumer that keeps up timed out %d handoffs", n)
	}

	slow := start(t, m, Options{Parallel: 2, Cells: 512, Handoff: 20 * time.Millisecond})
	st, err = slow.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 24, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	// The request runs with nobody reading.
	waitStats(t, slow, "the unread request to finish", func(st Stats) bool {
		return st.Running+st.Waiting == 0 && st.GeneratedTokens >= 24
	})
	if n := slow.Stats().HandoffTimeouts; n != 1 {
		t.Fatalf("a consumer that never read cost %d handoff timeouts, want 1", n)
	}
	if r := collect(t, st); len(r.tokens) != 1 || len(r.tokens[0]) != 24 || r.finish[0] != FinishLength {
		t.Fatalf("late reader got %+v", r)
	}
}

// TestPerSlotLayout: with a KV stream per slot, batched requests match
// requests run alone, each sequence's context is Cells/Parallel, n > 1
// forks copy the prompt, and a finished prompt left in its slot serves the
// next request with the same prefix.
func TestPerSlotLayout(t *testing.T) {
	m := loadModel(t, "tiny")
	s := start(t, m, Options{Parallel: 4, Cells: 2048, KVLayout: KVPerSlot})
	if got := s.SeqContext(); got != 512 {
		t.Fatalf("per-slot context %d, want 2048/4 = 512", got)
	}
	ps := prompts(12)
	results := concurrently(t, s, m, ps, func(int) int { return 16 })
	ref := alone(t, m, ps, 16)
	for i, r := range results {
		if len(r.tokens) != 1 || !slices.Equal(r.tokens[0], ref[i]) {
			t.Fatalf("request %d: per-slot batched %v, alone %v", i, r.tokens, ref[i])
		}
	}

	// The context of one sequence is its stream.
	long := make([]int32, 512)
	for i := range long {
		long[i] = int32(3 + i%200)
	}
	if _, err := s.Submit(context.Background(), Request{Prompt: long}); !isInvalid(err, "prompt") {
		t.Fatalf("512-token prompt in a 512-cell stream: %v", err)
	}
	st, err := s.Submit(context.Background(), Request{Prompt: long[:500], IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := collect(t, st); len(r.tokens[0]) != 12 || r.finish[0] != FinishLength {
		t.Fatalf("generation in a full stream: %d tokens, %v; want 12, length", len(r.tokens[0]), r.finish)
	}

	// n = 3: forks copy the prompt's stream; greedy choices agree with
	// the request run alone.
	st, err = s.Submit(context.Background(), Request{Prompt: tokenize(t, m, ps[5]), N: 3, MaxTokens: 16, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, st)
	for i := range 3 {
		if !slices.Equal(r.tokens[i], ref[5]) {
			t.Fatalf("fork %d: %v, want %v", i, r.tokens[i], ref[5])
		}
	}

	// A finished prompt stays in its slot for the next one with its prefix.
	prefix := long[:300]
	st, _ = s.Submit(context.Background(), Request{Prompt: prefix, MaxTokens: 2})
	collect(t, st)
	st, _ = s.Submit(context.Background(), Request{Prompt: append(slices.Clone(prefix), 7, 8, 9), MaxTokens: 2})
	if u := collect(t, st).usage; u.CachedTokens < 290 {
		t.Fatalf("reused %d of the 300-token prefix left in a slot", u.CachedTokens)
	}
	if st := settled(s); st.KV.SlotsActive != 0 {
		t.Fatalf("slots active after every request ended: %+v", st.KV)
	}
}

func isInvalid(err error, param string) bool {
	var ie *InvalidRequestError
	return errors.As(err, &ie) && ie.Param == param
}

// settled returns the scheduler's stats once they show no running sequence
// and no active slot, or after a minute. Stats are published at the end of
// a step, a moment after the last events reach their consumers, so a test
// that has read every stream to its end may see the step before.
func settled(s *Scheduler) Stats {
	deadline := time.Now().Add(time.Minute) // liveness bound only
	for {
		st := s.Stats()
		if (st.Running == 0 && st.KV.SlotsActive == 0) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(time.Millisecond)
	}
}

// waitStats polls s's stats until ok holds and returns them; it fails the
// test if they do not within 30 seconds.
func waitStats(t *testing.T, s *Scheduler, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s; stats %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}
