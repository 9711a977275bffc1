package scheduler

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	lim := Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 4, FreeCells: 1000}
	cases := []struct {
		name string
		seqs []SeqView
		lim  Limits
		want Plan
	}{
		{
			name: "decode first, then prompt chunks",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1},
				{ID: 2, Pending: 20, Arrival: 3, Slots: 1},
				{ID: 3, Running: true, Pending: 1, Arrival: 2},
			},
			lim:  lim,
			want: Plan{Items: []Item{{ID: 1, Tokens: 1}, {ID: 3, Tokens: 1}, {ID: 2, Tokens: 8, Admit: true}}},
		},
		{
			name: "chunk cap lets a late short prompt in beside a long one",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 300, Arrival: 1},
				{ID: 2, Pending: 5, Arrival: 2, Slots: 1},
			},
			lim:  lim,
			want: Plan{Items: []Item{{ID: 2, Tokens: 5, Admit: true}, {ID: 1, Tokens: 8}}},
		},
		{
			name: "shortest remaining prompt first, then arrival",
			seqs: []SeqView{
				{ID: 1, Pending: 30, Arrival: 1, Slots: 1},
				{ID: 2, Pending: 20, Arrival: 2, Slots: 1},
				{ID: 3, Pending: 6, Arrival: 3, Slots: 1},
			},
			lim:  Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 4, FreeCells: 100},
			want: Plan{Items: []Item{{ID: 3, Tokens: 6, Admit: true}, {ID: 2, Tokens: 8, Admit: true}, {ID: 1, Tokens: 2, Admit: true}}},
		},
		{
			name: "priority beats arrival",
			seqs: []SeqView{
				{ID: 1, Pending: 8, Arrival: 1, Slots: 1, Priority: 1},
				{ID: 2, Pending: 8, Arrival: 2, Slots: 1, Priority: 0},
			},
			lim:  Limits{TokenBudget: 8, Chunk: 8, FreeSlots: 4, FreeCells: 100},
			want: Plan{Items: []Item{{ID: 2, Tokens: 8, Admit: true}}},
		},
		{
			name: "aging lifts a starved low-priority request",
			seqs: []SeqView{
				{ID: 1, Pending: 8, Arrival: 1, Slots: 1, Priority: 5, Waited: time.Minute},
				{ID: 2, Pending: 8, Arrival: 2, Slots: 1, Priority: 0},
			},
			lim:  Limits{TokenBudget: 8, Chunk: 8, FreeSlots: 4, FreeCells: 100, AgingAfter: 10 * time.Second},
			want: Plan{Items: []Item{{ID: 1, Tokens: 8, Admit: true}}},
		},
		{
			name: "no slot: not admitted",
			seqs: []SeqView{{ID: 1, Pending: 4, Slots: 2}},
			lim:  Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 1, FreeCells: 100},
			want: Plan{},
		},
		{
			name: "whole prompt must fit; the blocked head stops later admissions",
			seqs: []SeqView{
				{ID: 1, Pending: 64, Arrival: 1, Slots: 1},
				{ID: 2, Pending: 57, Arrival: 2, Slots: 1}, // same 8 chunks, later
			},
			lim:  Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 4, FreeCells: 60},
			want: Plan{},
		},
		{
			name: "KV full for decode: preempt the newest running",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1},
				{ID: 2, Running: true, Pending: 1, Arrival: 5},
				{ID: 3, Running: true, Pending: 1, Arrival: 3},
			},
			lim:  Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 4, FreeCells: 2},
			want: Plan{Preempt: 2, HasPreempt: true},
		},
		{
			name: "budget caps decode tokens",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1},
				{ID: 2, Running: true, Pending: 1, Arrival: 2},
				{ID: 3, Running: true, Pending: 1, Arrival: 3},
			},
			lim:  Limits{TokenBudget: 2, Chunk: 8, FreeSlots: 4, FreeCells: 100},
			want: Plan{Items: []Item{{ID: 1, Tokens: 1}, {ID: 2, Tokens: 1}}},
		},
		{
			name: "running prefill is clipped to free cells",
			seqs: []SeqView{{ID: 1, Running: true, Pending: 8}},
			lim:  Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 0, FreeCells: 3},
			want: Plan{Items: []Item{{ID: 1, Tokens: 3}}},
		},
		{
			name: "nothing pending",
			seqs: []SeqView{{ID: 1, Running: true, Pending: 0}},
			lim:  lim,
			want: Plan{},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Schedule(c.seqs, c.lim)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("\ngot  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestStopMatcher(t *testing.T) {
	cases := []struct {
		stops  []string
		pieces []string
		want   []string // emitted per piece
		hit    int      // index of the piece that hits, -1 for none
		rest   string   // flushed at the end when no hit
	}{
		{[]string{"END"}, []string{"ab", "cE", "N", "Dxx"}, []string{"ab", "c", "", ""}, 3, ""},
		{[]string{"END"}, []string{"ab", "cE", "Nope"}, []string{"ab", "c", "ENope"}, -1, ""},
		{[]string{"\n\n", "###"}, []string{"one\n", "#", "#two"}, []string{"one", "\n", "##two"}, -1, ""},
		{[]string{"stop"}, []string{"sto"}, []string{""}, -1, "sto"},
		{nil, []string{"x", "y"}, []string{"x", "y"}, -1, ""},
		{[]string{"aa"}, []string{"xa", "a"}, []string{"x", ""}, 1, ""},
		{[]string{"é!"}, []string{"café", "!"}, []string{"caf", ""}, 1, ""},
	}
	for i, c := range cases {
		m := stopMatcher{stops: c.stops}
		hit := -1
		for j, p := range c.pieces {
			out, stop := m.push(p)
			if out != c.want[j] {
				t.Fatalf("case %d piece %d: emitted %q, want %q", i, j, out, c.want[j])
			}
			if stop {
				hit = j
				break
			}
		}
		if hit != c.hit {
			t.Fatalf("case %d: hit at %d, want %d", i, hit, c.hit)
		}
		if hit < 0 {
			if r := m.flush(); r != c.rest {
				t.Fatalf("case %d: flushed %q, want %q", i, r, c.rest)
			}
		}
	}
}

func TestFollowsLeader(t *testing.T) {
	prefix := make([]int32, 100)
	for i := range prefix {
		prefix[i] = int32(i + 10)
	}
	mk := func(computed int, tail ...int32) *seq {
		return &seq{tokens: append(append([]int32{}, prefix...), tail...), computed: computed}
	}
	w := mk(0, 1, 2)
	cases := []struct {
		name   string
		leader *seq
		want   bool
	}{
		{"waiting leader with the same prefix", mk(0, 3), true},
		{"leader still computing the prefix", mk(60, 3), true},
		{"leader has computed the prefix", mk(100, 3), false},
		{"short common prefix", &seq{tokens: append(append([]int32{}, prefix[:20]...), 999)}, false},
		{"unrelated prompt", &seq{tokens: []int32{7, 7, 7}}, false},
	}
	for _, c := range cases {
		if got := followsLeader(w, []*seq{c.leader}); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestScheduleGroups(t *testing.T) {
	lim := Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 4, FreeCells: 1000, AgingAfter: time.Minute, Step: 10}
	withLast := func(l Limits, last map[int]uint64) Limits { l.LastRun = last; return l }
	cases := []struct {
		name string
		seqs []SeqView
		lim  Limits
		want Plan
	}{
		{
			name: "one group per step; its prompt chunks ride with its decodes",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1, Group: 0},
				{ID: 2, Running: true, Pending: 1, Arrival: 2, Group: 7},
				{ID: 3, Running: true, Pending: 1, Arrival: 3, Group: 7},
				{ID: 4, Pending: 5, Arrival: 4, Slots: 1, Group: 7},
				{ID: 5, Pending: 5, Arrival: 5, Slots: 1, Group: 0},
			},
			lim:  lim,
			want: Plan{Group: 7, Items: []Item{{ID: 2, Tokens: 1}, {ID: 3, Tokens: 1}, {ID: 4, Tokens: 5, Admit: true}}},
		},
		{
			name: "the base model's group is group 0, like any other",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1, Group: 0},
				{ID: 2, Running: true, Pending: 1, Arrival: 2, Group: 0},
				{ID: 3, Running: true, Pending: 1, Arrival: 3, Group: 2},
			},
			lim:  lim,
			want: Plan{Group: 0, Items: []Item{{ID: 1, Tokens: 1}, {ID: 2, Tokens: 1}}},
		},
		{
			name: "priority beats size",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1, Group: 0},
				{ID: 2, Running: true, Pending: 1, Arrival: 2, Group: 0},
				{ID: 3, Running: true, Pending: 1, Arrival: 3, Group: 2, Priority: -1},
			},
			lim:  lim,
			want: Plan{Group: 2, Items: []Item{{ID: 3, Tokens: 1}}},
		},
		{
			name: "an aged sequence's group goes first",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1, Group: 0, Priority: -5},
				{ID: 2, Running: true, Pending: 1, Arrival: 2, Group: 0},
				{ID: 3, Pending: 4, Arrival: 3, Slots: 1, Group: 2, Waited: 2 * time.Minute},
			},
			lim:  lim,
			want: Plan{Group: 2, Items: []Item{{ID: 3, Tokens: 4, Admit: true}}},
		},
		{
			name: "a group at its deadline runs, however small",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1, Group: 0, Priority: -5},
				{ID: 2, Running: true, Pending: 1, Arrival: 2, Group: 0},
				{ID: 3, Running: true, Pending: 1, Arrival: 3, Group: 2},
			},
			lim:  withLast(lim, map[int]uint64{0: 9, 2: 8}), // G=2: group 2 is due at step 10
			want: Plan{Group: 2, Items: []Item{{ID: 3, Tokens: 1}}},
		},
		{
			name: "a group that cannot run passes its turn",
			seqs: []SeqView{
				{ID: 1, Running: true, Pending: 1, Arrival: 1, Group: 0},
				{ID: 2, Pending: 5, Arrival: 2, Slots: 1, Group: 3},
			},
			lim:  withLast(Limits{TokenBudget: 16, Chunk: 8, FreeSlots: 0, FreeCells: 1000, Step: 10}, map[int]uint64{0: 9, 3: 5}),
			want: Plan{Group: 0, Items: []Item{{ID: 1, Tokens: 1}}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Schedule(c.seqs, c.lim); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// TestScheduleGroupFairness drives the planner over many steps with groups
// of very different sizes and urgency coming and going: every group with
// work runs at least once every G steps, G the groups with work.
func TestScheduleGroupFairness(t *testing.T) {
	// Group g has sizes[g] decoding sequences; group 0 is the most urgent.
	sizes := []int{6, 1, 3, 1, 2}
	last := map[int]uint64{}
	ran := map[int]int{}
	var history []int // groups with work at each step
	for step := uint64(1); step <= 400; step++ {
		active := len(sizes)
		if step%100 >= 50 {
			active = 3 // groups 3 and 4 have no work for a while
		}
		var seqs []SeqView
		id := 0
		for g := range active {
			if _, ok := last[g]; !ok {
				last[g] = step // got work now
			}
			for range sizes[g] {
				id++
				p := 0
				if g == 0 {
					p = -1
				}
				seqs = append(seqs, SeqView{ID: id, Running: true, Pending: 1, Arrival: uint64(id), Group: g, Priority: p})
			}
		}
		for g := active; g < len(sizes); g++ {
			delete(last, g) // no work: its clock starts again when work comes
		}
		plan := Schedule(seqs, Limits{TokenBudget: 64, Chunk: 8, FreeSlots: 0, FreeCells: 1000, Step: step, LastRun: last})
		if len(plan.Items) != sizes[plan.Group] {
			t.Fatalf("step %d: group %d ran %d of its %d sequences", step, plan.Group, len(plan.Items), sizes[plan.Group])
		}
		history = append(history, active)
		for g, l := range last {
			// G may have shrunk since l: the bound is the most groups with
			// work at any step since.
			bound := slices.Max(history[l-1:])
			if g != plan.Group && step-l >= uint64(bound) {
				t.Fatalf("step %d: group %d has not run since step %d, with at most %d groups with work", step, g, l, bound)
			}
		}
		last[plan.Group] = step
		ran[plan.Group]++
	}
	t.Logf("steps per group: %v", ran)
}
