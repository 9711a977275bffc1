package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/llmux/llmux/models"
)

// defaultPreset is the synthesized model llmux serves when given none.
const defaultPreset = "small"

// cacheDir is where llmux keeps what it makes for itself.
func cacheDir() string {
	if d := os.Getenv("LLMUX_CACHE_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "llmux")
	}
	return filepath.Join(os.TempDir(), "llmux")
}

// resolveModel maps a --model value to a file: "" is the embedded default
// model, "synth:NAME" a synthesized preset, anything else a GGUF path.
// Synthesized models are made on first use in the cache directory; their
// weights are random, so they exercise the server but write no sense.
// name is the preset's model name for synthesized models, else "".
func resolveModel(arg string) (path, name string, synthesized bool, err error) {
	preset, ok := strings.CutPrefix(arg, "synth:")
	if arg == "" {
		preset, ok = defaultPreset, true
	}
	if !ok {
		return arg, "", false, nil
	}
	cfg, found := models.Presets[preset]
	if !found {
		return "", "", false, fmt.Errorf("no synthesized preset %q (have %v)", preset, models.PresetNames())
	}
	path = filepath.Join(cacheDir(), "models", fmt.Sprintf("%s-v%d.gguf", cfg.Name, models.SynthVersion))
	if _, err := os.Stat(path); err == nil {
		return path, cfg.Name, true, nil
	}
	bar := newProgressBar("synthesizing " + cfg.Name)
	if err := models.Synthesize(path, cfg, func(d, t int64) { bar.Set(float64(d) / float64(max(t, 1))) }); err != nil {
		bar.Done("failed")
		return "", "", false, err
	}
	bar.Done("done: " + path)
	return path, cfg.Name, true, nil
}
