package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/llmux/llmux/engine"
)

func runGenerate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: llmux generate [flags] --prompt TEXT\n\nStreams a completion to standard output.")
		fs.PrintDefaults()
	}
	modelArg := fs.String("model", "", "GGUF file, or synth:PRESET (default: the embedded synthesized model)")
	prompt := fs.String("prompt", "Once upon a time", "prompt text")
	maxTokens := fs.Int("max-tokens", 128, "tokens to generate")
	temp := fs.Float64("temperature", 0.8, "sampling temperature (0: greedy)")
	topK := fs.Int("top-k", 40, "top-k (0: off)")
	topP := fs.Float64("top-p", 0.95, "top-p (1: off)")
	minP := fs.Float64("min-p", 0.05, "min-p (0: off)")
	seed := fs.Uint("seed", 0, "RNG seed (0: random)")
	ctxSize := fs.Int("ctx-size", 2048, "context size in tokens")
	threads := fs.Int("threads", 0, "decode threads (0: all CPUs)")
	ignoreEOS := fs.Bool("ignore-eos", false, "keep generating past end-of-sequence")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path, _, synth, err := resolveModel(*modelArg)
	if err != nil {
		return err
	}
	if synth {
		fmt.Fprintln(os.Stderr, "note: this is a synthesized model with random weights; it writes no sensible text")
	}
	bar := newProgressBar("loading " + path)
	m, err := engine.LoadModel(path, engine.ModelOptions{Progress: func(f float32) bool { bar.Set(float64(f)); return ctx.Err() == nil }})
	if err != nil {
		bar.Done("failed")
		return err
	}
	defer m.Close()
	bar.Done("done: " + m.Description())
	c, err := m.NewContext(engine.ContextOptions{Cells: *ctxSize, Threads: *threads})
	if err != nil {
		return err
	}
	defer c.Close()
	s := uint32(*seed)
	if s == 0 {
		s = uint32(time.Now().UnixNano())
	}
	sampler, err := engine.NewSampler(m, engine.SamplingParams{Temperature: float32(*temp), TopK: *topK, TopP: float32(*topP), MinP: float32(*minP), Seed: s})
	if err != nil {
		return err
	}
	defer sampler.Close()
	toks, err := m.Tokenize(*prompt, true, false)
	if err != nil {
		return err
	}
	if len(toks)+*maxTokens > *ctxSize {
		return fmt.Errorf("prompt (%d tokens) plus --max-tokens %d exceeds --ctx-size %d", len(toks), *maxTokens, *ctxSize)
	}
	b, err := engine.NewBatch(512, 1)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Print(*prompt)
	start := time.Now()
	row := 0
	for i := 0; i < len(toks); i += b.Cap() {
		b.Clear()
		chunk := toks[i:min(i+b.Cap(), len(toks))]
		for j, t := range chunk {
			row = b.Add(t, i+j, i+j == len(toks)-1, 0)
		}
		if err := c.Decode(b); err != nil {
			return err
		}
	}
	prefill := time.Since(start)
	var d engine.Detokenizer
	var out []byte
	n := 0
	for ; n < *maxTokens && ctx.Err() == nil; n++ {
		tok, err := sampler.Sample(c, row)
		if err != nil {
			return err
		}
		if m.IsEOG(tok) && !*ignoreEOS {
			break
		}
		out = d.Add(out[:0], m.Piece(tok))
		os.Stdout.Write(out)
		b.Clear()
		row = b.Add(tok, len(toks)+n, true, 0)
		if err := c.Decode(b); err != nil {
			return err
		}
	}
	os.Stdout.Write(d.Flush(out[:0]))
	total := time.Since(start)
	fmt.Println()
	fmt.Fprintf(os.Stderr, "prompt %d tokens in %v; generated %d tokens at %.1f tokens/s\n", len(toks), prefill.Round(time.Millisecond), n, float64(n)/(total-prefill).Seconds())
	return nil
}
