package benchmarks

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// Point is one load level of a run: a concurrency or a request rate.
type Point struct {
	MaxConcurrency int     `json:"max_concurrency"`
	RequestRate    float64 `json:"request_rate"`
	Summary        Summary `json:"summary"`
	// Requests are the run's records in the order they were sent.
	Requests []Record `json:"requests,omitempty"`
}

// Result is what `llmux bench` writes: the setup and one point per load
// level of the sweep.
type Result struct {
	Label      string  `json:"label"`
	Date       string  `json:"date"`
	BaseURL    string  `json:"base_url"`
	Endpoint   string  `json:"endpoint"`
	Model      string  `json:"model"`
	Dataset    string  `json:"dataset"`
	NumPrompts int     `json:"num_prompts"`
	Seed       uint64  `json:"seed"`
	SLO        SLO     `json:"slo"`
	Points     []Point `json:"points"`
}

// Load reads a result file.
func Load(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Label == "" {
		r.Label = path
	}
	return &r, nil
}

// Save writes a result file.
func (r *Result) Save(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (p Point) load() string {
	switch {
	case p.RequestRate > 0:
		return fmt.Sprintf("rate %.3g/s", p.RequestRate)
	case p.MaxConcurrency > 0:
		return fmt.Sprintf("conc %d", p.MaxConcurrency)
	}
	return "all at once"
}

// WriteTable prints a result as a table a person can read.
func (r *Result) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%s — %s %s, model %s, dataset %s, %d prompts\n", r.Label, r.BaseURL, r.Endpoint, r.Model, r.Dataset, r.NumPrompts)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "load\tok/total\treq/s\tout tok/s\tTTFT p50 ms\tTTFT p99 ms\tTPOT p50 ms\tITL p99 ms\tE2E p50 ms\tgoodput\tfailures\trequests per model\t")
	for _, p := range r.Points {
		s := p.Summary
		fmt.Fprintf(tw, "%s\t%d/%d\t%.2f\t%.1f\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t%.2f\t%s\t%s\t\n", p.load(), s.Completed, s.Requests, s.RequestRate, s.OutputRate,
			s.TTFT.Median, s.TTFT.P99, s.TPOT.Median, s.ITL.P99, s.E2E.Median, s.Goodput, failures(s.Failures), perModel(s.PerModel))
	}
	tw.Flush()
}

func failures(f map[string]int) string {
	if len(f) == 0 {
		return "-"
	}
	var parts []string
	for k, v := range f {
		parts = append(parts, fmt.Sprintf("%s:%d", k, v))
	}
	return strings.Join(parts, ",")
}

// perModel prints request counts per model, by name.
func perModel(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, ",")
}

// Compare prints results side by side, point by point, with each metric's
// ratio to the first result.
func Compare(w io.Writer, rs []*Result) {
	if len(rs) == 0 {
		return
	}
	metrics := []struct {
		name string
		get  func(Summary) float64
	}{
		{"output tok/s", func(s Summary) float64 { return s.OutputRate }},
		{"req/s", func(s Summary) float64 { return s.RequestRate }},
		{"TTFT p50 ms", func(s Summary) float64 { return s.TTFT.Median }},
		{"TTFT p99 ms", func(s Summary) float64 { return s.TTFT.P99 }},
		{"TPOT p50 ms", func(s Summary) float64 { return s.TPOT.Median }},
		{"ITL p99 ms", func(s Summary) float64 { return s.ITL.P99 }},
		{"E2E p50 ms", func(s Summary) float64 { return s.E2E.Median }},
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "load\tmetric\t"
	for i, r := range rs {
		head += r.Label + "\t"
		if i > 0 {
			head += "ratio\t"
		}
	}
	fmt.Fprintln(tw, head)
	for pi := range rs[0].Points {
		for _, m := range metrics {
			row := rs[0].Points[pi].load() + "\t" + m.name + "\t"
			base := m.get(rs[0].Points[pi].Summary)
			for i, r := range rs {
				if pi >= len(r.Points) {
					row += "-\t"
					if i > 0 {
						row += "-\t"
					}
					continue
				}
				v := m.get(r.Points[pi].Summary)
				row += fmt.Sprintf("%.1f\t", v)
				if i > 0 {
					row += ratio(v, base) + "\t"
				}
			}
			fmt.Fprintln(tw, row)
		}
	}
	tw.Flush()
}

func ratio(v, base float64) string {
	if base == 0 || math.IsNaN(v) || math.IsNaN(base) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v/base)
}
