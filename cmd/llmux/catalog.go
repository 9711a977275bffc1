package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/llmux/llmux/multiplex"
)

// listFlag is a repeatable flag; a value from the environment or the
// config file may hold several, comma-separated.
type listFlag struct{ v []string }

func (l *listFlag) String() string { return strings.Join(l.v, ",") }

func (l *listFlag) Set(s string) error {
	l.v = append(l.v, splitComma(s)...)
	return nil
}

// loraFlag is the repeatable --lora name=N,base=B,path=P[,scale=S]. Unlike
// listFlag it does not split its value at commas.
type loraFlag struct{ v []loraArg }

type loraArg struct {
	base    string
	adapter multiplex.AdapterConfig
}

func (l *loraFlag) String() string { return fmt.Sprint(len(l.v), " adapters") }

func (l *loraFlag) Set(s string) error {
	var a loraArg
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return fmt.Errorf("--lora %q: want name=N,base=B,path=P[,scale=S]", s)
		}
		switch k {
		case "name":
			a.adapter.Name = v
		case "base":
			a.base = v
		case "path":
			a.adapter.Path = v
		case "scale":
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("--lora %q: scale: %v", s, err)
			}
			a.adapter.Scale = x
		default:
			return fmt.Errorf("--lora %q: unknown key %q (want name, base, path, scale)", s, k)
		}
	}
	if a.base == "" || a.adapter.Path == "" {
		return fmt.Errorf("--lora %q: base and path are required", s)
	}
	l.v = append(l.v, a)
	return nil
}

// attach adds each --lora adapter to the configured model it names (by
// its name, or the file name of a model given without one).
func (l *loraFlag) attach(list []multiplex.ModelConfig) error {
	for _, a := range l.v {
		found := false
		for i := range list {
			m := &list[i]
			name := m.Name
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(m.Path), ".gguf")
			}
			if name == a.base {
				m.Adapters = append(m.Adapters, a.adapter)
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("--lora base=%s: no configured model has that name (name it with --model %s=PATH)", a.base, a.base)
		}
	}
	return nil
}

// catalog builds the servable names from --model, the config's models:
// list, --models-dir and the ollama store. With nothing configured it
// serves the embedded synthesized model. A single configured model is
// pinned: loaded at start and never evicted, as a one-model server
// expects.
func (f *serveFlags) catalog(logger *slog.Logger) (*multiplex.Catalog, error) {
	var list []multiplex.ModelConfig
	for _, arg := range f.model.v {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || strings.ContainsAny(name, `/\`) {
			name, path = "", arg
		}
		list = append(list, multiplex.ModelConfig{Name: name, Path: path})
	}
	if len(f.model.v) == 1 && *f.modelName != "" {
		list[0].Name = *f.modelName
	}
	list = append(list, f.models...)
	if len(list) == 0 && len(f.modelsDir.v) == 0 {
		list = append(list, multiplex.ModelConfig{Path: "synth:" + defaultPreset})
	}
	for i := range list {
		m := &list[i]
		if !strings.HasPrefix(m.Path, "synth:") {
			continue
		}
		path, synthName, _, err := resolveModel(m.Path)
		if err != nil {
			return nil, err
		}
		if m.Name == "" {
			m.Name = synthName
		}
		m.Path = path
		logger.Warn("serving a synthesized model: its weights are random, so it writes no sensible text; pass --model FILE.gguf for a real model", "model", m.Name)
	}
	if len(list) == 1 && len(f.modelsDir.v) == 0 {
		list[0].Pinned = true
	}
	if err := f.lora.attach(list); err != nil {
		return nil, err
	}
	ollama := *f.ollamaModels
	if ollama == "" {
		home, _ := os.UserHomeDir()
		ollama = multiplex.DefaultOllamaDir(os.Getenv("OLLAMA_MODELS"), home)
	}
	c, err := multiplex.NewCatalog(multiplex.CatalogOptions{Models: list, ModelsDirs: f.modelsDir.v, OllamaDir: ollama, AdapterDirs: f.loraDir.v})
	if err != nil {
		return nil, err
	}
	for _, s := range c.Skipped() {
		logger.Warn("not serving", "why", s)
	}
	return c, nil
}

// parseBytes reads a size such as 512MiB, 12GiB, 8G or 1000000 (bytes).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 512MiB, 12GiB)", s)
	}
	return int64(v * mult), nil
}
