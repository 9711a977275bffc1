package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/llmux/llmux/benchmarks"
)

func runBench(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "compare":
			return runBenchCompare(args[1:])
		case "plot":
			return runBenchPlot(args[1:])
		case "pairs":
			return runBenchPairs(args[1:])
		case "run":
			args = args[1:]
		}
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: llmux bench [run] [flags]      measure an OpenAI-compatible server
       llmux bench compare A.json B.json ...   side-by-side table with ratios
       llmux bench plot -o OUT.svg A.json ...  throughput-vs-latency plot
       llmux bench pairs --metric NAME --a 'GLOB' --b 'GLOB' [--output F.json]
                                               A/B ratios of runs made alternately

Flags follow vLLM's bench serve where they overlap. Comma lists in
--max-concurrency or --request-rate make a sweep. Without --model (and
--models), the first model the server lists at /v1/models is used.`)
		fs.PrintDefaults()
	}
	baseURL := fs.String("base-url", "http://127.0.0.1:8080", "server URL")
	endpoint := fs.String("endpoint", "/v1/completions", "/v1/completions, /v1/chat/completions, /v1/messages or /v1/responses")
	api := fs.String("api", "", "the API to drive, instead of --endpoint: completions, chat, messages (Anthropic's) or responses")
	model := fs.String("model", "", "model name (default: the first the server lists)")
	apiKey := fs.String("api-key", os.Getenv("OPENAI_API_KEY"), "API key")
	numPrompts := fs.Int("num-prompts", 100, "requests per load level")
	conc := fs.String("max-concurrency", "", "requests in flight, or a comma list for a sweep (empty: unbounded)")
	rate := fs.String("request-rate", "inf", "arrival rate in requests/s (Poisson), or a comma list; inf: all at once")
	burst := fs.Float64("burstiness", 1, "gamma shape of arrivals: 1 Poisson, <1 burstier")
	seed := fs.Uint64("seed", 0, "seed for the workload and arrivals")
	dataset := fs.String("dataset-name", "random", "random, stories, shared-prefix, multi-turn, jsonl")
	datasetPath := fs.String("dataset-path", "", "jsonl file for --dataset-name jsonl")
	inLen := fs.Int("random-input-len", 128, "mean prompt length in words (≈ tokens)")
	outLen := fs.Int("random-output-len", 128, "mean max_tokens")
	rangeRatio := fs.Float64("random-range-ratio", 0, "lengths vary uniformly by ±this fraction")
	prefixLen := fs.Int("prefix-len", 512, "shared-prefix: words in the shared system prompt")
	turns := fs.Int("turns", 4, "multi-turn: turns per conversation")
	modelsList := fs.String("models", "", "comma list of model names to spread requests over")
	modelDist := fs.String("model-dist", "cycle", "how requests spread over --models: cycle (in turn), zipf (a few hot models), or pairs (churn: client i of the --max-concurrency clients alternates between models i%N and (i+1)%N)")
	modelHeader := fs.String("model-header", "", "also send the model in this header (e.g. llmux-multiplexed-model-id)")
	cancelAfter := fs.Int("cancel-after", 0, "cancellation storm: hang up after this many chunks...")
	cancelShare := fs.Float64("cancel-share", 1, "...on this share of requests")
	ignoreEOS := fs.Bool("ignore-eos", false, "send ignore_eos so outputs reach max_tokens")
	samePrompts := fs.Bool("same-prompts", false, "send every load level of a sweep the same prompts (default: with random, shared-prefix and multi-turn, each level and the warm-up draw their own, so a server's prompt cache cannot carry one level's prompts into the next)")
	warmup := fs.Int("warmup", 2, "warm-up requests before each run, not counted")
	goodput := fs.String("goodput", "", "SLOs for goodput, e.g. ttft:500,tpot:50,e2el:5000 (ms)")
	output := fs.String("output", "", "write the JSON result here")
	label := fs.String("label", "", "name of this run in tables and plots (default: base URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *api != "" {
		found := false
		for ep, name := range benchmarks.APIs {
			if name == *api {
				*endpoint, found = ep, true
			}
		}
		if !found {
			return fmt.Errorf("--api %q: want completions, chat, messages or responses", *api)
		}
	}
	if *model == "" && *modelsList == "" {
		ids, err := benchmarks.ListModels(ctx, *baseURL, *apiKey, nil)
		if err != nil {
			return fmt.Errorf("bench: no --model given, and listing the server's models failed: %w", err)
		}
		*model = ids[0]
		if len(ids) > 1 {
			fmt.Fprintf(os.Stderr, "bench: the server lists %d models (%s); using the first, %s (choose with --model)\n", len(ids), strings.Join(ids, ", "), *model)
		} else {
			fmt.Fprintf(os.Stderr, "bench: using model %s, the one the server lists\n", *model)
		}
	}
	slo, err := parseSLO(*goodput)
	if err != nil {
		return err
	}
	levels, err := loadLevels(*conc, *rate)
	if err != nil {
		return err
	}
	var clientModel func(client, n int) string
	if *modelDist == "pairs" {
		if *modelsList == "" {
			return fmt.Errorf("bench: --model-dist pairs needs --models")
		}
		if *conc == "" {
			return fmt.Errorf("bench: --model-dist pairs needs --max-concurrency: each concurrency slot is a client alternating between two models")
		}
		clientModel = benchmarks.PairsModel(splitComma(*modelsList))
	}
	wcfg := benchmarks.WorkloadConfig{Dataset: *dataset, Path: *datasetPath, InputLen: *inLen, OutputLen: *outLen, RangeRatio: *rangeRatio,
		PrefixLen: *prefixLen, Turns: *turns, Models: splitComma(*modelsList), ModelDist: *modelDist,
		CancelAfter: *cancelAfter, CancelShare: *cancelShare, Seed: *seed}
	res := &benchmarks.Result{Label: *label, Date: time.Now().UTC().Format(time.RFC3339), BaseURL: *baseURL, Endpoint: *endpoint,
		Model: *model, Dataset: *dataset, NumPrompts: *numPrompts, Seed: *seed, SLO: slo}
	if res.Label == "" {
		res.Label = *baseURL
	}
	if res.Model == "" {
		res.Model = *modelsList
	}
	for i, lv := range levels {
		items, warm, err := levelPrompts(wcfg, i, *numPrompts, *warmup, *samePrompts)
		if err != nil {
			return err
		}
		rc := benchmarks.RunConfig{BaseURL: *baseURL, Endpoint: *endpoint, APIKey: *apiKey, Model: *model, ModelHeader: *modelHeader,
			MaxConcurrency: lv.MaxConcurrency, RequestRate: lv.RequestRate, Burstiness: *burst, IgnoreEOS: *ignoreEOS, Seed: *seed, SLO: slo,
			ClientModel: clientModel}
		if len(warm) > 0 {
			if _, _, err := benchmarks.Run(ctx, rc, warm); err != nil {
				return err
			}
		}
		bar := newProgressBar(fmt.Sprintf("%s %s", res.Label, benchLoadName(lv)))
		rc.Progress = func(d, t int) { bar.Set(float64(d) / float64(t)) }
		recs, dur, err := benchmarks.Run(ctx, rc, items)
		if err != nil {
			bar.Done("failed")
			return err
		}
		p := benchmarks.Point{MaxConcurrency: lv.MaxConcurrency, RequestRate: lv.RequestRate, Summary: benchmarks.Summarize(recs, dur, slo), Requests: recs}
		bar.Done(fmt.Sprintf("%d/%d ok, %.1f output tok/s", p.Summary.Completed, p.Summary.Requests, p.Summary.OutputRate))
		res.Points = append(res.Points, p)
	}
	res.WriteTable(os.Stdout)
	if *output != "" {
		if err := res.Save(*output); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", *output)
	}
	return nil
}

// levelPrompts draws load level i's prompts and its warm-up requests.
// Unless same is set, level i's seed is the workload's seed plus i and the
// warm-up's is one no level uses, so no two runs of a sweep share a prompt
// (a server's prompt cache would otherwise serve a later level the earlier
// one's prompts without prefilling them).
func levelPrompts(cfg benchmarks.WorkloadConfig, i, n, warmup int, same bool) (items, warm []benchmarks.Item, err error) {
	wcfg := cfg
	if !same {
		cfg.Seed += uint64(i)
		wcfg.Seed = ^cfg.Seed
	}
	if items, err = benchmarks.Generate(cfg, n); err != nil {
		return nil, nil, err
	}
	if warmup > 0 {
		if warm, err = benchmarks.Generate(wcfg, warmup); err != nil {
			return nil, nil, err
		}
	}
	return items, warm, nil
}

func benchLoadName(p benchmarks.Point) string {
	if p.RequestRate > 0 {
		return fmt.Sprintf("rate %g/s", p.RequestRate)
	}
	if p.MaxConcurrency > 0 {
		return fmt.Sprintf("concurrency %d", p.MaxConcurrency)
	}
	return "all at once"
}

// loadLevels expands the sweep: every concurrency times every rate.
func loadLevels(conc, rate string) ([]benchmarks.Point, error) {
	concs := []int{0}
	if conc != "" {
		concs = nil
		for _, c := range splitComma(conc) {
			n, err := strconv.Atoi(c)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("bench: --max-concurrency %q: want positive integers", c)
			}
			concs = append(concs, n)
		}
	}
	var rates []float64
	for _, r := range splitComma(rate) {
		if r == "inf" {
			rates = append(rates, 0)
			continue
		}
		f, err := strconv.ParseFloat(r, 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) {
			return nil, fmt.Errorf("bench: --request-rate %q: want positive numbers or inf", r)
		}
		rates = append(rates, f)
	}
	if len(rates) == 0 {
		rates = []float64{0}
	}
	var out []benchmarks.Point
	for _, c := range concs {
		for _, r := range rates {
			out = append(out, benchmarks.Point{MaxConcurrency: c, RequestRate: r})
		}
	}
	return out, nil
}

func parseSLO(s string) (benchmarks.SLO, error) {
	var slo benchmarks.SLO
	for _, part := range splitComma(s) {
		k, v, ok := strings.Cut(part, ":")
		msv, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || msv <= 0 {
			return slo, fmt.Errorf("bench: --goodput %q: want name:milliseconds", part)
		}
		d := time.Duration(msv * float64(time.Millisecond))
		switch k {
		case "ttft":
			slo.TTFT = d
		case "tpot":
			slo.TPOT = d
		case "e2el":
			slo.E2E = d
		default:
			return slo, fmt.Errorf("bench: --goodput %q: want ttft, tpot or e2el", k)
		}
	}
	return slo, nil
}

func loadResults(paths []string) ([]*benchmarks.Result, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("want result files")
	}
	var rs []*benchmarks.Result
	for _, p := range paths {
		r, err := benchmarks.Load(p)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func runBenchCompare(args []string) error {
	rs, err := loadResults(args)
	if err != nil {
		return fmt.Errorf("bench compare: %w", err)
	}
	benchmarks.Compare(os.Stdout, rs)
	return nil
}

func runBenchPlot(args []string) error {
	fs := flag.NewFlagSet("bench plot", flag.ContinueOnError)
	out := fs.String("o", "bench.svg", "SVG file to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rs, err := loadResults(fs.Args())
	if err != nil {
		return fmt.Errorf("bench plot: %w", err)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := benchmarks.PlotSVG(f, rs); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", *out)
	return nil
}

// runBenchPairs compares runs of A and B made alternately: the A files and
// the B files, each sorted by name, are paired in order.
func runBenchPairs(args []string) error {
	fs := flag.NewFlagSet("bench pairs", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: llmux bench pairs --metric NAME --a 'GLOB' --b 'GLOB' [--output FILE.json]

Compares a metric of runs of A and B made alternately (A B A B A B, e.g.
by interleave in benchmarks/record.sh): the result files matching --a and
those matching --b, each sorted by name, are paired in order. For every
load level it prints each pair's A/B ratio, the median ratio and the
range. Metrics: output_throughput, request_throughput,
total_token_throughput, request_goodput, and DIST.STAT with DIST one of
ttft, tpot, itl, e2el and STAT one of mean_ms, median_ms, p90_ms, p99_ms,
max_ms (e.g. ttft.p99_ms).`)
		fs.PrintDefaults()
	}
	metric := fs.String("metric", "output_throughput", "the metric to compare, named as in the JSON result")
	aGlob := fs.String("a", "", "glob of the A runs' result files (quote it)")
	bGlob := fs.String("b", "", "glob of the B runs' result files (quote it)")
	output := fs.String("output", "", "also write the comparison as JSON here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench pairs: unexpected arguments %q (quote the globs)", fs.Args())
	}
	var files [2][]string
	for i, g := range []string{*aGlob, *bGlob} {
		if g == "" {
			return fmt.Errorf("bench pairs: --a and --b are required")
		}
		m, err := filepath.Glob(g)
		if err != nil {
			return fmt.Errorf("bench pairs: %q: %w", g, err)
		}
		sort.Strings(m)
		files[i] = m
	}
	if len(files[0]) != len(files[1]) || len(files[0]) == 0 {
		return fmt.Errorf("bench pairs: %d A files (%s) and %d B files (%s): want the same number, at least one", len(files[0]), *aGlob, len(files[1]), *bGlob)
	}
	rep, err := benchmarks.PairFiles(*metric, files[0], files[1])
	if err != nil {
		return fmt.Errorf("bench pairs: %w", err)
	}
	rep.WriteTable(os.Stdout)
	if *output != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*output, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", *output)
	}
	return nil
}
