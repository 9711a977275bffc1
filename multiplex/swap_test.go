package multiplex

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// ago is t0 minus d.
func ago(d time.Duration) time.Time { return t0.Add(-d) }

// idle is an idle resident loaded and last used long ago.
func idle(name string) ResidentModel {
	return ResidentModel{Name: name, Bytes: 1, LoadedAt: ago(time.Hour), LastUsed: ago(time.Minute), LoadTime: 5 * time.Second}
}

// waiting is a cold model with requests queued since d ago.
func waiting(name string, d time.Duration) WaitingModel {
	return WaitingModel{Name: name, Bytes: 1, Requests: 1, Since: ago(d), LoadTime: 5 * time.Second}
}

// with applies edits to a copy of r.
func with(r ResidentModel, edit func(*ResidentModel)) ResidentModel {
	edit(&r)
	return r
}

func TestPlanSwaps(t *testing.T) {
	base := SwapInput{Now: t0, Policy: SwapAware, MaxModels: 1, MinResidency: 5 * time.Second, MaxSwapWait: 20 * time.Second}
	tests := []struct {
		name string
		edit func(*SwapInput)
		want SwapPlan
	}{
		{"a burst of many requests for one cold model is one load", func(in *SwapInput) {
			w := waiting("a", time.Second)
			w.Requests = 64
			in.Waiting = []WaitingModel{w, waiting("a", 0)}
		}, SwapPlan{Load: []string{"a"}}},
		{"fits without eviction", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{idle("b")}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{Load: []string{"a"}}},
		{"a just-loaded model that went idle is evicted at once when nothing else runs", func(in *SwapInput) {
			in.Resident = []ResidentModel{with(idle("b"), func(r *ResidentModel) { r.LoadedAt, r.LastUsed = ago(time.Second), ago(100*time.Millisecond) })}
			in.Waiting = []WaitingModel{waiting("a", 3*time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"b"}}},
		{"an idle model used within its load time is kept while requests run elsewhere", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("b"), func(r *ResidentModel) { r.LastUsed = ago(4 * time.Second) }),
				with(idle("c"), func(r *ResidentModel) { r.InFlight = 2 }),
			}
			in.Waiting = []WaitingModel{waiting("a", 3*time.Second)}
		}, SwapPlan{}},
		{"an idle model past its load time is evicted though requests run elsewhere", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("b"), func(r *ResidentModel) { r.LoadedAt, r.LastUsed = ago(6*time.Second), ago(5*time.Second) }),
				with(idle("c"), func(r *ResidentModel) { r.InFlight = 2 }),
			}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"b"}}},
		{"MinResidency caps the idle grace of a slow-loading model", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("b"), func(r *ResidentModel) { r.LoadTime, r.LastUsed = time.Minute, ago(5*time.Second) }),
				with(idle("c"), func(r *ResidentModel) { r.InFlight = 2 }),
			}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"b"}}},
		{"MaxSwapWait ends the idle grace", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("b"), func(r *ResidentModel) { r.LastUsed = ago(time.Second) }),
				with(idle("c"), func(r *ResidentModel) { r.InFlight = 2 }),
			}
			in.Waiting = []WaitingModel{waiting("a", 20*time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"b"}}},
		{"the busy model with the fewest requests in flight is drained first", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("many"), func(r *ResidentModel) { r.InFlight, r.LoadTime = 4, time.Second }),
				with(idle("few"), func(r *ResidentModel) { r.InFlight, r.LoadTime = 1, time.Minute }),
			}
			in.Waiting = []WaitingModel{waiting("a", 21*time.Second)}
		}, SwapPlan{Drain: []string{"few"}}},
		{"MaxSwapWait forces a drain of a busy model", func(in *SwapInput) {
			in.Resident = []ResidentModel{with(idle("b"), func(r *ResidentModel) { r.InFlight = 3 })}
			in.Waiting = []WaitingModel{waiting("a", 21*time.Second)}
		}, SwapPlan{Drain: []string{"b"}}},
		{"before MaxSwapWait a busy model is left alone", func(in *SwapInput) {
			in.Resident = []ResidentModel{with(idle("b"), func(r *ResidentModel) { r.InFlight = 3 })}
			in.Waiting = []WaitingModel{waiting("a", 19*time.Second)}
		}, SwapPlan{}},
		{"cost-aware victim keeps the slow-loading model and evicts the fast one", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("slow"), func(r *ResidentModel) { r.LoadTime, r.LastUsed = time.Minute, ago(30*time.Second) }),
				with(idle("fast"), func(r *ResidentModel) { r.LoadTime, r.LastUsed = 2*time.Second, ago(10*time.Second) }),
			}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"fast"}}},
		{"equal keep value evicts the least recently used", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("new"), func(r *ResidentModel) { r.LoadTime = 0; r.LastUsed = ago(time.Second) }),
				with(idle("old"), func(r *ResidentModel) { r.LoadTime = 0; r.LastUsed = ago(time.Minute) }),
			}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"old"}}},
		{"pinned and loading models are never victims", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("pinned"), func(r *ResidentModel) { r.Pinned = true }),
				with(idle("loading"), func(r *ResidentModel) { r.Loading = true }),
			}
			in.Waiting = []WaitingModel{waiting("a", time.Hour)}
		}, SwapPlan{}},
		{"an in-flight model is drained, never evicted, while an idle one goes now", func(in *SwapInput) {
			in.MaxModels = 0
			in.MemoryBudget = 10
			in.Resident = []ResidentModel{
				with(idle("busy"), func(r *ResidentModel) { r.Bytes, r.InFlight = 5, 1 }),
				with(idle("free"), func(r *ResidentModel) { r.Bytes = 5 }),
			}
			in.Waiting = []WaitingModel{with2(waiting("a", time.Minute), 8)}
		}, SwapPlan{Evict: []string{"free"}, Drain: []string{"busy"}}},
		{"memory budget needs two victims", func(in *SwapInput) {
			in.MaxModels = 0
			in.MemoryBudget = 10
			in.Resident = []ResidentModel{
				with(idle("x"), func(r *ResidentModel) { r.Bytes, r.LoadTime = 4, time.Second }),
				with(idle("y"), func(r *ResidentModel) { r.Bytes, r.LoadTime = 4, 2*time.Second }),
				with(idle("z"), func(r *ResidentModel) { r.Bytes, r.LoadTime = 2, time.Hour }),
			}
			in.Waiting = []WaitingModel{with2(waiting("a", time.Second), 7)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"x", "y"}}},
		{"a cheap victim that turns out unnecessary is kept", func(in *SwapInput) {
			in.MaxModels = 0
			in.MemoryBudget = 10
			in.Resident = []ResidentModel{
				with(idle("small"), func(r *ResidentModel) { r.Bytes, r.LoadTime = 1, time.Second }),
				with(idle("big"), func(r *ResidentModel) { r.Bytes, r.LoadTime = 6, 2*time.Second }),
			}
			in.Waiting = []WaitingModel{with2(waiting("a", time.Second), 8)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"big"}}},
		{"too large for the budget beside the pinned models", func(in *SwapInput) {
			in.MaxModels = 0
			in.MemoryBudget = 10
			in.Resident = []ResidentModel{with(idle("p"), func(r *ResidentModel) { r.Bytes, r.Pinned = 4, true })}
			in.Waiting = []WaitingModel{with2(waiting("huge", 2*time.Second), 11), with2(waiting("big", time.Second), 7), with2(waiting("ok", 0), 6)}
		}, SwapPlan{Load: []string{"ok"}, TooLarge: []string{"huge", "big"}}},
		{"too large when pinned models take every slot", func(in *SwapInput) {
			in.Resident = []ResidentModel{with(idle("p"), func(r *ResidentModel) { r.Pinned = true })}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{TooLarge: []string{"a"}}},
		{"LRU evicts the least recently used at once", func(in *SwapInput) {
			in.Policy = SwapLRU
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("slow"), func(r *ResidentModel) {
					r.LoadTime, r.LastUsed, r.LoadedAt = time.Minute, ago(30*time.Second), ago(time.Second)
				}),
				with(idle("fast"), func(r *ResidentModel) {
					r.LoadTime, r.LastUsed, r.LoadedAt = time.Second, ago(10*time.Second), ago(time.Second)
				}),
			}
			in.Waiting = []WaitingModel{waiting("a", 0)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"slow"}}},
		{"LRU drains the least recently used at once when it is busy", func(in *SwapInput) {
			in.Policy = SwapLRU
			in.Resident = []ResidentModel{with(idle("b"), func(r *ResidentModel) { r.InFlight, r.LoadedAt = 2, ago(time.Second) })}
			in.Waiting = []WaitingModel{waiting("a", 0)}
		}, SwapPlan{Drain: []string{"b"}}},
		{"a model already draining is not joined by a second victim", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("draining"), func(r *ResidentModel) { r.Draining, r.InFlight = true, 1 }),
				idle("c"),
			}
			in.Waiting = []WaitingModel{waiting("a", time.Hour)}
		}, SwapPlan{}},
		{"a draining model that became idle is evicted and its place used", func(in *SwapInput) {
			in.Resident = []ResidentModel{with(idle("b"), func(r *ResidentModel) { r.Draining = true })}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{Load: []string{"a"}, Evict: []string{"b"}}},
		{"the older waiting model claims the draining one, the younger takes another", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{
				with(idle("draining"), func(r *ResidentModel) { r.Draining, r.InFlight = true, 1 }),
				idle("c"),
			}
			in.Waiting = []WaitingModel{waiting("young", time.Minute), waiting("old", time.Hour)}
		}, SwapPlan{Load: []string{"young"}, Evict: []string{"c"}}},
		{"a resident or loading model is not loaded again", func(in *SwapInput) {
			in.MaxModels = 2
			in.Resident = []ResidentModel{with(idle("a"), func(r *ResidentModel) { r.Loading = true })}
			in.Waiting = []WaitingModel{waiting("a", time.Second)}
		}, SwapPlan{}},
		{"a waiting model without requests is ignored", func(in *SwapInput) {
			w := waiting("a", time.Second)
			w.Requests = 0
			in.Waiting = []WaitingModel{w}
		}, SwapPlan{}},
		{"unbounded limits load everything", func(in *SwapInput) {
			in.MaxModels = 0
			in.Resident = []ResidentModel{idle("b"), idle("c")}
			in.Waiting = []WaitingModel{waiting("z", time.Second), waiting("a", 0)}
		}, SwapPlan{Load: []string{"z", "a"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := base
			tc.edit(&in)
			got := PlanSwaps(in)
			if !samePlan(got, tc.want) {
				t.Errorf("PlanSwaps:\n got %s\nwant %s", planString(got), planString(tc.want))
			}
		})
	}
}

// with2 sets the estimated size of w.
func with2(w WaitingModel, bytes int64) WaitingModel {
	w.Bytes = bytes
	return w
}

// samePlan compares plans, treating nil and empty lists alike.
func samePlan(a, b SwapPlan) bool { return planString(a) == planString(b) }

// planString prints a plan for comparisons and failure messages.
func planString(p SwapPlan) string {
	return fmt.Sprintf("load=%v evict=%v drain=%v tooLarge=%v", p.Load, p.Evict, p.Drain, p.TooLarge)
}

func TestPlanSwapsIgnoresInputOrder(t *testing.T) {
	in := SwapInput{Now: t0, MaxModels: 3, MinResidency: time.Second, MaxSwapWait: time.Minute}
	in.Resident = []ResidentModel{idle("c"), idle("a"), idle("b")}
	in.Waiting = []WaitingModel{waiting("y", time.Second), waiting("x", time.Second)}
	first := PlanSwaps(in)
	in.Resident = []ResidentModel{idle("b"), idle("c"), idle("a")}
	in.Waiting = []WaitingModel{waiting("x", time.Second), waiting("y", time.Second)}
	if again := PlanSwaps(in); !reflect.DeepEqual(first, again) {
		t.Errorf("plans differ with input order:\n got %s\nwant %s", planString(again), planString(first))
	}
	if want := (SwapPlan{Load: []string{"x", "y"}, Evict: []string{"a", "b"}}); !samePlan(first, want) {
		t.Errorf("got %s, want %s", planString(first), planString(want))
	}
}

func TestParseSwapPolicy(t *testing.T) {
	tests := []struct {
		in   string
		want SwapPolicy
		ok   bool
	}{{"", SwapAware, true}, {"swap-aware", SwapAware, true}, {"lru", SwapLRU, true}, {"LRU", "", false}, {"fifo", "", false}}
	for _, tc := range tests {
		got, err := ParseSwapPolicy(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseSwapPolicy(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
