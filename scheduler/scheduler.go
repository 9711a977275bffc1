// Package scheduler runs continuous batching over one engine context: every
// step it plans which tokens of which sequences to evaluate under a token
// budget (decode tokens first, then prompt chunks), runs the engine, samples,
// and streams each token out as soon as it exists. One goroutine (Run) owns
// the engine context, the KV cache and all sequences; other goroutines talk
// to it through Submit and the returned Stream.
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
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
	Steps  *StepGate
	Logger *slog.Logger
}

// StepGate lets one engine step run at a time across the schedulers that
// share it. Waiting schedulers get it in the order they asked (a Go
// channel queues blocked senders first in, first out), so busy models
// share the engine evenly.
type StepGate struct{ ch chan struct{} }

// NewStepGate returns an open gate.
func NewStepGate() *StepGate { return &StepGate{ch: make(chan struct{}, 1)} }

func (g *StepGate) acquire() { g.ch <- struct{}{} }
func (g *StepGate) release() { <-g.ch }

// KV layouts.
const (
	KVUnified = "unified"
	KVPerSlot = "per-slot"
)

func (o Options) withDefaults(m *engine.Model) Options {
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
		o.Cells = min(m.TrainContext(), 8192)
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
	model    *engine.Model
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
	recentMu     sync.Mutex // guards recent
	recent       [][]int32  // the last prompts submitted, for predicting prefix reuse

	// Owned by the Run goroutine.
	ctx      *engine.Context
	batch    *engine.Batch
	cache    *kvcache.Cache
	seqs     map[int]*seq
	reqs     map[*request]struct{}
	nextID   int
	arrivals uint64
	counters Stats
	touched  map[*Stream]struct{} // streams that got events this step
	handoffT *time.Timer
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
	HandoffTimeouts  int64         `json:"handoff_timeouts"` // steps that stopped waiting for a consumer
	PrefillTokensSec float64       `json:"prefill_tokens_per_second"`
	KV               kvcache.Stats `json:"kv"`
}

// New creates a scheduler and its engine context for m. The caller starts
// Run and, after Run returns, calls Close.
func New(m *engine.Model, opts Options) (*Scheduler, error) {
	o := opts.withDefaults(m)
	if o.KVLayout != KVUnified && o.KVLayout != KVPerSlot {
		return nil, fmt.Errorf("scheduler: KV layout %q: want %s or %s", o.KVLayout, KVUnified, KVPerSlot)
	}
	perSlot := o.KVLayout == KVPerSlot
	slots := o.Parallel + o.CacheSlots
	ctx, err := m.NewContext(engine.ContextOptions{
		Cells: o.Cells, Sequences: slots, Batch: o.TokenBudget, Threads: o.Threads,
		FlashAttention: o.FlashAttention, KVType: o.KVType, PerSequenceKV: perSlot,
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	o.Cells = ctx.Options().Cells
	seqCells := ctx.SeqCells()
	b, err := engine.NewBatch(o.TokenBudget, 1)
	if err != nil {
		ctx.Close()
		return nil, err
	}
	cache, err := kvcache.New(ctx, kvcache.Options{Slots: slots, Cells: o.Cells, NoPrefixReuse: o.NoPrefixCache, PerSlot: perSlot})
	if err != nil {
		b.Close()
		ctx.Close()
		return nil, err
	}
	return &Scheduler{
		model: m, opts: o, ctx: ctx, batch: b, cache: cache, seqCells: seqCells,
		submit:  make(chan *request, o.MaxQueue),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		seqs:    map[int]*seq{},
		reqs:    map[*request]struct{}{},
		touched: map[*Stream]struct{}{},
	}, nil
}

// Model is the model this scheduler runs.
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
	s.ctx.Close()
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

// request is a submitted Request with its stream and sequences.
type request struct {
	Request
	ctx        context.Context
	stream     *Stream
	stopCancel func() bool
	seqs       []*seq // seqs[0] prefills the prompt; the rest fork from it
	samplers   []*engine.Sampler
	forked     bool
	finished   int
	arrival    uint64
	arrived    time.Time
	deadline   time.Time
	queued     int64 // its share of queuedTokens until its first token
	scheduled  time.Time
	firstToken time.Time
	usage      Usage
}

// seq is one choice of a request.
type seq struct {
	id        int
	req       *request
	index     int
	tokens    []int32 // prompt, then generated tokens
	computed  int     // tokens in the KV cache
	generated int
	lease     *kvcache.Lease
	sampler   *engine.Sampler
	detok     engine.Detokenizer
	stop      stopMatcher
	row       int // batch row with this seq's logits in the current step, or -1
	done      bool
}

func (q *seq) pending() int { return len(q.tokens) - q.computed }

// Submit queues a request. It returns at once: an *InvalidRequestError for
// a request that can never run, an *OverloadError when the queue is full or
// the predicted wait exceeds the deadline, or a Stream of events. Cancelling
// ctx (or Stream.Close) abandons the request.
func (s *Scheduler) Submit(ctx context.Context, r Request) (*Stream, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.validate(&r); err != nil {
		return nil, err
	}
	samplers := make([]*engine.Sampler, r.N)
	for i := range samplers {
		p := r.Sampling
		p.Seed += uint32(i) // independent choices
		sm, err := engine.NewSampler(s.model, p)
		if err != nil {
			closeAll(samplers[:i])
			return nil, invalid("sampling", "%v", err)
		}
		samplers[i] = sm
	}
	now := time.Now()
	deadline := r.Deadline
	if deadline.IsZero() {
		deadline = now.Add(s.opts.QueueTimeout)
	}
	// Admission by tokens and time: predict the wait from the prompt tokens
	// queued ahead (less what the prefix cache is expected to supply) and
	// the measured prefill rate.
	cost := s.expectedPrefill(r.Prompt)
	ahead := s.queuedTokens.Load()
	if rate := s.prefillRate.Load(); rate > 0 {
		wait := time.Duration(float64(ahead+cost) / rate * float64(time.Second))
		if now.Add(wait).After(deadline) {
			closeAll(samplers)
			s.reject()
			return nil, &OverloadError{Reason: fmt.Sprintf("predicted time to first token %v exceeds the deadline", wait.Round(time.Millisecond)), RetryAfter: max(time.Second, wait-deadline.Sub(now))}
		}
	}
	if s.waitingN.Load() >= int64(s.opts.MaxQueue) {
		closeAll(samplers)
		s.reject()
		return nil, &OverloadError{Reason: fmt.Sprintf("queue is full (%d requests)", s.opts.MaxQueue), RetryAfter: s.drainTime(ahead)}
	}
	rctx, cancel := context.WithCancel(ctx)
	req := &request{Request: r, ctx: rctx, stream: newStream(cancel), samplers: samplers, arrived: now, deadline: deadline, queued: cost}
	req.stopCancel = context.AfterFunc(rctx, s.poke)
	s.waitingN.Add(1)
	s.queuedTokens.Add(cost)
	select {
	case s.submit <- req:
	default:
		s.waitingN.Add(-1)
		s.queuedTokens.Add(-cost)
		req.stopCancel()
		cancel()
		closeAll(samplers)
		s.reject()
		return nil, &OverloadError{Reason: "queue is full", RetryAfter: s.drainTime(ahead)}
	}
	if s.closed.Load() {
		// Run may have exited between the check above and the send; it
		// drains the channel on exit, but make sure it notices.
		s.poke()
	}
	return req.stream, nil
}

// recentPrompts is how many submitted prompts expectedPrefill compares with.
const recentPrompts = 16

// expectedPrefill predicts how many of prompt's tokens will need computing:
// all of them, less a prefix of at least minSharedPrefix tokens shared with
// a recently submitted prompt (the prefix cache will supply it). It is a
// prediction for admission only; the cache itself decides at admission.
func (s *Scheduler) expectedPrefill(prompt []int32) int64 {
	s.recentMu.Lock()
	defer s.recentMu.Unlock()
	best := 0
	for _, p := range s.recent {
		n := 0
		for n < len(p) && n < len(prompt)-1 && p[n] == prompt[n] {
			n++
		}
		best = max(best, n)
	}
	if len(s.recent) == recentPrompts {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:recentPrompts-1]
	}
	s.recent = append(s.recent, prompt)
	if best < minSharedPrefix || !s.sharesPrefixes() {
		best = 0
	}
	return int64(len(prompt) - best)
}

func closeAll(samplers []*engine.Sampler) {
	for _, x := range samplers {
		x.Close()
	}
}

func (s *Scheduler) reject() {
	s.statsMu.Lock()
	s.stats.Rejected++
	s.statsMu.Unlock()
}

func (s *Scheduler) drainTime(tokens int64) time.Duration {
	if rate := s.prefillRate.Load(); rate > 0 {
		return max(time.Second, time.Duration(float64(tokens)/rate*float64(time.Second)))
	}
	return time.Second
}

func (s *Scheduler) validate(r *Request) error {
	if r.N == 0 {
		r.N = 1
	}
	switch {
	case len(r.Prompt) == 0:
		return invalid("prompt", "the prompt is empty")
	case len(r.Prompt) >= s.seqCells:
		return &InvalidRequestError{Param: "prompt", Code: "context_length_exceeded", Message: fmt.Sprintf("the prompt has %d tokens, but this model's context holds %d (the prompt and at least one generated token must fit)", len(r.Prompt), s.seqCells)}
	case r.N < 1 || r.N > s.opts.Parallel:
		return invalid("n", "n must be between 1 and %d, got %d", s.opts.Parallel, r.N)
	case r.MaxTokens < 0:
		return invalid("max_tokens", "max_tokens must not be negative, got %d", r.MaxTokens)
	case r.TopLogprobs < 0 || r.TopLogprobs > 20:
		return invalid("top_logprobs", "top_logprobs must be between 0 and 20, got %d", r.TopLogprobs)
	}
	for i, t := range r.Prompt {
		if !s.model.ValidToken(t) {
			return invalid("prompt", "prompt token %d at index %d is not in the vocabulary (0..%d)", t, i, s.model.VocabSize()-1)
		}
	}
	for _, st := range r.Stop {
		if st == "" {
			return invalid("stop", "stop strings must not be empty")
		}
	}
	return nil
}

// Run is the scheduler loop. It returns when ctx ends, after failing every
// request still queued or running.
func (s *Scheduler) Run(ctx context.Context) error {
	defer close(s.done)
	defer s.shutdown()
	for {
		s.drainSubmit()
		s.reap()
		if !s.hasWork() {
			s.publish()
			clear(s.touched) // events of failures and cancellations: nobody to wait for
			select {
			case r := <-s.submit:
				s.add(r)
			case <-s.wake:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		s.step()
	}
}

func (s *Scheduler) shutdown() {
	s.closed.Store(true)
	s.drainSubmit()
	for r := range s.reqs {
		s.fail(r, FinishError, ErrClosed)
	}
}

func (s *Scheduler) drainSubmit() {
	for {
		select {
		case r := <-s.submit:
			s.add(r)
		default:
			return
		}
	}
}

func (s *Scheduler) add(r *request) {
	s.arrivals++
	r.arrival = s.arrivals
	q := s.newSeq(r, 0, append([]int32(nil), r.Prompt...))
	r.seqs = []*seq{q}
	s.reqs[r] = struct{}{}
	s.counters.PromptTokens += int64(len(r.Prompt))
}

func (s *Scheduler) newSeq(r *request, index int, tokens []int32) *seq {
	s.nextID++
	q := &seq{id: s.nextID, req: r, index: index, tokens: tokens, sampler: r.samplers[index], row: -1}
	q.stop.stops = r.Stop
	s.seqs[q.id] = q
	return q
}

func (s *Scheduler) hasWork() bool { return len(s.seqs) > 0 }

// reap drops cancelled requests and requests that waited past their
// deadline without being scheduled.
func (s *Scheduler) reap() {
	now := time.Now()
	for r := range s.reqs {
		switch {
		case r.ctx.Err() != nil:
			s.counters.Cancelled++
			s.fail(r, FinishCancelled, r.ctx.Err())
		case r.scheduled.IsZero() && now.After(r.deadline):
			s.fail(r, FinishError, &OverloadError{Reason: "request waited in the queue past its deadline", RetryAfter: s.drainTime(s.queuedTokens.Load())})
		}
	}
}

// fail ends every unfinished choice of r with reason and err.
func (s *Scheduler) fail(r *request, reason FinishReason, err error) {
	for _, q := range r.seqs {
		if !q.done {
			r.usage.WastedTokens += q.computed
			s.finish(q, reason, err, false)
		}
	}
	if !r.forked && r.N > 1 {
		// Choices that never forked end too.
		for i := len(r.seqs); i < r.N; i++ {
			s.endChoice(r, i, reason, err)
		}
		r.forked = true
	}
	s.maybeComplete(r)
}

// minSharedPrefix is the shortest common prefix worth waiting for.
const minSharedPrefix = 32

// followsLeader reports whether waiting sequence w shares a prompt prefix
// of at least minSharedPrefix tokens with a leader (a running sequence, or
// an earlier waiting one) that has not computed that prefix yet. Admitting
// w now would compute the prefix twice; held back until the leader has it,
// w copies it from the prefix cache instead.
func followsLeader(w *seq, leaders []*seq) bool {
	for _, q := range leaders {
		// Only whether the common prefix reaches past both minSharedPrefix
		// and what q has computed matters, so the comparison stops there:
		// against waiting leaders it reads at most minSharedPrefix tokens.
		limit := min(len(w.tokens), len(q.tokens), max(minSharedPrefix, q.computed+1))
		n := 0
		for n < limit && w.tokens[n] == q.tokens[n] {
			n++
		}
		if n >= minSharedPrefix && q.computed < min(n, len(w.tokens)-1) {
			return true
		}
	}
	return false
}

// sharesPrefixes reports whether a sequence can start from another running
// sequence's prefix cells: with the prefix cache on, in the unified layout.
// Per slot, a prefix is reused only from a finished prompt left in a slot,
// so holding a request back behind a running one would only delay it.
func (s *Scheduler) sharesPrefixes() bool {
	return !s.opts.NoPrefixCache && s.opts.KVLayout == KVUnified
}

// views builds the planner's input, leaving out waiting sequences that
// should follow a leader's prefix.
func (s *Scheduler) views(now time.Time) ([]SeqView, int) {
	views := make([]SeqView, 0, len(s.seqs))
	used := 0
	var leaders, waiting []*seq
	for _, q := range s.seqs {
		switch {
		case q.lease == nil:
			waiting = append(waiting, q)
		case q.pending() > 1:
			leaders = append(leaders, q)
		}
	}
	hold := map[*seq]bool{}
	if s.sharesPrefixes() && (len(waiting) > 1 || len(leaders) > 0) {
		slices.SortFunc(waiting, func(a, b *seq) int { return cmp.Compare(a.id, b.id) })
		for _, w := range waiting {
			if followsLeader(w, leaders) {
				hold[w] = true
			} else {
				leaders = append(leaders, w)
			}
		}
	}
	for _, q := range s.seqs {
		if hold[q] {
			continue
		}
		slots := 1
		if q.lease != nil {
			used++
			if q.index == 0 && !q.req.forked {
				used += q.req.N - 1 // reserved for the forks
			}
		} else if q.index == 0 && !q.req.forked {
			slots = q.req.N
		}
		views = append(views, SeqView{
			ID: q.id, Priority: q.req.Priority, Arrival: q.req.arrival, Waited: now.Sub(q.req.arrived),
			Running: q.lease != nil, Pending: q.pending(), Slots: slots,
		})
	}
	return views, used
}

// step plans, evaluates and samples once.
func (s *Scheduler) step() {
	now := time.Now()
	var plan Plan
	for {
		views, used := s.views(now)
		plan = Schedule(views, Limits{
			TokenBudget: s.opts.TokenBudget, Chunk: s.opts.Chunk, AgingAfter: s.opts.AgingAfter,
			FreeSlots: s.opts.Parallel - used, FreeCells: s.freeCells(),
		})
		if !plan.HasPreempt {
			break
		}
		s.preempt(s.seqs[plan.Preempt])
	}
	if len(plan.Items) == 0 {
		// Nothing fits: wait for a change rather than spin.
		s.publish()
		select {
		case r := <-s.submit:
			s.add(r)
		case <-s.wake:
		case <-time.After(50 * time.Millisecond):
		}
		return
	}
	// Admit, then make room in the KV cache for this step's tokens.
	type work struct {
		q    *seq
		from int
		n    int
	}
	items := make([]work, 0, len(plan.Items))
	total := 0
	for _, it := range plan.Items {
		q := s.seqs[it.ID]
		if it.Admit {
			lease, err := s.cache.Acquire(q.tokens)
			if err != nil {
				// The planner counted the slots; this is a bug, but one that
				// must not take the server down.
				s.opts.Logger.Error("scheduler: acquire failed", "err", err)
				continue
			}
			q.lease, q.computed = lease, lease.Reused
			if q.index == 0 && q.generated == 0 {
				q.req.usage.CachedTokens = lease.Reused
			}
			if q.req.scheduled.IsZero() {
				q.req.scheduled = now
				s.waitingN.Add(-1)
			}
		}
		n := min(it.Tokens, q.pending())
		if n <= 0 {
			continue
		}
		items = append(items, work{q, q.computed, n})
		total += n
	}
	if !s.cache.EvictFor(total) {
		s.opts.Logger.Debug("scheduler: KV cache short of cells; decode may preempt", "need", total, "free", s.cache.Free())
	}
	s.batch.Clear()
	for i := range items {
		w := &items[i]
		w.q.row = -1
		for j := 0; j < w.n; j++ {
			pos := w.from + j
			last := pos == len(w.q.tokens)-1
			row := s.batch.Add(w.q.tokens[pos], pos, last, w.q.lease.Slot)
			if last {
				w.q.row = row
			}
		}
	}
	if g := s.opts.Steps; g != nil {
		g.acquire()
	}
	start := time.Now()
	err := s.ctx.Decode(s.batch)
	elapsed := time.Since(start)
	if g := s.opts.Steps; g != nil {
		g.release()
	}
	if errors.Is(err, engine.ErrNoKVSpace) {
		// Fragmented or short: preempt the least urgent running sequence
		// and plan again.
		if v := s.leastUrgentRunning(); v != nil {
			s.preempt(v)
		}
		return
	}
	if err != nil {
		s.opts.Logger.Error("scheduler: decode failed", "err", err)
		for _, w := range items {
			s.fail(w.q.req, FinishError, fmt.Errorf("engine decode failed: %w", err))
		}
		return
	}
	s.counters.Steps++
	prompt := 0
	for _, w := range items {
		w.q.lease.Append(w.q.tokens[w.from : w.from+w.n]...)
		w.q.computed += w.n
		if w.q.generated == 0 {
			prompt += w.n
		}
	}
	if prompt >= 32 {
		s.prefillRate.ewma(float64(total)/elapsed.Seconds(), 0.3)
	}
	for _, w := range items {
		if w.q.row >= 0 && !w.q.done {
			s.sample(w.q)
		}
	}
	s.publish()
	s.handOff()
}

// freeCells is what the planner may spend: the shared pool's free and
// reclaimable cells. Per slot, a sequence never competes for cells (its
// length is capped at its stream), so only slots bound admission.
func (s *Scheduler) freeCells() int {
	if s.opts.KVLayout == KVPerSlot {
		return math.MaxInt32
	}
	return s.cache.Free() + s.cache.Reclaimable()
}

// emit queues an event for a request's consumer.
func (s *Scheduler) emit(st *Stream, ev Event) {
	st.push(ev)
	s.touched[st] = struct{}{}
}

// handOff waits (up to Options.Handoff) for the consumers of this step's
// events to take them.
func (s *Scheduler) handOff() {
	if s.opts.Handoff < 0 || len(s.touched) == 0 {
		clear(s.touched)
		return
	}
	h := newHandoff()
	for st := range s.touched {
		st.awaitTake(h)
	}
	clear(s.touched)
	h.take()
	if s.handoffT == nil {
		s.handoffT = time.NewTimer(s.opts.Handoff)
	} else {
		s.handoffT.Reset(s.opts.Handoff)
	}
	select {
	case <-h.done:
		s.handoffT.Stop()
	case <-s.handoffT.C:
		s.counters.HandoffTimeouts++
	}
}

// sample draws the next token of q (and, when q has just finished the
// prompt of an n > 1 request, of its forks too).
func (s *Scheduler) sample(q *seq) {
	r := q.req
	targets := []*seq{q}
	if q.index == 0 && !r.forked && r.N > 1 {
		r.forked = true
		for i := 1; i < r.N; i++ {
			lease, err := q.lease.Fork(q.computed)
			if err != nil {
				s.endChoice(r, i, FinishError, fmt.Errorf("no slot for choice %d: %w", i, err))
				continue
			}
			f := s.newSeq(r, i, append([]int32(nil), q.tokens...))
			f.lease, f.computed, f.row = lease, q.computed, q.row
			r.seqs = append(r.seqs, f)
			targets = append(targets, f)
		}
	}
	now := time.Now()
	if r.firstToken.IsZero() {
		r.firstToken = now
		s.queuedTokens.Add(-r.queued)
	}
	for _, t := range targets {
		s.sampleOne(t)
	}
}

func (s *Scheduler) sampleOne(q *seq) {
	r := q.req
	var logits []float32
	if r.Logprobs || r.TopLogprobs > 0 {
		logits = s.ctx.Logits(q.row)
	}
	tok, err := q.sampler.Sample(s.ctx, q.row)
	if err != nil {
		s.finish(q, FinishError, fmt.Errorf("sampling: %w", err), true)
		s.maybeComplete(r)
		return
	}
	s.counters.GeneratedTokens++
	if s.model.IsEOG(tok) && !r.IgnoreEOS {
		s.flushText(q, FinishStop)
		s.maybeComplete(r)
		return
	}
	q.tokens = append(q.tokens, tok)
	q.generated++
	r.usage.CompletionTokens++
	info := TokenInfo{ID: tok, Piece: s.model.Piece(tok)}
	if logits != nil {
		info.Logprob, info.Top = engine.LogProbs(logits, tok, r.TopLogprobs)
	}
	text := string(q.detok.Add(nil, info.Piece))
	out, hit := q.stop.push(text)
	ev := Event{Index: q.index, Text: out, Tokens: []TokenInfo{info}}
	switch {
	case hit:
		ev.Finish = FinishStop
	case (r.MaxTokens > 0 && q.generated >= r.MaxTokens) || len(q.tokens) >= s.seqCells:
		tail, stopped := q.stop.push(string(q.detok.Flush(nil)))
		if !stopped {
			tail += q.stop.flush()
		}
		ev.Text += tail
		ev.Finish = FinishLength
		if stopped {
			ev.Finish = FinishStop
		}
	}
	s.emit(r.stream, ev)
	if ev.Finish != "" {
		s.finish(q, ev.Finish, nil, true)
		s.maybeComplete(r)
	}
}

// flushText ends q, emitting whatever text is still held back (short of a
// stop string).
func (s *Scheduler) flushText(q *seq, reason FinishReason) {
	text, stopped := q.stop.push(string(q.detok.Flush(nil)))
	if !stopped {
		text += q.stop.flush()
	}
	s.emit(q.req.stream, Event{Index: q.index, Text: text, Finish: reason})
	s.finish(q, reason, nil, true)
}

// finish marks q done and frees its slot. keep caches its KV cells.
func (s *Scheduler) finish(q *seq, reason FinishReason, err error, keep bool) {
	if q.done {
		return
	}
	q.done = true
	if q.lease != nil {
		q.lease.Release(keep)
		q.lease = nil
	} else if q.req.scheduled.IsZero() && q.index == 0 {
		s.waitingN.Add(-1)
	}
	if q.req.firstToken.IsZero() && q.index == 0 {
		s.queuedTokens.Add(-q.req.queued)
	}
	delete(s.seqs, q.id)
	q.req.finished++
	if reason == FinishCancelled || reason == FinishError {
		s.emit(q.req.stream, Event{Index: q.index, Finish: reason, Err: err})
	}
}

// endChoice ends a choice that never got a sequence of its own.
func (s *Scheduler) endChoice(r *request, index int, reason FinishReason, err error) {
	s.emit(r.stream, Event{Index: index, Finish: reason, Err: err})
	r.finished++
}

// maybeComplete sends the final event once every choice of r has ended.
func (s *Scheduler) maybeComplete(r *request) {
	if r.finished < r.N || (r.N > 1 && !r.forked) {
		return
	}
	if _, ok := s.reqs[r]; !ok {
		return
	}
	delete(s.reqs, r)
	r.stopCancel()
	closeAll(r.samplers)
	end := time.Now()
	u := r.usage
	u.PromptTokens = len(r.Prompt)
	if !r.scheduled.IsZero() {
		u.Timings.Queued = r.scheduled.Sub(r.arrived)
		if !r.firstToken.IsZero() {
			u.Timings.Prefill = r.firstToken.Sub(r.scheduled)
			u.Timings.Decode = end.Sub(r.firstToken)
			u.Timings.TTFT = r.firstToken.Sub(r.arrived)
		}
	} else {
		u.Timings.Queued = end.Sub(r.arrived)
	}
	var err error
	if r.ctx.Err() != nil {
		err = r.ctx.Err()
	}
	s.emit(r.stream, Event{Final: true, Usage: &u, Err: err})
}

// preempt frees q's KV slot and queues it for recomputation. Its output so
// far stays; it resumes where it stopped.
func (s *Scheduler) preempt(q *seq) {
	s.counters.Preemptions++
	q.req.usage.Preemptions++
	q.req.usage.WastedTokens += q.computed
	q.lease.Release(true) // its cells stay cached unless space is needed
	q.lease = nil
	q.computed = 0
	s.opts.Logger.Debug("scheduler: preempted", "request", q.req.ID, "choice", q.index, "tokens", len(q.tokens))
}

func (s *Scheduler) leastUrgentRunning() *seq {
	var v *seq
	for _, q := range s.seqs {
		if q.lease == nil {
			continue
		}
		if v == nil || q.req.Priority > v.req.Priority || (q.req.Priority == v.req.Priority && q.req.arrival > v.req.arrival) {
			v = q
		}
	}
	return v
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

var _ kvcache.KV = (*engine.Context)(nil)
