// Package autoscale decides how many replicas a deployment should run
// from the requests it has in flight, with Ray Serve's autoscaling
// settings and their meanings: a deployment aims at a number of ongoing
// requests per replica (target_ongoing_requests), within
// [min_replicas, max_replicas]; it grows only after the load has asked
// for more replicas for upscale_delay and shrinks only after it has asked
// for fewer for downscale_delay, moving part of the way at each step
// (upscaling_factor, downscaling_factor); the load is averaged over a
// look-back window.
//
// Decide is the whole policy, a pure function over plain values. An
// Autoscaler is the loop that samples a deployment's load, calls Decide
// and asks the deployment to scale (replica.Set for LLM deployments,
// deploy.Handle for Go deployments).
package autoscale

import (
	"errors"
	"fmt"
	"math"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is a deployment's autoscaling configuration. Its fields are
// taken as they are: start from DefaultConfig, whose values are Ray
// Serve's defaults, and change what you need (decoding YAML onto
// DefaultConfig() keeps the defaults of the keys not given; durations
// are Go durations such as "30s", where Ray Serve counts seconds).
type Config struct {
	// MinReplicas and MaxReplicas bound the replicas. MinReplicas 0 lets
	// the deployment scale to zero when it has no requests; a request
	// arriving then starts a replica at once (no delay).
	MinReplicas int `yaml:"min_replicas"`
	MaxReplicas int `yaml:"max_replicas"`
	// InitialReplicas is how many replicas start (nil: MinReplicas).
	InitialReplicas *int `yaml:"initial_replicas,omitempty"`
	// TargetOngoingRequests is the load each replica should carry:
	// requests running on it or queued for it.
	TargetOngoingRequests float64 `yaml:"target_ongoing_requests"`
	// UpscaleDelay is how long the load must keep asking for more
	// replicas before they are added; DownscaleDelay the same for fewer.
	UpscaleDelay   time.Duration `yaml:"upscale_delay"`
	DownscaleDelay time.Duration `yaml:"downscale_delay"`
	// UpscalingFactor and DownscalingFactor smooth each step: 1 moves all
	// the way to what the load asks for, 0.5 half of the way (0: 1).
	UpscalingFactor   float64 `yaml:"upscaling_factor,omitempty"`
	DownscalingFactor float64 `yaml:"downscaling_factor,omitempty"`
	// LookBackPeriod is the window over which the load is averaged (0:
	// the latest sample alone).
	LookBackPeriod time.Duration `yaml:"look_back_period"`
	// MetricsInterval is how often the load is sampled and a decision
	// made (0: one second). Ray Serve samples every 10 s because its
	// replicas push their metrics over the network; here sampling reads
	// a counter in this process.
	MetricsInterval time.Duration `yaml:"metrics_interval,omitempty"`
}

// Ray Serve's defaults.
const (
	DefaultTargetOngoingRequests = 2
	DefaultUpscaleDelay          = 30 * time.Second
	DefaultDownscaleDelay        = 600 * time.Second
	DefaultLookBackPeriod        = 30 * time.Second
	DefaultMetricsInterval       = time.Second
)

// DefaultConfig is Ray Serve's default autoscaling configuration: one
// replica at least and at most, two ongoing requests per replica, 30 s
// before adding replicas, 10 minutes before removing them, a 30 s window.
func DefaultConfig() Config {
	return Config{
		MinReplicas: 1, MaxReplicas: 1,
		TargetOngoingRequests: DefaultTargetOngoingRequests,
		UpscaleDelay:          DefaultUpscaleDelay, DownscaleDelay: DefaultDownscaleDelay,
		UpscalingFactor: 1, DownscalingFactor: 1,
		LookBackPeriod: DefaultLookBackPeriod, MetricsInterval: DefaultMetricsInterval,
	}
}

// Validate reports every inconsistent setting.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MinReplicas < 0 {
		bad("min_replicas is %d: it must be 0 or more", c.MinReplicas)
	}
	if c.MaxReplicas < 1 {
		bad("max_replicas is %d: it must be 1 or more", c.MaxReplicas)
	}
	if c.MinReplicas > c.MaxReplicas && c.MaxReplicas >= 1 {
		bad("min_replicas (%d) is more than max_replicas (%d)", c.MinReplicas, c.MaxReplicas)
	}
	if c.InitialReplicas != nil {
		if n := *c.InitialReplicas; n < c.MinReplicas || n > c.MaxReplicas {
			bad("initial_replicas (%d) is outside [min_replicas, max_replicas] = [%d, %d]", n, c.MinReplicas, c.MaxReplicas)
		}
	}
	if !(c.TargetOngoingRequests > 0) || math.IsInf(c.TargetOngoingRequests, 0) {
		bad("target_ongoing_requests is %v: it must be a number above 0", c.TargetOngoingRequests)
	}
	if c.UpscaleDelay < 0 {
		bad("upscale_delay is %v: it must not be negative", c.UpscaleDelay)
	}
	if c.DownscaleDelay < 0 {
		bad("downscale_delay is %v: it must not be negative", c.DownscaleDelay)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"upscaling_factor", c.UpscalingFactor}, {"downscaling_factor", c.DownscalingFactor}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			bad("%s is %v: it must be a number above 0 (0: 1)", f.name, f.v)
		}
	}
	if c.LookBackPeriod < 0 {
		bad("look_back_period is %v: it must not be negative", c.LookBackPeriod)
	}
	if c.MetricsInterval < 0 {
		bad("metrics_interval is %v: it must not be negative", c.MetricsInterval)
	}
	if len(errs) > 0 {
		return fmt.Errorf("autoscaling: %w", errors.Join(errs...))
	}
	return nil
}

// Initial is how many replicas the deployment starts with.
func (c Config) Initial() int {
	if c.InitialReplicas != nil {
		return *c.InitialReplicas
	}
	return c.MinReplicas
}

func (c Config) interval() time.Duration {
	if c.MetricsInterval > 0 {
		return c.MetricsInterval
	}
	return DefaultMetricsInterval
}

func factor(f float64) float64 {
	if f > 0 {
		return f
	}
	return 1
}

func (c Config) clamp(n int) int { return max(c.MinReplicas, min(c.MaxReplicas, n)) }

// Sample is the deployment's load at one moment: every request running
// on one of its replicas or queued for one (in the replica or in front
// of the deployment).
type Sample struct {
	At      time.Time
	Ongoing float64
}

// Wish is which way the load pushes the replica count.
type Wish int

const (
	Content Wish = 0  // the load fits the replicas
	More    Wish = 1  // the load asks for more replicas
	Fewer   Wish = -1 // the load asks for fewer replicas
)

func (w Wish) String() string {
	switch w {
	case More:
		return "more"
	case Fewer:
		return "fewer"
	}
	return "content"
}

// State is what Decide carries from one decision to the next: which way
// the load pushes, and since when it has pushed that way without a break.
type State struct {
	Wish  Wish
	Since time.Time
}

// Input is what one decision looks at.
type Input struct {
	Now time.Time
	// Replicas is the deployment's current target: replicas running or
	// starting, not those being removed.
	Replicas int
	// Samples are the recent loads, oldest first; those older than the
	// look-back window are ignored.
	Samples []Sample
	State   State
}

// Decision is Decide's answer: the replicas the deployment should have
// now, and the state to pass to the next decision.
type Decision struct {
	Replicas int
	State    State
	// Load is the averaged load the decision was made on; Wants is what
	// the load alone asks for, before the delays.
	Load  float64
	Wants int
}

// Decide is the autoscaling policy:
//
//   - The load is the mean of the samples in the look-back window (the
//     latest sample when none is in it).
//   - What the load asks for is current × (1 + (load/(target × current)
//     − 1) × factor), rounded up, with the upscaling factor when the
//     load is above the target and the downscaling factor below it; with
//     no load at all and a factor too small to move, one fewer. It is
//     kept within [MinReplicas, MaxReplicas].
//   - The replicas change to what the load asks for only once it has
//     asked for more (or fewer) for UpscaleDelay (DownscaleDelay)
//     without a break: a decision in between that asks otherwise starts
//     the wait again, so the count does not swing back and forth within
//     the delays. Each change starts a new wait.
//   - At zero replicas, a request waiting (the latest sample above zero)
//     starts replicas at once, whatever the delay.
//   - A count outside the bounds (the bounds changed) is brought inside
//     them at once.
func Decide(c Config, in Input) Decision {
	cur := in.Replicas
	if len(in.Samples) == 0 {
		return Decision{Replicas: c.clamp(cur), Wants: c.clamp(cur)}
	}
	latest := in.Samples[len(in.Samples)-1].Ongoing
	load := average(in.Samples, in.Now, c.LookBackPeriod)
	if cur == 0 && latest > 0 {
		// Scale from zero: a request is waiting for a replica.
		n := c.clamp(max(1, c.wants(1, max(load, latest))))
		return Decision{Replicas: n, Load: load, Wants: n}
	}
	want := c.clamp(c.wants(cur, load))
	d := Decision{Replicas: cur, Load: load, Wants: want}
	if cur < c.MinReplicas || cur > c.MaxReplicas {
		d.Replicas = c.clamp(cur)
		return d
	}
	wish, delay := Content, time.Duration(0)
	switch {
	case want > cur:
		wish, delay = More, c.UpscaleDelay
	case want < cur:
		wish, delay = Fewer, c.DownscaleDelay
	default:
		return d
	}
	st := in.State
	if st.Wish != wish || st.Since.IsZero() || st.Since.After(in.Now) {
		st = State{Wish: wish, Since: in.Now}
	}
	if in.Now.Sub(st.Since) >= delay {
		d.Replicas = want
		return d // a new wait starts with the next wish
	}
	d.State = st
	return d
}

// wants is what a load asks of cur replicas, before the bounds.
func (c Config) wants(cur int, load float64) int {
	if cur <= 0 {
		return 0 // only a waiting request starts replicas from zero (Decide)
	}
	ratio := load / (c.TargetOngoingRequests * float64(cur))
	f := factor(c.DownscalingFactor)
	if ratio >= 1 {
		f = factor(c.UpscalingFactor)
	}
	// The small subtraction keeps a float sum just above an integer
	// (4.0000000001 replicas) from asking for one more.
	n := int(math.Ceil(float64(cur)*(1+(ratio-1)*f) - 1e-9))
	if load == 0 && n >= cur {
		n = cur - 1 // no load: at least one fewer, however small the factor
	}
	return max(n, 0)
}

// average is the mean load of the samples taken within window before
// now; the latest sample when none was.
func average(samples []Sample, now time.Time, window time.Duration) float64 {
	sum, n := 0.0, 0
	if window > 0 {
		from := now.Add(-window)
		for _, s := range samples {
			if !s.At.Before(from) && !s.At.After(now) {
				sum += s.Ongoing
				n++
			}
		}
	}
	if n == 0 {
		return samples[len(samples)-1].Ongoing
	}
	return sum / float64(n)
}

// UnmarshalYAML decodes a config over Ray Serve's defaults, so that a file
// gives only the keys it changes (as an autoscaling_config does).
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	type plain Config // without this method
	p := plain(DefaultConfig())
	if err := n.Decode(&p); err != nil {
		return err
	}
	*c = Config(p)
	return nil
}
