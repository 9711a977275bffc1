package autoscale

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// loads is one sample per second, the last at now.
func loads(now float64, ongoing ...float64) []Sample {
	out := make([]Sample, len(ongoing))
	for i, o := range ongoing {
		out[i] = Sample{At: at(now - float64(len(ongoing)-1-i)), Ongoing: o}
	}
	return out
}

// cfg is a test configuration: 1..4 replicas, 2 requests each, 10 s to
// grow, 20 s to shrink, a 3 s window.
func cfg(change ...func(*Config)) Config {
	c := DefaultConfig()
	c.MinReplicas, c.MaxReplicas = 1, 4
	c.UpscaleDelay, c.DownscaleDelay, c.LookBackPeriod = 10*time.Second, 20*time.Second, 3*time.Second
	for _, f := range change {
		f(&c)
	}
	return c
}

func TestDecide(t *testing.T) {
	more := func(since float64) State { return State{Wish: More, Since: at(since)} }
	fewer := func(since float64) State { return State{Wish: Fewer, Since: at(since)} }
	cases := []struct {
		name      string
		c         Config
		now       float64
		replicas  int
		samples   []Sample
		state     State
		want      int
		wantState State
	}{
		{"steady at target", cfg(), 100, 2, loads(100, 4, 4, 4), State{}, 2, State{}},
		{"steady a little under target", cfg(), 100, 2, loads(100, 3, 3, 3), State{}, 2, State{}},
		{"steady forgets an old wish", cfg(), 100, 2, loads(100, 4, 4, 4), more(50), 2, State{}},
		{"no samples keeps the count", cfg(), 100, 3, nil, more(50), 3, State{}},

		{"upscale wish starts a wait", cfg(), 100, 1, loads(100, 8, 8, 8), State{}, 1, more(100)},
		{"upscale waits out its delay", cfg(), 105, 1, loads(105, 8, 8, 8), more(100), 1, more(100)},
		{"upscale after the delay", cfg(), 110, 1, loads(110, 8, 8, 8), more(100), 4, State{}},
		{"upscale with no delay", cfg(func(c *Config) { c.UpscaleDelay = 0 }), 100, 1, loads(100, 6, 6, 6), State{}, 3, State{}},
		{"upscale is bounded by max", cfg(func(c *Config) { c.UpscaleDelay = 0 }), 100, 2, loads(100, 40, 40, 40), State{}, 4, State{}},
		{"upscale averages the window", cfg(func(c *Config) { c.UpscaleDelay = 0 }), 100, 1, loads(100, 0, 0, 0, 0, 2, 4, 6), State{}, 2, State{}},
		{"a lone spike is averaged away", cfg(), 100, 2, loads(100, 2, 2, 8), State{}, 2, State{}},

		{"downscale wish starts a wait", cfg(), 100, 4, loads(100, 2, 2, 2), State{}, 4, fewer(100)},
		{"downscale waits out its delay", cfg(), 119, 4, loads(119, 2, 2, 2), fewer(100), 4, fewer(100)},
		{"downscale after the delay", cfg(), 120, 4, loads(120, 2, 2, 2), fewer(100), 1, State{}},
		{"downscale is bounded by min", cfg(func(c *Config) { c.MinReplicas = 2 }), 120, 4, loads(120, 0, 0, 0), fewer(100), 2, State{}},

		{"a flip to upscale restarts the wait", cfg(), 119, 2, loads(119, 9, 9, 9), fewer(100), 2, more(119)},
		{"a flip to downscale restarts the wait", cfg(), 119, 2, loads(119, 0, 0, 0), more(100), 2, fewer(119)},

		{"upscaling factor moves part of the way", cfg(func(c *Config) { c.UpscaleDelay, c.UpscalingFactor = 0, 0.5 }), 100, 1, loads(100, 8, 8, 8), State{}, 3, State{}},
		{"downscaling factor moves part of the way", cfg(func(c *Config) { c.DownscaleDelay, c.DownscalingFactor = 0, 0.5 }), 100, 4, loads(100, 2, 2, 2), State{}, 3, State{}},
		{"a tiny factor still leaves an idle replica", cfg(func(c *Config) { c.DownscaleDelay, c.DownscalingFactor = 0, 0.01 }), 100, 4, loads(100, 0, 0, 0), State{}, 3, State{}},

		{"scale from zero at once", cfg(func(c *Config) { c.MinReplicas = 0 }), 100, 0, loads(100, 0, 0, 1), State{}, 1, State{}},
		{"scale from zero to what the wait asks", cfg(func(c *Config) { c.MinReplicas = 0 }), 100, 0, loads(100, 0, 0, 6), State{}, 3, State{}},
		{"scale from zero ignores a long delay", cfg(func(c *Config) { c.MinReplicas, c.UpscaleDelay = 0, time.Hour }), 100, 0, loads(100, 1), State{}, 1, State{}},
		{"zero stays zero with no request", cfg(func(c *Config) { c.MinReplicas = 0 }), 100, 0, loads(100, 0, 0, 0), State{}, 0, State{}},
		{"zero stays zero after past load", cfg(func(c *Config) { c.MinReplicas = 0 }), 100, 0, loads(100, 3, 3, 0), State{}, 0, State{}},
		{"scale to zero after the delay", cfg(func(c *Config) { c.MinReplicas = 0 }), 120, 1, loads(120, 0, 0, 0), fewer(100), 0, State{}},
		{"scale to zero waits out its delay", cfg(func(c *Config) { c.MinReplicas = 0 }), 110, 1, loads(110, 0, 0, 0), fewer(100), 1, fewer(100)},
		{"no zero unless min is zero", cfg(), 120, 1, loads(120, 0, 0, 0), fewer(100), 1, State{}},

		{"below a raised min at once", cfg(func(c *Config) { c.MinReplicas = 3 }), 100, 1, loads(100, 0), State{}, 3, State{}},
		{"above a lowered max at once", cfg(func(c *Config) { c.MaxReplicas = 2 }), 100, 4, loads(100, 20), State{}, 2, State{}},
	}
	for _, tc := range cases {
		d := Decide(tc.c, Input{Now: at(tc.now), Replicas: tc.replicas, Samples: tc.samples, State: tc.state})
		if d.Replicas != tc.want || d.State != tc.wantState {
			t.Errorf("%s: got %d replicas, state %v since %v; want %d, %v since %v (load %.2f, wants %d)", tc.name,
				d.Replicas, d.State.Wish, d.State.Since.Sub(t0), tc.want, tc.wantState.Wish, tc.wantState.Since.Sub(t0), d.Load, d.Wants)
		}
	}
}

// TestDecideOverTime runs the policy second by second through a load
// that ramps up, holds, dips briefly, flickers and goes away, and checks
// the replica count at each point: it follows the load only after the
// delays, and never swings back and forth within them.
func TestDecideOverTime(t *testing.T) {
	c := cfg(func(c *Config) { c.MinReplicas = 0 })
	load := func(s int) float64 {
		switch {
		case s < 10:
			return 0
		case s < 15:
			return 1 // a first request: from zero at once
		case s < 60:
			return 8 // four replicas' worth, from second 15
		case s < 65:
			return 0 // a dip shorter than the downscale delay
		case s < 100:
			// flickering between wanting more and wanting fewer
			if s%8 < 4 {
				return 12
			}
			return 2
		default:
			return 0
		}
	}
	var samples []Sample
	var st State
	cur := 0
	changes := []string{}
	for s := 0; s < 200; s++ {
		now := at(float64(s))
		samples = append(prune(samples, now.Add(-c.LookBackPeriod)), Sample{At: now, Ongoing: load(s)})
		d := Decide(c, Input{Now: now, Replicas: cur, Samples: samples, State: st})
		st = d.State
		if d.Replicas != cur {
			changes = append(changes, fmtChange(s, cur, d.Replicas))
			cur = d.Replicas
		}
	}
	want := []string{
		"10s: 0→1",  // from zero at once
		"25s: 1→4",  // the ramp asks for more from 15 s; 10 s of delay
		"121s: 4→0", // the dip and the flicker never asked for fewer 20 s in a row; from 101 s the load does
	}
	if strings.Join(changes, " ") != strings.Join(want, " ") {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func fmtChange(s, from, to int) string { return fmt.Sprintf("%ds: %d→%d", s, from, to) }

func TestValidate(t *testing.T) {
	three := 3
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the default config: %v", err)
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"min above max", func(c *Config) { c.MinReplicas, c.MaxReplicas = 3, 2 }, "min_replicas (3) is more than max_replicas (2)"},
		{"negative min", func(c *Config) { c.MinReplicas = -1 }, "min_replicas is -1"},
		{"zero max", func(c *Config) { c.MinReplicas, c.MaxReplicas = 0, 0 }, "max_replicas is 0"},
		{"initial outside", func(c *Config) { c.InitialReplicas = &three }, "initial_replicas (3) is outside [min_replicas, max_replicas] = [1, 1]"},
		{"zero target", func(c *Config) { c.TargetOngoingRequests = 0 }, "target_ongoing_requests is 0"},
		{"negative target", func(c *Config) { c.TargetOngoingRequests = -2 }, "target_ongoing_requests is -2"},
		{"negative upscale delay", func(c *Config) { c.UpscaleDelay = -time.Second }, "upscale_delay is -1s"},
		{"negative downscale delay", func(c *Config) { c.DownscaleDelay = -time.Second }, "downscale_delay is -1s"},
		{"negative factor", func(c *Config) { c.DownscalingFactor = -0.5 }, "downscaling_factor is -0.5"},
		{"negative window", func(c *Config) { c.LookBackPeriod = -time.Second }, "look_back_period is -1s"},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	c := DefaultConfig()
	c.MaxReplicas, c.InitialReplicas = 4, &three
	if err := c.Validate(); err != nil || c.Initial() != 3 {
		t.Errorf("initial 3 of 1..4: %v, initial %d", err, c.Initial())
	}
}

func TestConfigFromYAML(t *testing.T) {
	c := DefaultConfig()
	doc := "min_replicas: 0\nmax_replicas: 8\ninitial_replicas: 2\ntarget_ongoing_requests: 4\nupscale_delay: 5s\ndownscaling_factor: 0.5\n"
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.MinReplicas != 0 || c.MaxReplicas != 8 || c.Initial() != 2 || c.TargetOngoingRequests != 4 || c.UpscaleDelay != 5*time.Second ||
		c.DownscalingFactor != 0.5 || c.DownscaleDelay != DefaultDownscaleDelay || c.LookBackPeriod != DefaultLookBackPeriod {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
