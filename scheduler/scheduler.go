// Package scheduler runs continuous batching over one engine context: every
// step it plans which tokens of which sequences to evaluate under a token
// budget (decode tokens first, then prompt chunks), runs the engine, samples,
// and streams each token out as soon as it exists. One goroutine (Run) owns
// the engine context, the KV cache and all sequences; other goroutines talk
// to it through Submit and the returned Stream.
//
// The loop is split by part: admission.go (Submit: validation and load
// shedding), lifecycle.go (requests and sequences from arrival to
// preemption), step.go (plan, batch, decode), output.go (sampling, events,
// handoff) and finish.go (ending choices and requests). It reaches the
// engine only through Engine, Vocab and Sampler (engine.go), so its tests
// can drive it against a fake engine.
package scheduler

import (
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/kvcache"
)

// Options configure a Scheduler. Zero fields take defaults.
type Options struct {
	// Parallel is the most sequences decoding at once (default 4).
	Parallel int
	// CacheSlots are extra sequence slots that keep finished sequences'
	// KV cells for prefix reuse (default: Parallel).
	CacheSlots int
	// Cells is the KV cache size in tokens, shared by all sequences; it is
	// also the longest context one sequence may reach (default: the
	// model's training context, at most 8192).
	Cells int
	// TokenBudget is the most tokens evaluated in one step (default 128).
	// It bounds a step's duration, so it bounds how long a new request
	// waits behind prompts already prefilling.
	TokenBudget int
	// Chunk is the most prompt tokens one sequence gets per step (chunked
	// prefill; default 64). Smaller chunks keep running streams and new
	// requests moving while long prompts prefill.
	Chunk int
	// MaxQueue bounds the requests waiting for admission (default 256).
	MaxQueue int
	// QueueTimeout is the default deadline for a first token (default 60s).
	QueueTimeout time.Duration
	// AgingAfter: a sequence waiting this long is served before fresher
	// ones regardless of priority (default 30s).
	AgingAfter time.Duration
	// NoPrefixCache disables prefix reuse.
	NoPrefixCache bool
	// KVLayout is "unified" (default) or "per-slot". Unified: one pool of
	// Cells shared by all sequences; a prefix is shared by every sequence
	// that starts with it, and one sequence may use the whole context; but
	// every decode's attention scans all used cells, so throughput falls as
	// sequences multiply. Per-slot: each of the Parallel sequences has a KV
	// stream of its own of Cells/Parallel cells (llama.cpp's default
	// layout): attention scans only the sequence's own cells, a finished
	// prompt stays in its slot for the next request that shares its prefix,
	// and CacheSlots is ignored.
	KVLayout string
	// Threads for the engine (default: all CPUs).
	Threads int
	// FlashAttention: auto, on or off (default auto).
	FlashAttention string
	// KVType: f16, q8_0 or q4_0 (default f16).
	KVType string
	// Handoff is how long, after a step, the scheduler waits for the
	// consumers of that step's events to take them before it starts the
	// next step (default 1ms; negative: never wait). On CPU the engine's
	// threads occupy every core during a step; the pause lets the HTTP
	// layer write the step's tokens on idle cores instead of competing
	// with them. A consumer that misses it is not waited for again until
	// it catches up, so a slow client costs one pause at most.
	Handoff time.Duration
	// Steps, when set, is shared by the schedulers of one process: each
	// engine evaluation holds it, so on a CPU several loaded models take
	// turns at whole steps instead of running their thread pools against
	// each other on the same cores.
	Steps *StepGate
	// Adapters are the LoRA adapters requests may name (Request.Adapter),
	// by name. Each is loaded on first use, once. LookupAdapter, when set,
	// finds adapters not in the map (registered after the scheduler
	// started). A scheduler with either serves adapters: its context runs
	// with graph reuse off (llama.cpp would reuse a graph built for another
	// adapter set); a scheduler with neither keeps graph reuse.
	Adapters      map[string]AdapterSpec
	LookupAdapter func(name string) (AdapterSpec, bool)
	Logger        *slog.Logger
}

// StepGate lets one engine step run at a time across the schedulers that
// share it. Waiting schedulers get it in the order they asked (a Go
// channel queues blocked senders first in, first out), so busy models
// share the engine evenly.
//
// When the turn passes to another engine, the gate parks the previous
// one's threads: ggml's idle workers otherwise poll for their next step
// for milliseconds, on the cores the other model's step is computing on.
type StepGate struct {
	ch   chan struct{}
	last threadParker // the engine that last held the gate; read and written only while holding it
}

// threadParker is an engine whose idle CPU threads can be put to sleep
// until its next Decode (*engine.Context implements it).
type threadParker interface{ ParkThreads() }

// NewStepGate returns an open gate.
func NewStepGate() *StepGate { return &StepGate{ch: make(chan struct{}, 1)} }

// acquire takes the gate for engine e (nil: one whose threads cannot be
// parked), parking the threads of the engine that held it before if that
// was another.
func (g *StepGate) acquire(e threadParker) {
	g.ch <- struct{}{}
	if g.last != nil && g.last != e {
		g.last.ParkThreads()
	}
	g.last = e
}

func (g *StepGate) release() { <-g.ch }

// forget drops e before its threads are freed, so that the gate never
// parks a closed engine.
func (g *StepGate) forget(e threadParker) {
	g.ch <- struct{}{}
	if g.last == e {
		g.last = nil
	}
	<-g.ch
}

// KV layouts.
const (
	KVUnified = "unified"
	KVPerSlot = "per-slot"
)

func (o Options) withDefaults(trainContext int) Options {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.KVLayout == "" {
		o.KVLayout = KVUnified
	}
	if o.KVLayout == KVPerSlot {
		o.CacheSlots = -1 // finished prompts stay in their own slots
	}
	if o.CacheSlots < 0 {
		o.CacheSlots = 0
	} else if o.CacheSlots == 0 {
		o.CacheSlots = o.Parallel
	}
	if o.Cells <= 0 {
		o.Cells = min(trainContext, 8192)
	}
	if o.TokenBudget <= 0 {
		o.TokenBudget = 128
	}
	if o.Chunk <= 0 {
		o.Chunk = 64
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 256
	}
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = time.Minute
	}
	if o.AgingAfter <= 0 {
		o.AgingAfter = 30 * time.Second
	}
	if o.Handoff == 0 {
		o.Handoff = time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Scheduler batches many requests over one model's engine context.
type Scheduler struct {
	model    *engine.Model // nil when running on a fake engine
	vocab    Vocab
	opts     Options
	seqCells int // the longest a sequence may grow (prompt and output)

	submit chan *request
	wake   chan struct{} // 1-slot: something changed (a cancel, a submit)
	done   chan struct{} // closed when Run returns
	closed atomic.Bool

	// Shared with Submit (read) and the loop (written).
	waitingN     atomic.Int64 // requests submitted but not yet admitted
	queuedTokens atomic.Int64 // prompt tokens not yet evaluated
	prefillRate  atomicFloat  // prompt tokens per second, EWMA
	statsMu      sync.Mutex   // guards stats
	stats        Stats
	recentMu     sync.Mutex     // guards recent
	recent       []recentPrompt // the last prompts submitted, for predicting prefix reuse

	// Owned by the Run goroutine.
	be       backend
	ctx      Engine
	batch    *engine.Batch
	cache    *kvcache.Cache
	seqs     map[int]*seq
	reqs     map[*request]struct{}
	nextID   int
	arrivals uint64
	counters Stats
	touched  map[*Stream]struct{} // streams that got events this step
	handoffT *time.Timer
	split    splitter     // runs a few single-token rows one at a time when that is faster
	parker   threadParker // the engine, when the step gate can park its threads (else nil)
	// Adapter groups: group 0 is the base model; each loaded adapter has
	// a group of its own, which is also its KV namespace.
	adapters  map[string]*adapterGroup
	groupSets map[int][]engine.AdapterRef
	nextGroup int
	curGroup  int            // the group whose adapter set the context has
	groupLast map[int]uint64 // groups with work: the step each last ran (or got work)
	groupSeen map[int]bool   // scratch for trackGroups
}

// Stats describe the scheduler at its last step.
type Stats struct {
	Running          int           `json:"running"`
	Waiting          int           `json:"waiting"`
	Steps            int64         `json:"steps"`
	PromptTokens     int64         `json:"prompt_tokens"`
	GeneratedTokens  int64         `json:"generated_tokens"`
	Preemptions      int64         `json:"preemptions"`
	Rejected         int64         `json:"rejected"`
	Cancelled        int64         `json:"cancelled"`
	HandoffTimeouts  int64         `json:"handoff_timeouts"`   // steps that stopped waiting for a consumer
	AdapterSwitches  int64         `json:"adapter_switches"`   // steps that changed the context's adapter set
	Adapters         []string      `json:"adapters,omitempty"` // adapters loaded on the model, sorted (never modified: replaced on change)
	PrefillTokensSec float64       `json:"prefill_tokens_per_second"`
	KV               kvcache.Stats `json:"kv"`
}

// New creates a scheduler and its engine context for m. The caller starts
// Run and, after Run returns, calls Close.
func New(m *engine.Model, opts Options) (*Scheduler, error) {
	o := opts.withDefaults(m.TrainContext())
	if err := o.check(); err != nil {
		return nil, err
	}
	ctx, err := m.NewContext(engine.ContextOptions{
		Cells: o.Cells, Sequences: o.Parallel + o.CacheSlots, Batch: o.TokenBudget, Threads: o.Threads,
		FlashAttention: o.FlashAttention, KVType: o.KVType, PerSequenceKV: o.KVLayout == KVPerSlot,
		LoRA: o.adaptersEnabled(),
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s, err := newScheduler(backend{
		engine: ctx, vocab: m, cells: ctx.Options().Cells, seqCells: ctx.SeqCells(),
		newSampler: func(p engine.SamplingParams) (Sampler, error) {
			sm, err := engine.NewSampler(m, p)
			if err != nil {
				return nil, err
			}
			return engineSampler{sm}, nil
		},
		loadAdapter:   m.LoadAdapter,
		unloadAdapter: (*engine.Adapter).Unload,
		close:         ctx.Close,
	}, o)
	if err != nil {
		ctx.Close()
		return nil, err
	}
	s.model = m
	return s, nil
}

func (o Options) check() error {
	if o.KVLayout != KVUnified && o.KVLayout != KVPerSlot {
		return fmt.Errorf("scheduler: KV layout %q: want %s or %s", o.KVLayout, KVUnified, KVPerSlot)
	}
	return nil
}

// newScheduler builds a scheduler over a backend (a real engine context or
// a test's fake); o has its defaults filled in.
func newScheduler(be backend, o Options) (*Scheduler, error) {
	o.Cells = be.cells
	perSlot := o.KVLayout == KVPerSlot
	slots := o.Parallel + o.CacheSlots
	b, err := engine.NewBatch(o.TokenBudget, 1)
	if err != nil {
		return nil, err
	}
	cache, err := kvcache.New(be.engine, kvcache.Options{Slots: slots, Cells: o.Cells, NoPrefixReuse: o.NoPrefixCache, PerSlot: perSlot})
	if err != nil {
		b.Close()
		return nil, err
	}
	parker, _ := be.engine.(threadParker)
	return &Scheduler{
		vocab: be.vocab, opts: o, be: be, ctx: be.engine, batch: b, cache: cache, seqCells: be.seqCells, parker: parker,
		submit:    make(chan *request, o.MaxQueue),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		seqs:      map[int]*seq{},
		reqs:      map[*request]struct{}{},
		touched:   map[*Stream]struct{}{},
		adapters:  map[string]*adapterGroup{},
		groupSets: map[int][]engine.AdapterRef{},
		groupLast: map[int]uint64{},
		groupSeen: map[int]bool{},
	}, nil
}

// Model is the model this scheduler runs (nil on a test's fake engine).
func (s *Scheduler) Model() *engine.Model { return s.model }

// Options are the options in effect.
func (s *Scheduler) Options() Options { return s.opts }

// SeqContext is the most tokens (prompt and output) one sequence can hold:
// all Cells with the unified KV layout, Cells/Parallel per slot.
func (s *Scheduler) SeqContext() int { return s.seqCells }

// Close frees the engine context. Call it after Run has returned.
func (s *Scheduler) Close() {
	<-s.done
	s.batch.Close()
	if s.opts.Steps != nil && s.parker != nil {
		s.opts.Steps.forget(s.parker) // before the engine's threads are freed
	}
	if s.be.close != nil {
		s.be.close()
	}
	if s.be.unloadAdapter != nil {
		for _, g := range s.adapters {
			for _, r := range g.set {
				s.be.unloadAdapter(r.Adapter)
			}
		}
	}
}

// Stats returns the counters as of the last step.
func (s *Scheduler) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) publish() {
	running, waiting := 0, 0
	for _, q := range s.seqs {
		if q.lease != nil {
			running++
		} else {
			waiting++
		}
	}
	st := s.counters
	st.Running, st.Waiting = running, waiting
	st.KV = s.cache.Stats()
	st.PrefillTokensSec = s.prefillRate.Load()
	s.statsMu.Lock()
	st.Rejected = s.stats.Rejected
	s.stats = st
	s.statsMu.Unlock()
}

// recentPrompt is a submitted prompt and its adapter.
type recentPrompt struct {
	adapter string
	tokens  []int32
}

// atomicFloat is a float64 updated by one goroutine and read by many.
type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) Load() float64 { return math.Float64frombits(f.bits.Load()) }

func (f *atomicFloat) ewma(x, alpha float64) {
	old := f.Load()
	if old == 0 {
		f.bits.Store(math.Float64bits(x))
		return
	}
	f.bits.Store(math.Float64bits(old + alpha*(x-old)))
}
