package scheduler

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestSplitterPolicy: the splitter only considers 2..splitMaxRows rows;
// it times single rows first (splitting), then the whole batch, and then
// splits exactly when the rows one at a time took less than the batch,
// running one step in splitProbeEvery the other way to keep both times
// current.
func TestSplitterPolicy(t *testing.T) {
	ms := time.Millisecond
	feed := func(p *splitter, rows int, d time.Duration, n int) {
		for range n {
			p.observe(rows, d)
		}
	}
	t.Run("sizes", func(t *testing.T) {
		var p splitter
		feed(&p, 1, ms, 10)
		feed(&p, 2, 10*ms, 10)
		for _, rows := range []int{0, 1, splitMaxRows + 1, 16} {
			if p.shouldSplit(rows) {
				t.Fatalf("split a step of %d rows", rows)
			}
		}
	})
	t.Run("explores", func(t *testing.T) {
		var p splitter
		if !p.shouldSplit(2) {
			t.Fatal("single rows unmeasured: the step should run split to time them")
		}
		feed(&p, 1, 4*ms, splitMinSamples)
		if p.shouldSplit(2) {
			t.Fatal("the 2-row batch unmeasured: the step should run whole to time it")
		}
	})
	cases := []struct {
		name       string
		one, batch time.Duration
		rows       int
		split      bool
	}{
		{"batch slower than its rows one at a time", 4 * ms, 12 * ms, 2, true},
		{"batch as fast as its rows one at a time", 4 * ms, 8 * ms, 2, false},
		{"batch faster (a GPU)", 4 * ms, 5 * ms, 2, false},
		{"4 rows, batch slower", 2 * ms, 9 * ms, 4, true},
		{"4 rows, batch faster", 4 * ms, 9 * ms, 4, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p splitter
			feed(&p, 1, c.one, splitMinSamples)
			feed(&p, c.rows, c.batch, splitMinSamples)
			if got := p.shouldSplit(c.rows); got != c.split {
				t.Fatalf("one row %v, %d rows %v: split %v, want %v", c.one, c.rows, c.batch, got, c.split)
			}
		})
	}
	t.Run("probes", func(t *testing.T) {
		for _, batch := range []time.Duration{12 * ms, 5 * ms} {
			var p splitter
			feed(&p, 1, 4*ms, splitMinSamples)
			feed(&p, 2, batch, splitMinSamples)
			choice := p.shouldSplit(2)
			other := 0
			for range 10*splitProbeEvery - 1 {
				if p.shouldSplit(2) != choice {
					other++
				}
			}
			if other != 10 {
				t.Fatalf("2 rows in %v: %d of %d steps ran the other way, want one in %d", batch, other, 10*splitProbeEvery, splitProbeEvery)
			}
		}
		// What a probe measures changes the choice: rows one at a time
		// that got slower (an adapter's decodes) stop the splitting, and
		// a batch that got slower starts it.
		var p splitter
		feed(&p, 1, 4*ms, splitMinSamples)
		feed(&p, 2, 12*ms, splitMinSamples)
		feed(&p, 1, 8*ms, 20)
		if p.avg[1] < (7 * ms).Seconds() {
			t.Fatalf("one-row average %v s after 20 decodes of 8ms", p.avg[1])
		}
		if p.shouldSplit(2) && p.shouldSplit(2) {
			t.Fatal("still splitting after single rows got slower than half the batch")
		}
		feed(&p, 2, 20*ms, 20)
		if !p.shouldSplit(2) && !p.shouldSplit(2) {
			t.Fatal("not splitting after the batch got slower than its rows one at a time")
		}
	})
}

// TestSlowSmallBatchesRunRowByRow runs two streams on a fake engine whose
// 2-row decode costs more than two 1-row ones (as llama.cpp's CPU kernels
// do for the bench model), on a fake clock: the scheduler learns to run
// those steps row by row, each stream's tokens are what they are when
// batching is cheap, and the scheduler's step count is the plan's, not the
// decodes'.
func TestSlowSmallBatchesRunRowByRow(t *testing.T) {
	run := func(t *testing.T, two time.Duration) (tokens [][]int32, rows []int, steps int64) {
		s, f := startFake(t, 512, Options{Parallel: 2, NoPrefixCache: true})
		f.cost = func(n int) time.Duration {
			if n == 2 {
				return two
			}
			return time.Duration(n) * 4 * time.Millisecond
		}
		var streams []*Stream
		for i := range 2 {
			st, err := s.Submit(context.Background(), Request{Prompt: fakePrompt(1, i), MaxTokens: 200, IgnoreEOS: true})
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, st)
		}
		tokens = make([][]int32, 2)
		var wg sync.WaitGroup
		for i, st := range streams {
			wg.Go(func() { tokens[i] = collect(t, st).tokens[0] })
		}
		wg.Wait()
		// The final events leave in the last step, before the scheduler
		// counts and publishes that step: let it finish and go idle.
		synctest.Wait()
		f.mu.Lock()
		rows = slices.Clone(f.rows)
		f.mu.Unlock()
		return tokens, rows, s.Stats().Steps
	}
	count := func(rows []int, n int) int {
		c := 0
		for _, r := range rows {
			if r == n {
				c++
			}
		}
		return c
	}
	synctest.Test(t, func(t *testing.T) {
		cheap, cheapRows, _ := run(t, 5*time.Millisecond)
		dear, dearRows, steps := run(t, 12*time.Millisecond)
		for i := range 2 {
			if len(dear[i]) != 200 || !slices.Equal(dear[i], cheap[i]) {
				t.Fatalf("stream %d: %d tokens, differing from the batched run's %d", i, len(dear[i]), len(cheap[i]))
			}
		}
		if n := count(cheapRows, 2); n < 180 {
			t.Fatalf("2-row decodes cheaper than two 1-row ones: only %d of %d decodes ran both rows", n, len(cheapRows))
		}
		if n := count(dearRows, 2); n > 20 {
			t.Fatalf("2-row decodes dearer than two 1-row ones: %d of %d decodes still ran both rows", n, len(dearRows))
		}
		// Two 1-row decodes are one split step; a 1-row decode can also be
		// a whole step when the second stream was admitted a step after
		// the first (goroutine order, not the fake clock, decides that) and
		// so also finishes a step later: two such steps, one at each end,
		// which the formula counts as one. A scheduler counting decodes
		// instead of steps would be 190 over.
		want := int64(len(dearRows) - count(dearRows, 1)/2)
		if steps < want || steps > want+1 {
			t.Fatalf("%d decodes (%d of one row) make %d steps (%d if two were unaligned), the scheduler counted %d", len(dearRows), count(dearRows, 1), want, want+1, steps)
		}
	})
}
