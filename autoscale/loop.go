package autoscale

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Target is a deployment an Autoscaler scales.
type Target interface {
	// Ongoing is the requests running on the deployment's replicas or
	// waiting for one, now.
	Ongoing() int
	// Scale asks for n replicas: it starts replicas (which take requests
	// once ready) or drains some (they take no new requests, finish
	// those they have, then stop). It is called after every decision,
	// also when n has not changed, so a target may retry what failed.
	Scale(n int)
}

// Status is what an autoscaler is doing, for status pages.
type Status struct {
	MinReplicas           int     `json:"min_replicas"`
	MaxReplicas           int     `json:"max_replicas"`
	TargetOngoingRequests float64 `json:"target_ongoing_requests"`
	// Replicas is the count the autoscaler asks for now.
	Replicas int `json:"target_replicas"`
	// Load is the averaged ongoing requests of the last decision; Wants
	// what that load asks for, and Wish/Since which way it has pushed
	// and since when (the delays count from Since).
	Load  float64    `json:"ongoing_requests"`
	Wants int        `json:"wants_replicas"`
	Wish  string     `json:"wish"`
	Since *time.Time `json:"since,omitempty"`
}

// Autoscaler samples a target's load every MetricsInterval (and when
// poked), decides with Decide and applies the decision.
type Autoscaler struct {
	name string
	cfg  Config
	t    Target
	log  *slog.Logger
	poke chan struct{} // 1-slot wake: a request waits with no replica

	mu     sync.Mutex // guards status and last
	status Status
	last   int // the replicas of the last run's last decision (-1: none yet)
}

// New describes an autoscaler for the deployment called name; Run runs it.
func New(name string, cfg Config, t Target, log *slog.Logger) *Autoscaler {
	if log == nil {
		log = slog.Default()
	}
	return &Autoscaler{name: name, cfg: cfg, t: t, log: log, poke: make(chan struct{}, 1), last: -1,
		status: Status{MinReplicas: cfg.MinReplicas, MaxReplicas: cfg.MaxReplicas, TargetOngoingRequests: cfg.TargetOngoingRequests,
			Replicas: cfg.Initial(), Wants: cfg.Initial(), Wish: Content.String()}}
}

// Config is the autoscaler's configuration.
func (a *Autoscaler) Config() Config { return a.cfg }

// Poke makes the autoscaler decide now rather than at its next tick: the
// target calls it when a request arrives and no replica is there to take
// it (scale from zero). It never blocks.
func (a *Autoscaler) Poke() {
	select {
	case a.poke <- struct{}{}:
	default:
	}
}

// Status reports the last decision.
func (a *Autoscaler) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Replicas is the count the autoscaler asks for now.
func (a *Autoscaler) Replicas() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status.Replicas
}

// Run scales the target until ctx ends. It returns the configuration's
// error, if any, at once.
func (a *Autoscaler) Run(ctx context.Context) error {
	if err := a.cfg.Validate(); err != nil {
		return err
	}
	// A later run (after a config reload kept the deployment) goes on from
	// where the last one left the replicas, not from the initial count.
	a.mu.Lock()
	cur := a.last
	a.mu.Unlock()
	if cur < 0 {
		cur = a.cfg.Initial()
	}
	a.t.Scale(cur)
	tick := time.NewTicker(a.cfg.interval())
	defer tick.Stop()
	var samples []Sample
	var st State
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-a.poke:
		}
		now := time.Now()
		samples = append(prune(samples, now.Add(-a.cfg.LookBackPeriod)), Sample{At: now, Ongoing: float64(a.t.Ongoing())})
		d := Decide(a.cfg, Input{Now: now, Replicas: cur, Samples: samples, State: st})
		st = d.State
		if d.Replicas != cur {
			a.log.Info("autoscaling", "deployment", a.name, "from", cur, "to", d.Replicas, "ongoing_requests", d.Load)
			cur = d.Replicas
		}
		a.mu.Lock()
		a.last = cur
		a.mu.Unlock()
		a.t.Scale(cur)
		s := Status{MinReplicas: a.cfg.MinReplicas, MaxReplicas: a.cfg.MaxReplicas, TargetOngoingRequests: a.cfg.TargetOngoingRequests,
			Replicas: cur, Load: d.Load, Wants: d.Wants, Wish: st.Wish.String()}
		if st.Wish != Content {
			since := st.Since
			s.Since = &since
		}
		a.mu.Lock()
		a.status = s
		a.mu.Unlock()
	}
}

// prune drops the samples taken before from, keeping the latest one.
func prune(samples []Sample, from time.Time) []Sample {
	i := 0
	for i < len(samples)-1 && samples[i].At.Before(from) {
		i++
	}
	return append(samples[:0], samples[i:]...)
}
