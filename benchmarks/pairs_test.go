package benchmarks

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

var nan = math.NaN()

// same reports whether a and b are equal to 1e-9, or both NaN.
func same(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= 1e-9
}

func sameAll(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !same(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestComparePairs(t *testing.T) {
	cases := []struct {
		name             string
		a, b             []float64
		ratios           []float64
		median, min, max float64
		defined          int
	}{
		{"three pairs", []float64{110, 90, 100}, []float64{100, 100, 100}, []float64{1.1, 0.9, 1}, 1, 0.9, 1.1, 3},
		{"even count takes the middle two", []float64{1, 2, 3, 4}, []float64{1, 1, 1, 1}, []float64{1, 2, 3, 4}, 2.5, 1, 4, 4},
		{"one pair", []float64{3}, []float64{2}, []float64{1.5}, 1.5, 1.5, 1.5, 1},
		{"zero A is a ratio", []float64{0, 2, 4}, []float64{2, 2, 2}, []float64{0, 1, 2}, 1, 0, 2, 3},
		{"zero B is undefined", []float64{1, 2, 3}, []float64{1, 0, 1}, []float64{1, nan, 3}, 2, 1, 3, 2},
		{"NaN is undefined", []float64{nan, 2, 3}, []float64{1, 1, nan}, []float64{nan, 2, nan}, 2, 2, 2, 1},
		{"infinity is undefined", []float64{math.Inf(1), 2, 2}, []float64{1, 1, 4}, []float64{nan, 2, 0.5}, 1.25, 0.5, 2, 2},
		{"no ratio at all", []float64{1, 1, 1}, []float64{0, 0, 0}, []float64{nan, nan, nan}, nan, nan, nan, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ComparePairs(c.a, c.b)
			if err != nil {
				t.Fatal(err)
			}
			if !sameAll(got.Ratios, c.ratios) {
				t.Errorf("ratios: got %v, want %v", got.Ratios, c.ratios)
			}
			if !same(got.Median, c.median) || !same(got.Min, c.min) || !same(got.Max, c.max) {
				t.Errorf("median, min, max: got %v %v %v, want %v %v %v", got.Median, got.Min, got.Max, c.median, c.min, c.max)
			}
			if got.Defined != c.defined {
				t.Errorf("defined: got %d, want %d", got.Defined, c.defined)
			}
		})
	}
}

func TestComparePairsErrors(t *testing.T) {
	if _, err := ComparePairs(nil, nil); !errors.Is(err, ErrNoPairs) {
		t.Errorf("empty: got %v, want ErrNoPairs", err)
	}
	if _, err := ComparePairs([]float64{1, 2}, []float64{1}); err == nil {
		t.Error("lengths 2 and 1: no error")
	}
}

func TestPairStatsJSONWritesNaNAsNull(t *testing.T) {
	s, _ := ComparePairs([]float64{1, nan}, []float64{0, 1})
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":[1,null],"b":[0,1],"ratios":[null,null],"median":null,"min":null,"max":null,"defined":0}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

func TestMetricValue(t *testing.T) {
	s := Summary{RequestRate: 2, OutputRate: 50, TotalTokenRate: 80, Goodput: 1.5,
		TTFT: Dist{Median: 12, P99: 30, N: 4}, TPOT: Dist{Median: 5, P99: 7, N: 4},
		ITL: Dist{Median: 4, P99: 9, N: 40}, E2E: Dist{Median: 100, P99: 200, N: 4}}
	cases := []struct {
		metric string
		want   float64
	}{
		{"request_throughput", 2}, {"output_throughput", 50}, {"total_token_throughput", 80}, {"request_goodput", 1.5},
		{"ttft.median_ms", 12}, {"ttft.p99_ms", 30}, {"tpot.median_ms", 5}, {"tpot.p99_ms", 7},
		{"itl.median_ms", 4}, {"itl.p99_ms", 9}, {"e2el.median_ms", 100}, {"e2el.p99_ms", 200},
	}
	for _, c := range cases {
		got, err := MetricValue(s, c.metric)
		if err != nil || got != c.want {
			t.Errorf("%s: got %v, %v; want %v", c.metric, got, err, c.want)
		}
	}
	// No request completed: latencies are undefined, throughput is zero.
	if got, _ := MetricValue(Summary{}, "ttft.median_ms"); !math.IsNaN(got) {
		t.Errorf("empty TTFT: got %v, want NaN", got)
	}
	if got, _ := MetricValue(Summary{}, "output_throughput"); got != 0 {
		t.Errorf("empty throughput: got %v, want 0", got)
	}
	if _, err := MetricValue(s, "ttft"); err == nil || !strings.Contains(err.Error(), "output_throughput") {
		t.Errorf("unknown metric: got %v, want an error listing the names", err)
	}
}

// sweep is a result with output throughput out[i] at concurrency conc[i].
func sweep(label string, conc []int, out []float64) *Result {
	r := &Result{Label: label}
	for i, c := range conc {
		r.Points = append(r.Points, Point{MaxConcurrency: c, Summary: Summary{OutputRate: out[i]}})
	}
	return r
}

func TestPairLevels(t *testing.T) {
	a := []*Result{
		sweep("a1", []int{1, 4}, []float64{10, 40}),
		sweep("a2", []int{4, 1}, []float64{44, 12}), // levels in another order
		sweep("a3", []int{1, 4}, []float64{11, 36}),
	}
	b := []*Result{
		sweep("b1", []int{1, 4}, []float64{10, 20}),
		sweep("b2", []int{1, 4}, []float64{10, 20}),
		sweep("b3", []int{1, 4}, []float64{10, 20}),
	}
	rep, err := PairLevels("output_throughput", a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		conc   int
		ratios []float64
		median float64
	}{{1, []float64{1, 1.2, 1.1}, 1.1}, {4, []float64{2, 2.2, 1.8}, 2}}
	if len(rep.Levels) != len(want) {
		t.Fatalf("got %d levels, want %d", len(rep.Levels), len(want))
	}
	for i, w := range want {
		lv := rep.Levels[i]
		if lv.MaxConcurrency != w.conc || !sameAll(lv.Stats.Ratios, w.ratios) || !same(lv.Stats.Median, w.median) {
			t.Errorf("level %d: got conc %d ratios %v median %v, want %d %v %v", i, lv.MaxConcurrency, lv.Stats.Ratios, lv.Stats.Median, w.conc, w.ratios, w.median)
		}
	}
	if strings.Join(rep.A, ",") != "a1,a2,a3" || strings.Join(rep.B, ",") != "b1,b2,b3" {
		t.Errorf("runs: got %v %v", rep.A, rep.B)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	for _, s := range []string{"conc 1", "conc 4", "median A/B 1.100, range 1.000..1.200", "median A/B 2.000, range 1.800..2.200"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, buf.String())
		}
	}
}

func TestPairLevelsErrors(t *testing.T) {
	one := sweep("one", []int{1}, []float64{1})
	two := sweep("two", []int{1, 4}, []float64{1, 2})
	other := sweep("other", []int{2}, []float64{1})
	dup := sweep("dup", []int{1, 1}, []float64{1, 2})
	cases := []struct {
		name   string
		metric string
		a, b   []*Result
		want   string
	}{
		{"no pairs", "output_throughput", nil, nil, "no pairs"},
		{"counts differ", "output_throughput", []*Result{one, one}, []*Result{one}, "2 A results but 1 B"},
		{"unknown metric", "speed", []*Result{one}, []*Result{one}, "unknown metric"},
		{"extra level", "output_throughput", []*Result{one}, []*Result{two}, "two has 2 load levels"},
		{"other level", "output_throughput", []*Result{one}, []*Result{other}, "other has no load level conc 1"},
		{"level twice", "output_throughput", []*Result{dup}, []*Result{dup}, "appears twice"},
	}
	for _, c := range cases {
		_, err := PairLevels(c.metric, c.a, c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestPairFiles(t *testing.T) {
	dir := t.TempDir()
	var as, bs []string
	for i, v := range []float64{9, 10, 11} {
		p := filepath.Join(dir, "a-"+string(rune('1'+i))+".json")
		if err := sweep("x", []int{2}, []float64{v}).Save(p); err != nil {
			t.Fatal(err)
		}
		as = append(as, p)
		q := filepath.Join(dir, "b-"+string(rune('1'+i))+".json")
		if err := sweep("y", []int{2}, []float64{10}).Save(q); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, q)
	}
	rep, err := PairFiles("output_throughput", as, bs)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Levels[0].Stats
	if !sameAll(s.Ratios, []float64{0.9, 1, 1.1}) || !same(s.Median, 1) || rep.A[0] != as[0] || rep.B[2] != bs[2] {
		t.Errorf("got %+v", rep)
	}
	if _, err := PairFiles("output_throughput", []string{filepath.Join(dir, "missing.json")}, bs[:1]); err == nil {
		t.Error("missing file: no error")
	}
}
