package benchmarks

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// ErrNoPairs is returned for a comparison without any pair.
var ErrNoPairs = errors.New("no pairs to compare")

// PairStats summarizes a comparison of A and B measured alternately (A B
// A B ...): each pair's ratio A/B, and the median, minimum and maximum of
// the ratios. A ratio is undefined, NaN, when B is zero or either value
// is NaN or infinite; such pairs stay in Ratios but are left out of
// Median, Min and Max, which are NaN when no pair has a ratio. In JSON,
// NaN is written as null.
type PairStats struct {
	A, B    []float64 // the measurements, pair by pair
	Ratios  []float64 // A[i]/B[i]
	Median  float64   // of the defined ratios
	Min     float64
	Max     float64
	Defined int // pairs with a defined ratio
}

// ComparePairs computes the statistics of pairs (a[i], b[i]). It fails
// when a and b differ in length or are empty.
func ComparePairs(a, b []float64) (PairStats, error) {
	if len(a) != len(b) {
		return PairStats{}, fmt.Errorf("%d A values but %d B values", len(a), len(b))
	}
	if len(a) == 0 {
		return PairStats{}, ErrNoPairs
	}
	s := PairStats{A: a, B: b, Ratios: make([]float64, len(a)), Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	var defined []float64
	for i := range a {
		s.Ratios[i] = math.NaN()
		if b[i] == 0 || !finite(a[i]) || !finite(b[i]) {
			continue
		}
		s.Ratios[i] = a[i] / b[i]
		defined = append(defined, s.Ratios[i])
	}
	s.Defined = len(defined)
	if s.Defined > 0 {
		sort.Float64s(defined)
		s.Median = Percentile(defined, 50)
		s.Min, s.Max = defined[0], defined[len(defined)-1]
	}
	return s, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// MarshalJSON writes the statistics with NaN as null.
func (s PairStats) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		A       []*float64 `json:"a"`
		B       []*float64 `json:"b"`
		Ratios  []*float64 `json:"ratios"`
		Median  *float64   `json:"median"`
		Min     *float64   `json:"min"`
		Max     *float64   `json:"max"`
		Defined int        `json:"defined"`
	}{nullNaNs(s.A), nullNaNs(s.B), nullNaNs(s.Ratios), nullNaN(s.Median), nullNaN(s.Min), nullNaN(s.Max), s.Defined})
}

func nullNaN(f float64) *float64 {
	if !finite(f) {
		return nil
	}
	return &f
}

func nullNaNs(fs []float64) []*float64 {
	out := make([]*float64, len(fs))
	for i, f := range fs {
		out[i] = nullNaN(f)
	}
	return out
}

// pairMetrics maps the metric names of a Summary, as its JSON spells
// them, to their values. Latency statistics of an empty distribution (no
// request completed) are NaN, not zero.
var pairMetrics = func() map[string]func(Summary) float64 {
	m := map[string]func(Summary) float64{
		"request_throughput":     func(s Summary) float64 { return s.RequestRate },
		"output_throughput":      func(s Summary) float64 { return s.OutputRate },
		"total_token_throughput": func(s Summary) float64 { return s.TotalTokenRate },
		"request_goodput":        func(s Summary) float64 { return s.Goodput },
	}
	dists := map[string]func(Summary) Dist{
		"ttft": func(s Summary) Dist { return s.TTFT },
		"tpot": func(s Summary) Dist { return s.TPOT },
		"itl":  func(s Summary) Dist { return s.ITL },
		"e2el": func(s Summary) Dist { return s.E2E },
	}
	stats := map[string]func(Dist) float64{
		"mean_ms":   func(d Dist) float64 { return d.Mean },
		"median_ms": func(d Dist) float64 { return d.Median },
		"p90_ms":    func(d Dist) float64 { return d.P90 },
		"p99_ms":    func(d Dist) float64 { return d.P99 },
		"max_ms":    func(d Dist) float64 { return d.Max },
	}
	for dn, dist := range dists {
		for sn, stat := range stats {
			m[dn+"."+sn] = func(s Summary) float64 {
				d := dist(s)
				if d.N == 0 {
					return math.NaN()
				}
				return stat(d)
			}
		}
	}
	return m
}()

// MetricNames lists the metrics PairLevels accepts, sorted: the
// throughputs (output_throughput, ...) and the latency statistics as
// DIST.STAT (ttft.median_ms, e2el.p99_ms, ...), named as in the JSON
// result.
func MetricNames() []string {
	names := make([]string, 0, len(pairMetrics))
	for n := range pairMetrics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// MetricValue returns the named metric (see MetricNames) of a summary.
func MetricValue(s Summary, metric string) (float64, error) {
	get, ok := pairMetrics[metric]
	if !ok {
		return 0, fmt.Errorf("unknown metric %q; want one of %s", metric, strings.Join(MetricNames(), ", "))
	}
	return get(s), nil
}

// LevelPairs is the comparison at one load level.
type LevelPairs struct {
	MaxConcurrency int       `json:"max_concurrency"`
	RequestRate    float64   `json:"request_rate"`
	Stats          PairStats `json:"pairs"`
}

// PairReport is a comparison of A runs and B runs, level by level.
type PairReport struct {
	Metric string       `json:"metric"`
	A      []string     `json:"a"` // labels or files of the A runs, in pair order
	B      []string     `json:"b"`
	Levels []LevelPairs `json:"levels"`
}

type levelKey struct {
	conc int
	rate float64
}

func keyOf(p Point) levelKey { return levelKey{p.MaxConcurrency, p.RequestRate} }

// PairLevels compares a metric of the results a[i] and b[i], pair by
// pair, at each load level (matched by concurrency and request rate).
// Every result must hold the same load levels; the report lists them in
// the order of a[0].
func PairLevels(metric string, a, b []*Result) (*PairReport, error) {
	if len(a) != len(b) {
		return nil, fmt.Errorf("%d A results but %d B results", len(a), len(b))
	}
	if len(a) == 0 {
		return nil, ErrNoPairs
	}
	if _, err := MetricValue(Summary{}, metric); err != nil {
		return nil, err
	}
	all := append(append([]*Result{}, a...), b...)
	byLevel := make([]map[levelKey]Summary, len(all))
	for i, r := range all {
		byLevel[i] = map[levelKey]Summary{}
		for _, p := range r.Points {
			if _, dup := byLevel[i][keyOf(p)]; dup {
				return nil, fmt.Errorf("%s: load level %s appears twice", r.Label, p.load())
			}
			byLevel[i][keyOf(p)] = p.Summary
		}
		if len(byLevel[i]) != len(byLevel[0]) {
			return nil, fmt.Errorf("%s has %d load levels, %s has %d", r.Label, len(byLevel[i]), all[0].Label, len(byLevel[0]))
		}
	}
	rep := &PairReport{Metric: metric}
	for i := range a {
		rep.A = append(rep.A, a[i].Label)
		rep.B = append(rep.B, b[i].Label)
	}
	for _, p := range a[0].Points {
		vals := make([]float64, len(all))
		for i, r := range all {
			s, ok := byLevel[i][keyOf(p)]
			if !ok {
				return nil, fmt.Errorf("%s has no load level %s", r.Label, p.load())
			}
			vals[i], _ = MetricValue(s, metric)
		}
		st, err := ComparePairs(vals[:len(a)], vals[len(a):])
		if err != nil {
			return nil, err
		}
		rep.Levels = append(rep.Levels, LevelPairs{MaxConcurrency: p.MaxConcurrency, RequestRate: p.RequestRate, Stats: st})
	}
	return rep, nil
}

// PairFiles loads result files written by `llmux bench --output`, the A
// runs and the B runs in pair order, and compares them with PairLevels.
// Runs are named by their file in the report.
func PairFiles(metric string, aPaths, bPaths []string) (*PairReport, error) {
	load := func(paths []string) ([]*Result, error) {
		var rs []*Result
		for _, p := range paths {
			r, err := Load(p)
			if err != nil {
				return nil, err
			}
			r.Label = p
			rs = append(rs, r)
		}
		return rs, nil
	}
	a, err := load(aPaths)
	if err != nil {
		return nil, err
	}
	b, err := load(bPaths)
	if err != nil {
		return nil, err
	}
	return PairLevels(metric, a, b)
}

// WriteTable prints the report, one block per load level: each pair's A
// and B values and ratio, then the median ratio and its range.
func (r *PairReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%s, A/B over %d pairs run alternately\n", r.Metric, len(r.A))
	for _, lv := range r.Levels {
		p := Point{MaxConcurrency: lv.MaxConcurrency, RequestRate: lv.RequestRate}
		fmt.Fprintf(w, "\n%s\n", p.load())
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "pair\tA\tB\tA/B\tA run\tB run")
		s := lv.Stats
		for i := range s.Ratios {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, num(s.A[i], 2), num(s.B[i], 2), num(s.Ratios[i], 3), r.A[i], r.B[i])
		}
		tw.Flush()
		fmt.Fprintf(w, "median A/B %s, range %s..%s (%d of %d pairs with a ratio)\n",
			num(s.Median, 3), num(s.Min, 3), num(s.Max, 3), s.Defined, len(s.Ratios))
	}
}

// num formats f with prec decimals, or "-" when it is undefined.
func num(f float64, prec int) string {
	if !finite(f) {
		return "-"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}
