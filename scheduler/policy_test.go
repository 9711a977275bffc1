package scheduler

import (
	"reflect"
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
