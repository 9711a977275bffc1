package scheduler

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/llmux/llmux/engine"
)

// fakeEngine stands in for an engine context: it keeps each sequence
// slot's tokens, and the logits of a row pick the next token from a hash of
// everything the row's sequence holds, including the adapter set each cell
// was computed under. So a sequence's greedy output depends on its KV
// contents exactly as a model's would, and KV reused across adapter sets
// shows up as different output (and is recorded in mixed).
type fakeEngine struct {
	vocab int

	mu       sync.Mutex // guards everything below (tests read while the loop runs)
	kv       map[int][]fakeCell
	set      string // the active adapter set
	logits   map[int][]float32
	noSpace  int      // the next Decodes that fail with ErrNoKVSpace
	decodes  int      // successful Decodes
	setCalls int      // SetAdapters calls
	stepSets []string // the adapter set of each successful Decode
	rows     []int    // the rows of each successful Decode
	// cost, when set, is how long a Decode of that many rows takes (a
	// sleep: on the fake clock inside a synctest bubble).
	cost   func(rows int) time.Duration
	mixed  []string // sequences whose cells were computed under different sets
	parks  int      // ParkThreads calls
	closed bool     // the backend's close ran
	// parkedClosed counts ParkThreads calls after close: on a real
	// context, a use of its freed thread pool.
	parkedClosed int
}

type fakeCell struct {
	tok int32
	set string
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{vocab: 48, kv: map[int][]fakeCell{}, logits: map[int][]float32{}}
}

func (f *fakeEngine) SeqRemove(seq, p0, p1 int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	cells := f.kv[seq]
	if p0 < 0 {
		p0 = 0
	}
	if p0 >= len(cells) {
		return true
	}
	if p1 >= 0 && p1 < len(cells) {
		panic("fake engine: partial removal from the middle of a sequence")
	}
	f.kv[seq] = cells[:p0:p0]
	return true
}

func (f *fakeEngine) SeqCopy(src, dst, p0, p1 int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cells := f.kv[src]
	if p1 < 0 || p1 > len(cells) {
		p1 = len(cells)
	}
	if p0 > 0 || len(f.kv[dst]) != 0 {
		panic(fmt.Sprintf("fake engine: copy into a non-empty sequence %d or from position %d", dst, p0))
	}
	f.kv[dst] = slices.Clone(cells[:p1])
}

func (f *fakeEngine) Decode(b *engine.Batch) error {
	if f.cost != nil {
		time.Sleep(f.cost(b.Len()))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noSpace > 0 {
		f.noSpace--
		return engine.ErrNoKVSpace
	}
	clear(f.logits)
	for i := range b.Len() {
		tok, pos, seq, logits := b.Row(i)
		if pos != len(f.kv[seq]) {
			return fmt.Errorf("fake engine: sequence %d holds %d tokens, batch row %d writes position %d", seq, len(f.kv[seq]), i, pos)
		}
		f.kv[seq] = append(f.kv[seq], fakeCell{tok, f.set})
		if logits {
			f.logits[i] = f.next(seq)
		}
	}
	f.decodes++
	f.stepSets = append(f.stepSets, f.set)
	f.rows = append(f.rows, b.Len())
	return nil
}

// next computes the logits after sequence seq's cells: one-hot on a token
// in 2..vocab-1 (0 is never produced, 1 is end-of-generation and is only
// produced when asked for by a test's vocab).
func (f *fakeEngine) next(seq int) []float32 {
	h := fnv.New64a()
	for _, c := range f.kv[seq] {
		if c.set != f.set {
			f.mixed = append(f.mixed, fmt.Sprintf("seq %d: cell under %q read under %q", seq, c.set, f.set))
		}
		fmt.Fprintf(h, "%d/%s;", c.tok, c.set)
	}
	out := make([]float32, f.vocab)
	out[2+int(h.Sum64()%uint64(f.vocab-2))] = 1
	return out
}

func (f *fakeEngine) Logits(i int) []float32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logits[i]
}

func (f *fakeEngine) SetAdapters(set []engine.AdapterRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setCalls++
	var b strings.Builder
	for _, r := range set {
		fmt.Fprintf(&b, "%p*%g ", r.Adapter, r.Scale)
	}
	f.set = b.String()
	return nil
}

func (f *fakeEngine) ParkThreads() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.parks++
	if f.closed {
		f.parkedClosed++
	}
}

func (f *fakeEngine) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *fakeEngine) stats() (decodes, setCalls int, sets []string, mixed []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.decodes, f.setCalls, slices.Clone(f.stepSets), slices.Clone(f.mixed)
}

// fakeVocab has tokens 0..n-1 that print as "<i>"; token 1 ends generation.
type fakeVocab struct{ n int }

func (v fakeVocab) VocabSize() int          { return v.n }
func (v fakeVocab) ValidToken(t int32) bool { return t >= 0 && int(t) < v.n }
func (v fakeVocab) IsEOG(t int32) bool      { return t == 1 }
func (v fakeVocab) Piece(t int32) []byte    { return fmt.Appendf(nil, "<%d>", t) }

// greedySampler takes the argmax of the fake engine's logits.
type greedySampler struct{}

func (g greedySampler) Sample(e Engine, row int) (int32, error) {
	l := e.Logits(row)
	if l == nil {
		return -1, errors.New("no logits for this row")
	}
	best := 0
	for i, x := range l {
		if x > l[best] {
			best = i
		}
	}
	return int32(best), nil
}

func (g greedySampler) Close() {}

// startFake runs a scheduler over a fake engine of cells KV cells until the
// test ends.
func startFake(t testing.TB, cells int, opts Options) (*Scheduler, *fakeEngine) {
	t.Helper()
	s, f, _ := runFake(t, cells, opts)
	return s, f
}

// runFake is startFake that also returns stop, which ends the scheduler
// and closes it (at the latest when the test ends).
func runFake(t testing.TB, cells int, opts Options) (*Scheduler, *fakeEngine, func()) {
	t.Helper()
	f := newFakeEngine()
	o := opts
	o.Cells = cells
	o = o.withDefaults(cells)
	seqCells := cells
	if o.KVLayout == KVPerSlot {
		seqCells = cells / o.Parallel
	}
	s, err := newScheduler(backend{
		engine: f, vocab: fakeVocab{f.vocab}, cells: cells, seqCells: seqCells,
		newSampler:  func(engine.SamplingParams) (Sampler, error) { return greedySampler{}, nil },
		loadAdapter: fakeLoadAdapter, close: f.close,
	}, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	stop := sync.OnceFunc(func() { cancel(); s.Close() })
	t.Cleanup(stop)
	return s, f, stop
}

// fakeAdapters are the fake engine's adapters by path, shared by all
// schedulers of a test run, so an adapter computes the same under every
// scheduler that loads it (the fake's logits hash the adapter's pointer).
var fakeAdapters sync.Map

// fakeLoadAdapter "loads" any path except one containing "broken".
func fakeLoadAdapter(path string) (*engine.Adapter, error) {
	if strings.Contains(path, "broken") {
		return nil, fmt.Errorf("load adapter %s: not a LoRA adapter", path)
	}
	a, _ := fakeAdapters.LoadOrStore(path, &engine.Adapter{})
	return a.(*engine.Adapter), nil
}

// fakePrompt is a prompt of n tokens in 2..40, different for each salt.
func fakePrompt(n, salt int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(2 + (i*7+salt*13+i*i*salt)%39)
	}
	return p
}

// fakeAlone is what each request produces on a scheduler of its own.
func fakeAlone(t *testing.T, reqs []Request) [][]int32 {
	t.Helper()
	s, _ := startFake(t, 4096, Options{Parallel: 1, NoPrefixCache: true})
	var out [][]int32
	for _, r := range reqs {
		st, err := s.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, collect(t, st).tokens[0])
	}
	return out
}

// submitAll submits every request at once and collects the results.
func submitAll(t *testing.T, s *Scheduler, reqs []Request) []result {
	t.Helper()
	out := make([]result, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		st, err := s.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { out[i] = collect(t, st) })
	}
	wg.Wait()
	return out
}

func fakeRequests(n, gen int) []Request {
	var reqs []Request
	for i := range n {
		reqs = append(reqs, Request{Prompt: fakePrompt(5+(i*11)%50, i), MaxTokens: gen, IgnoreEOS: true})
	}
	return reqs
}

func TestFakeBatchedMatchesAlone(t *testing.T) {
	reqs := fakeRequests(8, 30)
	want := fakeAlone(t, reqs)
	s, _ := startFake(t, 4096, Options{Parallel: 4, TokenBudget: 32, Chunk: 16})
	for i, r := range submitAll(t, s, reqs) {
		if !slices.Equal(r.tokens[0], want[i]) {
			t.Errorf("request %d:\n got  %v\n want %v", i, r.tokens[0], want[i])
		}
	}
}

// TestFakePreemption: sequences that outgrow the KV cache are preempted
// (by the planner, and after the engine reports no KV space) and
// recomputed, and lose nothing.
func TestFakePreemption(t *testing.T) {
	reqs := fakeRequests(4, 60)
	want := fakeAlone(t, reqs)
	for _, noSpace := range []int{0, 3} {
		t.Run(fmt.Sprintf("noSpace=%d", noSpace), func(t *testing.T) {
			s, f := startFake(t, 150, Options{Parallel: 4, CacheSlots: -1, TokenBudget: 32, Chunk: 16})
			f.mu.Lock()
			f.noSpace = noSpace
			f.mu.Unlock()
			for i, r := range submitAll(t, s, reqs) {
				if !slices.Equal(r.tokens[0], want[i]) {
					t.Errorf("request %d:\n got  %v\n want %v", i, r.tokens[0], want[i])
				}
				// A sequence the planner preempts has outgrown the KV with
				// tokens it computed, so it wastes some. (One preempted
				// after the engine's no-space error may have been in its
				// first chunk, with nothing computed yet.)
				if noSpace == 0 && r.usage.Preemptions > 0 && r.usage.WastedTokens == 0 {
					t.Errorf("request %d: %d preemptions but no wasted tokens", i, r.usage.Preemptions)
				}
			}
			if p := settled(s).Preemptions; p == 0 {
				t.Fatal("no preemption: the test did not exercise it")
			}
		})
	}
}

// TestFakeCancellation: a cancelled request ends with its context's error
// and frees its slot; the others finish untouched.
func TestFakeCancellation(t *testing.T) {
	reqs := fakeRequests(3, 200)
	want := fakeAlone(t, reqs[1:])
	s, _ := startFake(t, 4096, Options{Parallel: 3})
	ctx, cancel := context.WithCancel(context.Background())
	victim, err := s.Submit(ctx, reqs[0])
	if err != nil {
		t.Fatal(err)
	}
	var rest []*Stream
	for _, r := range reqs[1:] {
		st, err := s.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, st)
	}
	if _, err := victim.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	r := collect(t, victim)
	if len(r.errs) == 0 || !errors.Is(r.errs[len(r.errs)-1], context.Canceled) {
		t.Fatalf("cancelled stream ended with %v", r.errs)
	}
	for i, st := range rest {
		if got := collect(t, st).tokens[0]; !slices.Equal(got, want[i]) {
			t.Errorf("survivor %d:\n got  %v\n want %v", i, got, want[i])
		}
	}
	if st := settled(s); st.Cancelled != 1 || st.KV.SlotsActive != 0 {
		t.Fatalf("stats after: %+v", st)
	}
}

// TestFakeHandoff runs in a synctest bubble, so the pauses are on a fake
// clock: a consumer that keeps up is always waited for and never times
// out; one that never reads costs one pause, not one per step.
func TestFakeHandoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		req := Request{Prompt: fakePrompt(8, 1), MaxTokens: 24, IgnoreEOS: true}
		s, _ := startFake(t, 512, Options{Parallel: 2, Handoff: time.Minute})
		st, err := s.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if r := collect(t, st); len(r.tokens[0]) != 24 {
			t.Fatalf("prompt consumer got %+v", r)
		}
		if n := s.Stats().HandoffTimeouts; n != 0 || time.Since(start) != 0 {
			t.Fatalf("a consumer that keeps up: %d handoff timeouts, %v of fake time", n, time.Since(start))
		}

		slow, _ := startFake(t, 512, Options{Parallel: 2, Handoff: 20 * time.Millisecond})
		st, err = slow.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		synctest.Wait()
		for slow.Stats().GeneratedTokens < 24 || slow.Stats().Running > 0 {
			time.Sleep(time.Millisecond)
			synctest.Wait()
		}
		if n := slow.Stats().HandoffTimeouts; n != 1 {
			t.Fatalf("a consumer that never read cost %d handoff timeouts, want 1", n)
		}
		if el := time.Since(start); el < 20*time.Millisecond || el > 25*time.Millisecond {
			t.Fatalf("24 steps with an absent consumer took %v of fake time, want one 20ms pause", el)
		}
		if r := collect(t, st); len(r.tokens[0]) != 24 || r.finish[0] != FinishLength {
			t.Fatalf("late reader got %+v", r)
		}
	})
}

func adapterOptions(names ...string) map[string]AdapterSpec {
	out := map[string]AdapterSpec{}
	for _, n := range names {
		out[n] = AdapterSpec{Path: "/adapters/" + n + ".gguf"}
	}
	return out
}

// TestFakeAdaptersInterleaved: requests of four adapters and the base model
// in one scheduler each get what they get alone; no sequence reads KV
// computed under another adapter set; each step runs one adapter set, and
// the context is switched only when the set changes.
func TestFakeAdaptersInterleaved(t *testing.T) {
	names := []string{"", "a", "b", "c", "d"}
	var reqs []Request
	for i := range 15 {
		reqs = append(reqs, Request{Prompt: fakePrompt(5+(i*7)%30, i%4), MaxTokens: 25, IgnoreEOS: true, Adapter: names[i%len(names)]})
	}
	opts := Options{Parallel: 1, NoPrefixCache: true, Adapters: adapterOptions(names[1:]...)}
	var want [][]int32
	{
		s, _ := startFake(t, 4096, opts)
		for _, r := range reqs {
			st, err := s.Submit(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, collect(t, st).tokens[0])
		}
	}
	s, f := startFake(t, 4096, Options{Parallel: 8, TokenBudget: 32, Chunk: 16, Adapters: adapterOptions(names[1:]...)})
	for i, r := range submitAll(t, s, reqs) {
		if !slices.Equal(r.tokens[0], want[i]) {
			t.Errorf("request %d (adapter %q):\n got  %v\n want %v", i, reqs[i].Adapter, r.tokens[0], want[i])
		}
	}
	st := settled(s)
	decodes, setCalls, sets, mixed := f.stats()
	if len(mixed) > 0 {
		t.Fatalf("KV read across adapter sets: %v", mixed[:min(3, len(mixed))])
	}
	if int64(setCalls) != st.AdapterSwitches || st.AdapterSwitches == 0 {
		t.Fatalf("%d SetAdapters calls, %d switches counted", setCalls, st.AdapterSwitches)
	}
	switches := 0
	for i := 1; i < len(sets); i++ {
		if sets[i] != sets[i-1] {
			switches++
		}
	}
	t.Logf("%d steps, %d adapter switches, %d SetAdapters calls", decodes, switches, setCalls)
}

// TestFakeSamePromptOtherAdapter: a prompt run under adapter A and then
// under B gives B exactly what B gives alone: B reuses none of A's KV (the
// prefix cache and the leader hold-back are namespaced by adapter set),
// but reuses its own.
func TestFakeSamePromptOtherAdapter(t *testing.T) {
	prompt := fakePrompt(80, 3)
	opts := Options{Parallel: 2, Adapters: adapterOptions("a", "b")}
	alone, _ := startFake(t, 4096, opts)
	st, _ := alone.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 20, IgnoreEOS: true, Adapter: "b"})
	want := collect(t, st).tokens[0]

	s, f := startFake(t, 4096, opts)
	var got [][]int32
	var cached []int
	for _, a := range []string{"a", "b", "", "b"} {
		st, err := s.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 20, IgnoreEOS: true, Adapter: a})
		if err != nil {
			t.Fatal(err)
		}
		r := collect(t, st)
		got = append(got, r.tokens[0])
		cached = append(cached, r.usage.CachedTokens)
	}
	if !slices.Equal(got[1], want) || !slices.Equal(got[3], want) {
		t.Fatalf("b after a:\n got  %v and %v\n want %v", got[1], got[3], want)
	}
	if slices.Equal(got[0], want) || slices.Equal(got[2], want) {
		t.Fatal("a, b and the base model agree: the fake does not tell adapters apart")
	}
	if cached[0] != 0 || cached[1] != 0 || cached[2] != 0 || cached[3] == 0 {
		t.Fatalf("cached tokens %v: want none reused across adapters, and b's own reused", cached)
	}
	if _, _, _, mixed := f.stats(); len(mixed) > 0 {
		t.Fatalf("KV read across adapter sets: %v", mixed)
	}

	// Simultaneous: b's request must not be held back behind a's (it
	// could not use a's prefix), nor copy it.
	s2, f2 := startFake(t, 4096, opts)
	res := submitAll(t, s2, []Request{
		{Prompt: prompt, MaxTokens: 20, IgnoreEOS: true, Adapter: "a"},
		{Prompt: prompt, MaxTokens: 20, IgnoreEOS: true, Adapter: "b"},
	})
	if !slices.Equal(res[1].tokens[0], want) || res[1].usage.CachedTokens != 0 {
		t.Fatalf("b beside a: got %v (%d cached), want %v", res[1].tokens[0], res[1].usage.CachedTokens, want)
	}
	if _, _, _, mixed := f2.stats(); len(mixed) > 0 {
		t.Fatalf("KV read across adapter sets: %v", mixed)
	}
}

// TestFakeAdapterErrors: an unknown adapter is refused at Submit, one
// registered later is found through LookupAdapter, and one that fails to
// load fails its request only.
func TestFakeAdapterErrors(t *testing.T) {
	lookup := func(name string) (AdapterSpec, bool) {
		if name == "late" || name == "broken" {
			return AdapterSpec{Path: "/adapters/" + name + ".gguf"}, true
		}
		return AdapterSpec{}, false
	}
	s, _ := startFake(t, 1024, Options{Adapters: adapterOptions("a"), LookupAdapter: lookup})
	req := Request{Prompt: fakePrompt(10, 1), MaxTokens: 5, IgnoreEOS: true}
	if _, err := s.Submit(context.Background(), Request{Prompt: req.Prompt, Adapter: "nope"}); !isInvalid(err, "model") {
		t.Fatalf("unknown adapter: %v", err)
	}
	for _, name := range []string{"a", "late"} {
		r := req
		r.Adapter = name
		st, err := s.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, st); len(got.tokens[0]) != 5 || len(got.errs) > 0 {
			t.Fatalf("adapter %s: %+v", name, got)
		}
	}
	r := req
	r.Adapter = "broken"
	st, err := s.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, st); len(got.errs) == 0 || !strings.Contains(got.errs[0].Error(), "not a LoRA adapter") {
		t.Fatalf("broken adapter: %+v", got)
	}
}
