package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
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
	mu       sync.Mutex // a SIGHUP and POST /-/apply take turns
	// current is the file in force.
	current *configFile
	// onReload, when set, applies the new applications; when it fails,
	// the old config stays in force.
	onReload func(old, new []app.Spec) error
}

// watchConfig starts re-reading f's config file on each SIGHUP until ctx
// ends (the handler is installed when it returns), and returns the
// reloader, whose apply takes a file sent to POST /-/apply.
func watchConfig(ctx context.Context, f *serveFlags, logger *slog.Logger, onReload func(old, new []app.Spec) error) *reloader {
	r := &reloader{registry: defaultRegistry(), logger: logger, current: f.file, onReload: onReload}
	if f.file == nil {
		r.current = &configFile{}
		return r
	}
	r.path = *f.config
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		r.run(ctx, hup)
	}()
	return r
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
	data, err := os.ReadFile(r.path)
	if err == nil {
		_, err = r.apply(r.path, data)
	}
	if err != nil {
		r.logger.Error("config reload failed: the running config stays", "file", r.path, "err", err)
		return false
	}
	return true
}

// apply checks a config file's contents and, when they are valid, makes
// its applications the running ones; what changed is logged and returned.
// The flat keys and models: are read at start only: a change to them is
// logged as needing a restart. An invalid file changes nothing; its
// problems are in the error (config.Problems).
func (r *reloader) apply(name string, data []byte) (app.Diff, error) {
	f, err := parseConfig(name, data, r.registry, false)
	if err != nil {
		var probs config.Problems
		if errors.As(err, &probs) {
			for _, p := range probs {
				r.logger.Error("config problem", "problem", p.String())
			}
		}
		return app.Diff{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current
	if r.onReload != nil {
		if err := r.onReload(old.Applications, f.Applications); err != nil {
			return app.Diff{}, fmt.Errorf("the applications could not be built, the running ones stay: %w", err)
		}
	}
	r.current = f
	diff := app.Compare(old.Applications, f.Applications)
	logDiff(r.logger, diff)
	for _, k := range slices.Sorted(maps.Keys(unionKeys(old.Flat, f.Flat))) {
		if old.Flat[k] != f.Flat[k] {
			r.logger.Warn("config key changed: it applies after a restart", "key", k, "was", old.Flat[k], "now", f.Flat[k])
		}
	}
	if !reflect.DeepEqual(old.Models, f.Models) {
		r.logger.Warn("config models: changed: the catalog changes after a restart")
	}
	return diff, nil
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
