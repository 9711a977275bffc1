package scheduler

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmux/llmux/benchmarks"
	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
)

var (
	benchModel   = flag.String("sched.model", "bench", "preset for scheduler benchmarks (tiny, small, bench)")
	benchStreams = flag.String("sched.streams", "1,4,16,64", "concurrent streams for BenchmarkStreams")
	benchKV      = flag.String("sched.kv", "unified", "KV layout for BenchmarkStreams: unified or per-slot")
	benchHandoff = flag.Duration("sched.handoff", 0, "Options.Handoff for BenchmarkStreams (0: the default, negative: off)")
	benchLoRA    = flag.Bool("sched.lora", false, "BenchmarkStreams: configure a LoRA adapter (the base model still serves every stream), so the context runs as adapter schedulers do: graph reuse off")
)

func benchLoad(b *testing.B) *engine.Model {
	m, err := engine.LoadModel(modeltest.Preset(b, *benchModel), engine.ModelOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Close)
	return m
}

func syntheticPrompt(n, salt int) []int32 {
	p := make([]int32, n)
	p[0] = 1
	for i := 1; i < n; i++ {
		p[i] = int32(3 + (salt*131+i*7)%200)
	}
	return p
}

// BenchmarkStreams: aggregate output tokens/s of N concurrent streams
// through the scheduler (128-token prompts, 128 generated tokens each),
// over the window in which all N are decoding, divided by the raw engine's
// decode tokens/s at batch N measured in the same run on the same KV layout
// (-sched.kv).
func BenchmarkStreams(b *testing.B) {
	m := benchLoad(b)
	for _, ns := range strings.Split(*benchStreams, ",") {
		n, _ := strconv.Atoi(ns)
		b.Run("streams="+ns, func(b *testing.B) {
			var raw, sched float64
			for range b.N {
				r, err := engine.DecodeBench{Batch: n, PromptLen: 128, GenLen: 128, Context: engine.ContextOptions{PerSequenceKV: *benchKV == KVPerSlot}}.Run(m)
				if err != nil {
					b.Fatal(err)
				}
				raw += r
				sched += streamsOnce(b, m, n)
			}
			b.ReportMetric(sched/float64(b.N), "sched_tok/s")
			b.ReportMetric(raw/float64(b.N), "raw_tok/s")
			b.ReportMetric(sched/raw, "ratio")
		})
	}
}

func streamsOnce(b *testing.B, m *engine.Model, n int) float64 {
	o := Options{Parallel: n, CacheSlots: -1, Cells: n*(128+129) + 256, NoPrefixCache: true, Handoff: *benchHandoff, KVLayout: *benchKV}
	if *benchLoRA {
		o.Adapters = map[string]AdapterSpec{"a": {Path: modeltest.LoRA(b, modeltest.Preset(b, *benchModel), models.LoRAConfig{Seed: 1})}}
	}
	s, err := New(m, o)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	defer func() { cancel(); s.Close() }()
	times := make([][]time.Time, n)
	var wg sync.WaitGroup
	for i := range n {
		st, err := s.Submit(context.Background(), Request{Prompt: syntheticPrompt(128, i), MaxTokens: 128, IgnoreEOS: true})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ev, err := st.Recv(context.Background())
				if err == io.EOF {
					return
				}
				for range ev.Tokens {
					times[i] = append(times[i], time.Now())
				}
			}
		}()
	}
	wg.Wait()
	return benchmarks.SteadyRate(times)
}

// BenchmarkPrefillInterference: time to first token of short requests that
// arrive while 8 long (~420-token) prompts prefill, with chunked prefill
// (the defaults) and without (every prompt whole in one step, as llama.cpp's
// server does).
func BenchmarkPrefillInterference(b *testing.B) {
	m := benchLoad(b)
	configs := []struct {
		name string
		opts Options
	}{
		{"chunked", Options{}},
		{"unchunked", Options{TokenBudget: 4096, Chunk: 4096}},
	}
	for _, c := range configs {
		b.Run(c.name, func(b *testing.B) {
			var ttfts []time.Duration
			for range b.N {
				o := c.opts
				o.Parallel, o.Cells, o.NoPrefixCache = 16, 8192, true
				ttfts = append(ttfts, interferenceOnce(b, m, o)...)
			}
			p50, p99 := percentile(ttfts, 50), percentile(ttfts, 99)
			b.ReportMetric(float64(p50.Milliseconds()), "ttft_p50_ms")
			b.ReportMetric(float64(p99.Milliseconds()), "ttft_p99_ms")
		})
	}
}

func interferenceOnce(b *testing.B, m *engine.Model, o Options) []time.Duration {
	s, err := New(m, o)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	defer func() { cancel(); s.Close() }()
	var long []*Stream
	for i := range 8 {
		st, err := s.Submit(context.Background(), Request{Prompt: syntheticPrompt(420, 100+i), MaxTokens: 16, IgnoreEOS: true})
		if err != nil {
			b.Fatal(err)
		}
		long = append(long, st)
	}
	var ttft ttftCollector
	for i := range 8 {
		time.Sleep(150 * time.Millisecond) // arrivals spread over the long prefill
		sent := time.Now()
		st, err := s.Submit(context.Background(), Request{Prompt: syntheticPrompt(12, i), MaxTokens: 4, IgnoreEOS: true})
		if err != nil {
			b.Fatal(err)
		}
		ttft.watch(st, sent)
	}
	ttfts := ttft.wait()
	for _, st := range long {
		for {
			if _, err := st.Recv(context.Background()); err == io.EOF {
				break
			}
		}
	}
	return ttfts
}

// BenchmarkPrefixCache: 64 requests sharing a 512-token system prompt,
// submitted at once; time to first token with the prefix cache on and off.
// Requests that end without a token (past the queue deadline) have no time
// to first token; no_token_reqs counts them per run, and the percentiles
// are of the others.
func BenchmarkPrefixCache(b *testing.B) {
	m := benchLoad(b)
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("cache=%v", on), func(b *testing.B) {
			var ttfts []time.Duration
			missed := 0
			for range b.N {
				t, n := prefixOnce(b, m, on)
				ttfts = append(ttfts, t...)
				missed += n
			}
			if missed > 0 {
				b.Logf("%d of %d requests ended without a token; the TTFT percentiles leave them out", missed, 64*b.N)
			}
			b.ReportMetric(float64(percentile(ttfts, 50).Milliseconds()), "ttft_p50_ms")
			b.ReportMetric(float64(percentile(ttfts, 99).Milliseconds()), "ttft_p99_ms")
			b.ReportMetric(float64(missed)/float64(b.N), "no_token_reqs")
		})
	}
}

// prefixOnce returns the times to first token and how many requests ended
// without one.
func prefixOnce(b *testing.B, m *engine.Model, cache bool) ([]time.Duration, int) {
	s, err := New(m, Options{Parallel: 16, Cells: 8192, NoPrefixCache: !cache})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	defer func() { cancel(); s.Close() }()
	system := syntheticPrompt(512, 7)
	var ttft ttftCollector
	start := time.Now()
	for i := range 64 {
		p := append(append([]int32{}, system...), syntheticPrompt(16, 1000+i)[1:]...)
		st, err := s.Submit(context.Background(), Request{Prompt: p, MaxTokens: 4, IgnoreEOS: true})
		if err != nil {
			b.Fatal(err)
		}
		ttft.watch(st, start)
	}
	ttfts := ttft.wait()
	return ttfts, ttft.missed
}

// ttftCollector drains streams and records each one's time to first token,
// and counts the streams that end without one.
type ttftCollector struct {
	mu     sync.Mutex // guards ttfts and missed
	ttfts  []time.Duration
	missed int
	wg     sync.WaitGroup
}

func (c *ttftCollector) watch(st *Stream, since time.Time) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		first := true
		for {
			ev, err := st.Recv(context.Background())
			if err == io.EOF {
				if first {
					c.mu.Lock()
					c.missed++
					c.mu.Unlock()
				}
				return
			}
			if first && len(ev.Tokens) > 0 {
				first = false
				c.mu.Lock()
				c.ttfts = append(c.ttfts, time.Since(since))
				c.mu.Unlock()
			}
		}
	}()
}

func (c *ttftCollector) wait() []time.Duration {
	c.wg.Wait()
	return c.ttfts
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(float64(len(s)-1)*p/100 + 0.5)
	return s[idx]
}
