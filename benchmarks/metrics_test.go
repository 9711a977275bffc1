package benchmarks

import (
	"math"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestTPOTExcludesFirstToken(t *testing.T) {
	// First token at 100 ms, then 4 more every 10 ms: latency 140 ms.
	r := Record{TTFT: 100 * ms, Latency: 140 * ms, OutputTokens: 5}
	got, ok := r.TPOT()
	if !ok || got != 10*ms {
		t.Fatalf("TPOT = %v (%v), want 10ms", got, ok)
	}
	if _, ok := (Record{TTFT: ms, Latency: ms, OutputTokens: 1}).TPOT(); ok {
		t.Fatal("TPOT defined for one token")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	cases := map[float64]float64{0: 1, 50: 5.5, 90: 9.1, 99: 9.91, 100: 10}
	for p, want := range cases {
		if got := Percentile(v, p); math.Abs(got-want) > 1e-9 {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := Percentile([]float64{7}, 99); got != 7 {
		t.Errorf("single value: %v", got)
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("empty sample should be NaN")
	}
}

func TestSummarizeAndGoodput(t *testing.T) {
	recs := []Record{
		{TTFT: 100 * ms, Latency: 300 * ms, OutputTokens: 21, PromptTokens: 10, ITLs: []time.Duration{10 * ms, 10 * ms}},
		{TTFT: 500 * ms, Latency: 700 * ms, OutputTokens: 11, PromptTokens: 10, ITLs: []time.Duration{20 * ms}},
		{Err: "http_429", RetryAfter: 2 * time.Second},
		{TTFT: 50 * ms, Latency: 50 * ms, OutputTokens: 1, PromptTokens: 5},
	}
	s := Summarize(recs, 2*time.Second, SLO{TTFT: 200 * ms})
	checks := []struct {
		name      string
		got, want float64
	}{
		{"completed", float64(s.Completed), 3},
		{"failures", float64(s.Failures["http_429"]), 1},
		{"output tokens", float64(s.OutputTokens), 33},
		{"output rate", s.OutputRate, 16.5},
		{"request rate", s.RequestRate, 1.5},
		{"total token rate", s.TotalTokenRate, (33 + 25) / 2.0},
		{"goodput", s.Goodput, 1}, // requests 1 and 4 meet TTFT<=200ms
		{"good fraction", s.GoodFraction, 0.5},
		{"ttft median", s.TTFT.Median, 100},
		{"tpot n", float64(s.TPOT.N), 2}, // the one-token request has no TPOT
		{"tpot mean", s.TPOT.Mean, (10 + 20) / 2.0},
		{"itl n", float64(s.ITL.N), 3},
		{"e2e max", s.E2E.Max, 700},
		{"retry-after mean", s.RetryAfter.Mean, 2000},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestGoodputTPOTAndE2E: a request is good when its time per output token
// and its end-to-end latency are within their SLOs (bounds inclusive); a
// one-token request has no TPOT, so a TPOT SLO does not hold it back; a
// failed request is never good.
func TestGoodputTPOTAndE2E(t *testing.T) {
	recs := []Record{
		{TTFT: 100 * ms, Latency: 300 * ms, OutputTokens: 11}, // TPOT 20ms, E2E 300ms
		{TTFT: 100 * ms, Latency: 600 * ms, OutputTokens: 11}, // TPOT 50ms, E2E 600ms
		{TTFT: 50 * ms, Latency: 50 * ms, OutputTokens: 1},    // no TPOT, E2E 50ms
		{Err: "http_500"},
	}
	cases := []struct {
		name string
		slo  SLO
		good int
	}{
		{"tpot met by all", SLO{TPOT: 60 * ms}, 3},
		{"tpot missed by one", SLO{TPOT: 30 * ms}, 2},
		{"tpot at the bound", SLO{TPOT: 20 * ms}, 2},
		{"tpot missed by both that have one", SLO{TPOT: 10 * ms}, 1},
		{"e2el met by all", SLO{E2E: time.Second}, 3},
		{"e2el missed by one", SLO{E2E: 400 * ms}, 2},
		{"e2el at the bound", SLO{E2E: 300 * ms}, 2},
		{"e2el missed by all but one", SLO{E2E: 100 * ms}, 1},
		{"e2el missed by all", SLO{E2E: 10 * ms}, 0},
		{"tpot met, e2el missed", SLO{TPOT: 30 * ms, E2E: 250 * ms}, 1},
	}
	for _, c := range cases {
		s := Summarize(recs, 2*time.Second, c.slo)
		if want := float64(c.good) / 2; s.Goodput != want {
			t.Errorf("%s: goodput %v, want %v", c.name, s.Goodput, want)
		}
		if want := float64(c.good) / 4; s.GoodFraction != want {
			t.Errorf("%s: good fraction %v, want %v", c.name, s.GoodFraction, want)
		}
	}
}

func TestSteadyRate(t *testing.T) {
	at := func(offsets ...int) []time.Time {
		base := time.Unix(1000, 0)
		out := make([]time.Time, len(offsets))
		for i, o := range offsets {
			out[i] = base.Add(time.Duration(o) * ms)
		}
		return out
	}
	// The window opens at 200 ms (the second stream's first event) and
	// closes at 1200 ms; 4 events fall after its opening (300, 500, 700,
	// 1200): 4 per second. The empty stream is left out.
	got := SteadyRate([][]time.Time{at(0, 100, 300, 500), at(200, 700, 1200), nil})
	if want := 4.0; got != want {
		t.Fatalf("SteadyRate = %v events/s, want %v", got, want)
	}
}
