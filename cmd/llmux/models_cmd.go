package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/llmux/llmux/chat"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models"
)

func runModels(ctx context.Context, args []string) error {
	sub := []command{
		{"synth", "write a synthesized llama model (random weights)", runSynth},
		{"synth-lora", "write a synthesized LoRA adapter for a base model", runSynthLoRA},
		{"inspect", "print a GGUF file's metadata and memory estimate", runInspect},
		{"presets", "list the synthesized model presets", runPresets},
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(os.Stdout, "llmux models", sub)
		return nil
	}
	for _, c := range sub {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	usage(os.Stderr, "llmux models", sub)
	return fmt.Errorf("unknown models command %q", args[0])
}

func runSynth(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("models synth", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: llmux models synth [flags] OUTPUT.gguf\n\nWrites a llama-architecture model with deterministic random weights.\nFlags override the preset's values.")
		fs.PrintDefaults()
	}
	preset := fs.String("preset", "tiny", "starting shape: "+strings.Join(models.PresetNames(), ", "))
	name := fs.String("name", "", "general.name")
	layers := fs.Int("layers", 0, "transformer blocks")
	embd := fs.Int("embedding", 0, "hidden width")
	heads := fs.Int("heads", 0, "attention heads")
	headsKV := fs.Int("heads-kv", 0, "KV heads (grouped-query attention)")
	ffn := fs.Int("ffn", 0, "feed-forward width")
	ctxLen := fs.Int("context", 0, "trained context length")
	vocab := fs.Int("vocab", 0, "vocabulary size")
	typ := fs.String("type", "", "tensor type: F32, F16, Q8_0, Q4_0")
	seed := fs.Uint64("seed", 0, "weights seed (0: the preset's)")
	noBytes := fs.Bool("no-byte-tokens", false, "leave the 256 byte-fallback tokens out of the vocab (output is always valid UTF-8)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("models synth: want one output path")
	}
	cfg, ok := models.Presets[*preset]
	if !ok {
		return fmt.Errorf("models synth: no preset %q", *preset)
	}
	setIf := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setIf(&cfg.Layers, *layers)
	setIf(&cfg.Embedding, *embd)
	setIf(&cfg.Heads, *heads)
	setIf(&cfg.HeadsKV, *headsKV)
	setIf(&cfg.FFN, *ffn)
	setIf(&cfg.Context, *ctxLen)
	setIf(&cfg.Vocab, *vocab)
	if *name != "" {
		cfg.Name = *name
	}
	if *typ != "" {
		t, err := models.ParseTensorType(*typ)
		if err != nil {
			return err
		}
		cfg.Type = t
	}
	if *seed != 0 {
		cfg.Seed = *seed
	}
	if *noBytes {
		cfg.ByteTokens = false
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("models synth: %w", err)
	}
	out := fs.Arg(0)
	bar := newProgressBar(fmt.Sprintf("writing %s (%.1fM parameters, %s)", out, float64(cfg.Parameters())/1e6, cfg.Type))
	if err := models.Synthesize(out, cfg, func(d, t int64) { bar.Set(float64(d) / float64(max(t, 1))) }); err != nil {
		bar.Done("failed")
		return err
	}
	bar.Done("done")
	return nil
}

func runSynthLoRA(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("models synth-lora", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: llmux models synth-lora [flags] --base BASE.gguf OUTPUT.gguf")
		fs.PrintDefaults()
	}
	base := fs.String("base", "", "base model GGUF (synthesized or real)")
	rank := fs.Int("rank", 8, "LoRA rank")
	alpha := fs.Float64("alpha", 0, "LoRA alpha (0: rank)")
	targets := fs.String("targets", "attn_q,attn_v,ffn_up", "comma-separated target tensors")
	seed := fs.Uint64("seed", 1, "weights seed")
	strength := fs.Float64("strength", 0.5, "output scale of the adapter")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *base == "" {
		fs.Usage()
		return fmt.Errorf("models synth-lora: want --base and one output path")
	}
	info, err := models.Inspect(*base)
	if err != nil {
		return err
	}
	cfg := models.LoRAConfig{Rank: *rank, Alpha: float32(*alpha), Targets: strings.Split(*targets, ","), Seed: *seed, Strength: float32(*strength)}
	bar := newProgressBar("writing " + fs.Arg(0))
	if err := models.SynthesizeLoRA(fs.Arg(0), info, cfg, func(d, t int64) { bar.Set(float64(d) / float64(max(t, 1))) }); err != nil {
		bar.Done("failed")
		return err
	}
	bar.Done("done")
	return nil
}

func runInspect(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("models inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	tensors := fs.Bool("tensors", false, "list every tensor")
	ctxLen := fs.Int("ctx", 0, "context for the memory estimate (0: the model's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("models inspect: want one GGUF path")
	}
	info, err := models.Inspect(fs.Arg(0))
	if err != nil {
		return err
	}
	var format *llm.ChatFormat
	if info.Kind != "adapter" {
		// The file alone: a config's chat_template or an ollama store's
		// layers can choose otherwise when served.
		if fm, err := chat.Choose(chat.Facts{Architecture: info.Architecture, GGUFTemplate: info.ChatTemplate}); err == nil {
			format = &fm.Info
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*models.Info
			Chat *llm.ChatFormat `json:"chat,omitempty"`
		}{info, format})
	}
	n := *ctxLen
	if n == 0 {
		n = int(info.ContextLength)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(w, "%s\t%v\n", k, v) }
	row("file", info.Path)
	row("kind", info.Kind)
	row("architecture", info.Architecture)
	if info.Name != "" {
		row("name", info.Name)
	}
	row("parameters", fmt.Sprintf("%d (%.2fM)", info.Parameters, float64(info.Parameters)/1e6))
	row("file type", info.FileType)
	var types []string
	for t, c := range info.TensorTypes {
		types = append(types, fmt.Sprintf("%s×%d", t, c))
	}
	sort.Strings(types)
	row("tensor types", strings.Join(types, " "))
	row("weights", humanBytes(info.WeightsBytes))
	if info.Kind == "adapter" {
		row("adapter", fmt.Sprintf("%s alpha=%g", info.AdapterType, info.LoRAAlpha))
	} else {
		row("context length", info.ContextLength)
		row("layers", info.Layers)
		row("embedding", info.Embedding)
		row("heads / kv heads", fmt.Sprintf("%d / %d", info.Heads, info.HeadsKV))
		row("feed-forward", info.FFN)
		row("vocab", fmt.Sprintf("%d (%s)", info.VocabSize, info.Tokenizer))
		tmpl := "none"
		if info.ChatTemplate != "" {
			tmpl = fmt.Sprintf("yes (%d bytes)", len(info.ChatTemplate))
		}
		row("chat template", tmpl)
		if format != nil {
			row("chat format", chatFormatLine(*format))
		}
		row(fmt.Sprintf("memory @ ctx %d", n), fmt.Sprintf("%s (weights %s + f16 KV %s)", humanBytes(info.MemoryEstimate(n)), humanBytes(info.WeightsBytes), humanBytes(info.KVCacheBytes(n))))
		if d := info.String("general.description"); d != "" {
			row("description", d)
		}
	}
	if *tensors {
		for _, t := range info.Tensors {
			row("  "+t.Name, fmt.Sprintf("%s %v", t.Type, t.Shape))
		}
	}
	return w.Flush()
}

func runPresets(_ context.Context, args []string) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "preset\tparameters\tlayers\tembedding\theads\tffn\tvocab\ttype")
	for _, n := range models.PresetNames() {
		c := models.Presets[n]
		fmt.Fprintf(w, "%s\t%.1fM\t%d\t%d\t%d/%d\t%d\t%d\t%s\n", n, float64(c.Parameters())/1e6, c.Layers, c.Embedding, c.Heads, c.HeadsKV, c.FFN, c.Vocab, c.Type)
	}
	return w.Flush()
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// chatFormatLine describes a chat format in one line.
func chatFormatLine(c llm.ChatFormat) string {
	s := fmt.Sprintf("%s (from %s), tools %s", c.Template, c.Source, c.Tools)
	switch c.Reasoning {
	case "parser":
		s += ", reasoning by the " + c.Parser + " parser"
	case "tags":
		s += ", reasoning in " + strings.Join(c.Tags, " ")
	}
	return s
}
