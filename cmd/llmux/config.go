package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/config"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/multiplex"
)

// defaultRegistry returns the deployment and middleware kinds that the
// config file's applications may name: the one place where the shipped
// kinds are registered.
func defaultRegistry() *app.Registry {
	return app.Builtin()
}

// configFile is llmux serve's config file, parsed.
type configFile = config.File[multiplex.ModelConfig]

// readConfig reads and checks the config file at path. With catalog set
// the models of llm deployments must be in its models: list (llmux config
// validate; serve checks them against its whole catalog).
func readConfig(path string, reg *app.Registry, catalog bool) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(path, data, reg, catalog)
}

// parseConfig checks a config file's contents; name is for messages.
func parseConfig(name string, data []byte, reg *app.Registry, catalog bool) (*configFile, error) {
	opts := config.Options[multiplex.ModelConfig]{Flags: newServeFlags().fs, NotKeys: []string{"config", "f"}, Registry: reg}
	if catalog {
		opts.ModelNames = modelNames
	}
	f, probs := config.Parse(name, data, opts)
	if len(probs) > 0 {
		return f, fmt.Errorf("config %s: %d problem(s):\n%w", name, len(probs), probs)
	}
	return f, nil
}

// modelNames are the names a models: entry is served under, as the
// catalog names it: its name (else the preset's, the ollama name or the
// file's stem), its aliases, and its adapters alone and under the base.
func modelNames(m multiplex.ModelConfig) []string {
	name := m.Name
	if name == "" {
		switch preset, synth := strings.CutPrefix(m.Path, "synth:"); {
		case synth:
			name = preset
			if p, ok := models.Presets[preset]; ok {
				name = p.Name
			}
		case !strings.HasSuffix(m.Path, ".gguf") && !strings.ContainsAny(m.Path, `/\`):
			name = m.Path // an ollama model name
		default:
			name = strings.TrimSuffix(filepath.Base(m.Path), ".gguf")
		}
	}
	out := append([]string{name}, m.Aliases...)
	for _, a := range m.Adapters {
		out = append(out, a.Name, name+":"+a.Name)
	}
	return out
}

// shadowedKey is a config file key that a flag or an environment
// variable overrides.
type shadowedKey struct {
	key    string // as the file writes it
	source string // "flag --port", "env LLMUX_PORT"
}

// logShadowed says once, at start, which file keys do not apply.
func (f *serveFlags) logShadowed(logger *slog.Logger) {
	for _, s := range f.shadowed {
		logger.Info("config key shadowed by flag", "key", s.key, "source", s.source, "file", *f.config)
	}
}
