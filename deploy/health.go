package deploy

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Checker is a Go deployment that can say whether it is healthy (Ray
// Serve's check_health): Handle.Run calls Check on each replica every
// HealthCheckPeriod, and a replica whose check fails, panics or outlasts
// HealthCheckTimeout is replaced — a new one is built and the failed one
// drains (it takes no new call and is closed after its last).
type Checker interface {
	Check(ctx context.Context) error
}

// Health check defaults, as Ray Serve's.
const (
	DefaultHealthCheckPeriod  = 10 * time.Second
	DefaultHealthCheckTimeout = 30 * time.Second
)

// checkHealth checks every serving replica once and replaces the ones
// that fail.
func (h *Handle) checkHealth(ctx context.Context) {
	h.mu.Lock()
	reps := slices.Clone(h.reps)
	h.mu.Unlock()
	for _, r := range reps {
		c, ok := r.d.(Checker)
		if !ok {
			continue
		}
		r.mu.Lock()
		draining := r.draining
		r.mu.Unlock()
		if draining {
			continue
		}
		if err := check(ctx, c, h.healthTimeout); err != nil {
			if ctx.Err() != nil {
				return
			}
			h.log.Warn("replica failed its health check; replacing it", "deployment", h.name, "replica", r.name, "err", err)
			h.replace(r)
		}
	}
}

// check runs one health check, bounded by timeout; a panic fails it.
func check(ctx context.Context, c Checker, timeout time.Duration) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("the health check panicked: %v", p)
			}
		}()
		done <- c.Check(ctx)
	}()
	select {
	case err = <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the health check did not answer within %v", timeout)
	}
}

// replace builds a replica in place of r, then drains r.
func (h *Handle) replace(r *goReplica) {
	h.scaleMu.Lock()
	defer h.scaleMu.Unlock()
	fresh, err := h.newReplica()
	if err != nil {
		h.log.Error("could not build a replacement replica; the unhealthy one stays", "deployment", h.name, "replica", r.name, "err", err)
		return
	}
	h.mu.Lock()
	h.reps = append(h.reps, fresh)
	r.mu.Lock()
	r.draining = true
	idle := r.ongoing == 0 && !r.closed
	if idle {
		r.closed = true
	}
	r.mu.Unlock()
	if idle {
		h.reps = slices.DeleteFunc(h.reps, func(x *goReplica) bool { return x == r })
	}
	h.signal()
	h.mu.Unlock()
	if idle {
		closeDeployment(r.d)
	}
}
