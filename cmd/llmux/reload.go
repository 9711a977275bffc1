package main

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/config"
)

// reloader re-reads the config file when asked (SIGHUP): a valid file
// replaces the current one, and what changed is logged and handed to
// onReload; an invalid one is logged with its problems and ignored.
type reloader struct {
	path     string
	registry *app.Registry
	logger   *slog.Logger
	// current is the file in force; only the run goroutine touches it.
	current *configFile
	// onReload, when set, applies the new applications.
	onReload func(old, new []app.Spec)
}

// watchConfig starts re-reading f's config file on each SIGHUP until ctx
// ends. The handler is installed when it returns.
func watchConfig(ctx context.Context, f *serveFlags, logger *slog.Logger, onReload func(old, new []app.Spec)) {
	if f.file == nil {
		return
	}
	r := &reloader{path: *f.config, registry: defaultRegistry(), logger: logger, current: f.file, onReload: onReload}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		r.run(ctx, hup)
	}()
}

func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload()
		}
	}
}

// reload re-reads the file and reports whether it took it.
func (r *reloader) reload() bool {
	r.logger.Info("config reload", "file", r.path)
	f, err := readConfig(r.path, r.registry, false)
	if err != nil {
		var probs config.Problems
		if !errors.As(err, &probs) {
			r.logger.Error("config reload failed: the running config stays", "file", r.path, "err", err)
			return false
		}
		r.logger.Error("config reload failed: the running config stays", "file", r.path, "problems", len(probs))
		for _, p := range probs {
			r.logger.Error("config problem", "problem", p.String())
		}
		return false
	}
	old := r.current
	r.current = f
	logDiff(r.logger, app.Compare(old.Applications, f.Applications))
	// The flat keys and models: are read at start only.
	for _, k := range slices.Sorted(maps.Keys(unionKeys(old.Flat, f.Flat))) {
		if old.Flat[k] != f.Flat[k] {
			r.logger.Warn("config key changed: it applies after a restart", "key", k, "was", old.Flat[k], "now", f.Flat[k])
		}
	}
	if !reflect.DeepEqual(old.Models, f.Models) {
		r.logger.Warn("config models: changed: the catalog changes after a restart")
	}
	if r.onReload != nil {
		r.onReload(old.Applications, f.Applications)
	}
	return true
}

func unionKeys(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// logDiff says what changed in the applications.
func logDiff(logger *slog.Logger, d app.Diff) {
	if d.Empty() {
		logger.Info("config reload: applications unchanged")
		return
	}
	for _, n := range d.Added {
		logger.Info("config reload: application added", "application", n)
	}
	for _, n := range d.Removed {
		logger.Info("config reload: application removed", "application", n)
	}
	for _, c := range d.Changed {
		if len(c.Fields) > 0 {
			logger.Info("config reload: application changed", "application", c.Name, "fields", strings.Join(c.Fields, ","))
		}
		for _, n := range c.Added {
			logger.Info("config reload: deployment added", "application", c.Name, "deployment", n)
		}
		for _, n := range c.Removed {
			logger.Info("config reload: deployment removed", "application", c.Name, "deployment", n)
		}
		for _, dc := range c.Changed {
			logger.Info("config reload: deployment changed", "application", c.Name, "deployment", dc.Name, "fields", strings.Join(dc.Fields, ","))
		}
	}
}
