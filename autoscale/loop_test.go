package autoscale

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTarget records what the autoscaler asks of it.
type fakeTarget struct {
	mu      sync.Mutex
	ongoing int
	scaled  []int // each distinct count asked for, in order
}

func (f *fakeTarget) Ongoing() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ongoing
}

func (f *fakeTarget) Scale(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.scaled) == 0 || f.scaled[len(f.scaled)-1] != n {
		f.scaled = append(f.scaled, n)
	}
}

func (f *fakeTarget) set(n int) {
	f.mu.Lock()
	f.ongoing = n
	f.mu.Unlock()
}

func (f *fakeTarget) last() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scaled[len(f.scaled)-1]
}

func TestAutoscalerFollowsTheLoadAfterItsDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := cfg(func(c *Config) {
			c.MinReplicas = 0
			c.UpscaleDelay, c.DownscaleDelay, c.LookBackPeriod, c.MetricsInterval = 2*time.Second, 5*time.Second, time.Second, 100*time.Millisecond
		})
		ft := &fakeTarget{}
		a := New("test", c, ft, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- a.Run(ctx) }()
		synctest.Wait()
		if ft.last() != 0 {
			t.Fatalf("initial: asked for %v, want 0", ft.scaled)
		}
		// A request arrives at zero replicas: the target pokes, and one
		// replica is asked for at once, not at the next tick.
		ft.set(1)
		a.Poke()
		synctest.Wait()
		if ft.last() != 1 {
			t.Fatalf("after a poke at zero: asked for %v, want 1", ft.scaled)
		}
		ft.set(8)
		time.Sleep(1500 * time.Millisecond)
		if ft.last() != 1 {
			t.Fatalf("within the upscale delay: asked for %v", ft.scaled)
		}
		time.Sleep(2 * time.Second)
		if ft.last() != 4 {
			t.Fatalf("after the upscale delay: asked for %v, want 4", ft.scaled)
		}
		if st := a.Status(); st.Replicas != 4 || st.MaxReplicas != 4 {
			t.Fatalf("status %+v", st)
		}
		ft.set(0)
		time.Sleep(4 * time.Second)
		if ft.last() != 4 {
			t.Fatalf("within the downscale delay: asked for %v", ft.scaled)
		}
		if st := a.Status(); st.Wish != "fewer" || st.Since == nil {
			t.Fatalf("status while waiting to shrink: %+v", st)
		}
		time.Sleep(3 * time.Second)
		if ft.last() != 0 {
			t.Fatalf("after the downscale delay: asked for %v, want 0", ft.scaled)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := []int{0, 1, 4, 0}
		if len(ft.scaled) != len(want) {
			t.Fatalf("asked for %v, want %v", ft.scaled, want)
		}
		for i := range want {
			if ft.scaled[i] != want[i] {
				t.Fatalf("asked for %v, want %v", ft.scaled, want)
			}
		}
	})
}

func TestAutoscalerRefusesABadConfig(t *testing.T) {
	c := DefaultConfig()
	c.TargetOngoingRequests = 0
	if err := New("bad", c, &fakeTarget{}, nil).Run(context.Background()); err == nil {
		t.Fatal("a zero target was accepted")
	}
}
