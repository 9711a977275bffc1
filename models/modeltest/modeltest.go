// Package modeltest gives tests the models they run on: synthesized models
// (made once per machine and cached in the temp directory) and the real
// stories260K model from ../shared/models, when it is there.
package modeltest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/llmux/llmux/models"
)

// Synth returns the path of a model synthesized from cfg, making it on first
// use. Identical configs share one file.
func Synth(tb testing.TB, cfg models.SynthConfig) string {
	tb.Helper()
	key, _ := json.Marshal(struct {
		V   int
		Cfg models.SynthConfig
	}{models.SynthVersion, cfg})
	sum := sha256.Sum256(key)
	path := filepath.Join(cacheDir(tb), "synth-"+hex.EncodeToString(sum[:8])+".gguf")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := models.Synthesize(path, cfg, nil); err != nil {
		tb.Fatalf("synthesize %+v: %v", cfg, err)
	}
	return path
}

// Preset returns the path of a synthesized preset model ("tiny", "small", "bench").
func Preset(tb testing.TB, name string) string {
	tb.Helper()
	cfg, ok := models.Presets[name]
	if !ok {
		tb.Fatalf("no preset %q", name)
	}
	return Synth(tb, cfg)
}

// LoRA returns the path of a LoRA adapter synthesized for the base model.
func LoRA(tb testing.TB, base string, cfg models.LoRAConfig) string {
	tb.Helper()
	info, err := models.Inspect(base)
	if err != nil {
		tb.Fatalf("inspect base: %v", err)
	}
	key, _ := json.Marshal(struct {
		V    int
		Base string
		Cfg  models.LoRAConfig
	}{models.SynthVersion, base, cfg})
	sum := sha256.Sum256(key)
	path := filepath.Join(cacheDir(tb), "lora-"+hex.EncodeToString(sum[:8])+".gguf")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := models.SynthesizeLoRA(path, info, cfg, nil); err != nil {
		tb.Fatalf("synthesize lora: %v", err)
	}
	return path
}

// Stories returns the path of ../shared/models/stories260K.gguf (relative to
// the module root), or skips the test with a message when it is absent.
func Stories(tb testing.TB) string {
	tb.Helper()
	p := StoriesPath()
	if p == "" {
		tb.Skip("real-model test skipped: ../shared/models/stories260K.gguf is absent (it sits beside the repository in CI)")
	}
	return p
}

// StoriesPath is the stories260K path, or "" when absent.
func StoriesPath() string {
	root := moduleRoot()
	if root == "" {
		return ""
	}
	p := filepath.Join(root, "..", "shared", "models", "stories260K.gguf")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func cacheDir(tb testing.TB) string {
	dir := filepath.Join(os.TempDir(), "llmux-test-models")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("cache dir: %v", err)
	}
	return dir
}
