// Package benchmarks measures OpenAI-compatible servers the way vLLM's
// `bench serve` does (TTFT, TPOT, ITL, end-to-end latency, throughput,
// goodput), so llmux and its peers can be compared on one workload in one
// run. `llmux bench` drives it.
package benchmarks

import (
	"math"
	"sort"
	"time"
)

// Record is one request's timeline as the client saw it.
type Record struct {
	Start        time.Time       `json:"-"`
	TTFT         time.Duration   `json:"ttft_ns"`
	ITLs         []time.Duration `json:"-"` // gaps between consecutive output chunks
	Latency      time.Duration   `json:"latency_ns"`
	PromptTokens int             `json:"prompt_tokens"`
	OutputTokens int             `json:"output_tokens"`
	Err          string          `json:"error,omitempty"` // failure kind, "" on success
	RetryAfter   time.Duration   `json:"retry_after_ns,omitempty"`
	Model        string          `json:"model,omitempty"` // the model it named
	// Client is the concurrency slot that sent it (-1: unbounded
	// concurrency); a client's requests are sent one after another.
	Client int `json:"client"`
}

// OK reports whether the request succeeded.
func (r Record) OK() bool { return r.Err == "" }

// TPOT is the mean time per output token after the first (vLLM's
// definition): (latency - TTFT) / (output tokens - 1). It is undefined
// (ok=false) for fewer than two output tokens.
func (r Record) TPOT() (time.Duration, bool) {
	if r.OutputTokens < 2 {
		return 0, false
	}
	return (r.Latency - r.TTFT) / time.Duration(r.OutputTokens-1), true
}

// SteadyRate is the aggregate rate of events (tokens, chunks) of several
// concurrent streams over the window in which all of them run: from the
// last stream's first event to the last event of all, counting the events
// after the window opens. Streams with no events are left out. Benchmarks
// use it to compare steady-state throughput without ramp-up.
func SteadyRate(streams [][]time.Time) float64 {
	var t0, t1 time.Time
	for _, ts := range streams {
		if len(ts) == 0 {
			continue
		}
		if ts[0].After(t0) {
			t0 = ts[0]
		}
		if ts[len(ts)-1].After(t1) {
			t1 = ts[len(ts)-1]
		}
	}
	n := 0
	for _, ts := range streams {
		for _, t := range ts {
			if t.After(t0) {
				n++
			}
		}
	}
	return float64(n) / t1.Sub(t0).Seconds()
}

// Dist summarizes a sample of durations, in milliseconds.
type Dist struct {
	Mean   float64 `json:"mean_ms"`
	Median float64 `json:"median_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
	N      int     `json:"n"`
}

// Percentile returns the p-th percentile (0..100) of sorted values by
// linear interpolation between closest ranks (numpy's default, which vLLM
// uses).
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	if len(sorted) == 1 {
		return sorted[0]
	}
	rank := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	frac := rank - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}

func distOf(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	v := make([]float64, len(ds))
	var sum float64
	for i, d := range ds {
		v[i] = float64(d) / float64(time.Millisecond)
		sum += v[i]
	}
	sort.Float64s(v)
	return Dist{Mean: sum / float64(len(v)), Median: Percentile(v, 50), P90: Percentile(v, 90), P99: Percentile(v, 99), Max: v[len(v)-1], N: len(v)}
}

// SLO is a goodput target: a request counts as good when every given bound
// holds (zero bounds are ignored).
type SLO struct {
	TTFT time.Duration `json:"ttft_ns,omitempty"`
	TPOT time.Duration `json:"tpot_ns,omitempty"`
	E2E  time.Duration `json:"e2e_ns,omitempty"`
}

func (s SLO) good(r Record) bool {
	if !r.OK() {
		return false
	}
	if s.TTFT > 0 && r.TTFT > s.TTFT {
		return false
	}
	if tp, ok := r.TPOT(); s.TPOT > 0 && ok && tp > s.TPOT {
		return false
	}
	return s.E2E == 0 || r.Latency <= s.E2E
}

// Summary is the aggregate of one run.
type Summary struct {
	Requests       int            `json:"requests"`
	Completed      int            `json:"completed"`
	Failures       map[string]int `json:"failures"`
	DurationSec    float64        `json:"duration_s"`
	RequestRate    float64        `json:"request_throughput"`     // completed requests/s
	OutputRate     float64        `json:"output_throughput"`      // output tokens/s
	TotalTokenRate float64        `json:"total_token_throughput"` // (prompt+output) tokens/s
	Goodput        float64        `json:"request_goodput"`        // good requests/s
	GoodFraction   float64        `json:"good_fraction"`
	PerModel       map[string]int `json:"requests_per_model,omitempty"` // requests sent per model named
	PromptTokens   int            `json:"total_input_tokens"`
	OutputTokens   int            `json:"total_output_tokens"`
	TTFT           Dist           `json:"ttft"`
	TPOT           Dist           `json:"tpot"`
	ITL            Dist           `json:"itl"`
	E2E            Dist           `json:"e2el"`
	RetryAfter     Dist           `json:"retry_after"`
}

// Summarize aggregates records of a run that lasted dur.
func Summarize(recs []Record, dur time.Duration, slo SLO) Summary {
	s := Summary{Requests: len(recs), Failures: map[string]int{}, DurationSec: dur.Seconds()}
	var ttft, tpot, itl, e2e, retry []time.Duration
	good := 0
	for _, r := range recs {
		if r.Model != "" {
			if s.PerModel == nil {
				s.PerModel = map[string]int{}
			}
			s.PerModel[r.Model]++
		}
		if !r.OK() {
			s.Failures[r.Err]++
			if r.RetryAfter > 0 {
				retry = append(retry, r.RetryAfter)
			}
			continue
		}
		s.Completed++
		s.PromptTokens += r.PromptTokens
		s.OutputTokens += r.OutputTokens
		ttft = append(ttft, r.TTFT)
		if tp, ok := r.TPOT(); ok {
			tpot = append(tpot, tp)
		}
		itl = append(itl, r.ITLs...)
		e2e = append(e2e, r.Latency)
		if slo.good(r) {
			good++
		}
	}
	if sec := dur.Seconds(); sec > 0 {
		s.RequestRate = float64(s.Completed) / sec
		s.OutputRate = float64(s.OutputTokens) / sec
		s.TotalTokenRate = float64(s.PromptTokens+s.OutputTokens) / sec
		s.Goodput = float64(good) / sec
	}
	if len(recs) > 0 {
		s.GoodFraction = float64(good) / float64(len(recs))
	}
	s.TTFT, s.TPOT, s.ITL, s.E2E, s.RetryAfter = distOf(ttft), distOf(tpot), distOf(itl), distOf(e2e), distOf(retry)
	return s
}
