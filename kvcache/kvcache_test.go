package kvcache

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// fakeKV models llama.cpp's unified KV cache: cells with a position and the
// set of sequences holding them. A cell nobody holds is free.
//
// With perSlot it models llama.cpp's KV with one stream per sequence:
// cells are never shared, and copying between sequences is only allowed
// for the whole stream, which duplicates its cells.
type fakeKV struct {
	cells   map[int]*fakeCell
	next    int
	perSlot bool
}

type fakeCell struct {
	pos  int
	tok  int32
	ns   int // the namespace (adapter set) it was computed under
	seqs map[int]bool
}

func newFakeKV() *fakeKV { return &fakeKV{cells: map[int]*fakeCell{}} }

func (f *fakeKV) SeqRemove(seq, p0, p1 int) bool {
	for id, c := range f.cells {
		if c.seqs[seq] && c.pos >= p0 && (p1 < 0 || c.pos < p1) {
			delete(c.seqs, seq)
			if len(c.seqs) == 0 {
				delete(f.cells, id)
			}
		}
	}
	return true
}

func (f *fakeKV) SeqCopy(src, dst, p0, p1 int) {
	if f.perSlot {
		if p0 > 0 || p1 >= 0 {
			panic("seq_cp() is only supported for full KV buffers")
		}
		f.SeqRemove(dst, 0, -1)
		for _, c := range maps.Clone(f.cells) {
			if c.seqs[src] {
				f.next++
				f.cells[f.next] = &fakeCell{pos: c.pos, tok: c.tok, ns: c.ns, seqs: map[int]bool{dst: true}}
			}
		}
		return
	}
	for _, c := range f.cells {
		if c.seqs[src] && c.pos >= p0 && (p1 < 0 || c.pos < p1) {
			c.seqs[dst] = true
		}
	}
}

// decode stores tokens for seq at positions from..., as llama_decode does.
func (f *fakeKV) decode(seq, from int, toks []int32) { f.decodeIn(0, seq, from, toks) }

// decodeIn is decode under namespace ns (an adapter set).
func (f *fakeKV) decodeIn(ns, seq, from int, toks []int32) {
	for i, t := range toks {
		f.next++
		f.cells[f.next] = &fakeCell{pos: from + i, tok: t, ns: ns, seqs: map[int]bool{seq: true}}
	}
}

// namespacesOf is the set of namespaces of seq's cells.
func (f *fakeKV) namespacesOf(seq int) map[int]bool {
	out := map[int]bool{}
	for _, c := range f.cells {
		if c.seqs[seq] {
			out[c.ns] = true
		}
	}
	return out
}

// tokensOf returns seq's tokens by position, failing on gaps.
func (f *fakeKV) tokensOf(t *testing.T, seq int) []int32 {
	byPos := map[int]int32{}
	for _, c := range f.cells {
		if c.seqs[seq] {
			if _, dup := byPos[c.pos]; dup {
				t.Fatalf("seq %d holds two cells at position %d", seq, c.pos)
			}
			byPos[c.pos] = c.tok
		}
	}
	out := make([]int32, len(byPos))
	for p, tok := range byPos {
		if p >= len(out) {
			t.Fatalf("seq %d has a gap: position %d of %d", seq, p, len(out))
		}
		out[p] = tok
	}
	return out
}

// run prefills a lease's remaining prompt through the fake engine.
func run(f *fakeKV, l *Lease, prompt []int32) {
	rest := prompt[l.Len():]
	f.decode(l.Slot, l.Len(), rest)
	l.Append(rest...)
}

func seqTokens(n int, base int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = base + int32(i)
	}
	return out
}

func check(t *testing.T, c *Cache, f *fakeKV) {
	t.Helper()
	if got, want := c.Stats().CellsUsed, len(f.cells); got != want {
		t.Fatalf("cache counts %d cells used, engine holds %d", got, want)
	}
	for id, cell := range f.cells {
		if f.perSlot && len(cell.seqs) != 1 {
			t.Fatalf("cell %d is held by %d sequences of separate streams", id, len(cell.seqs))
		}
	}
	for i := range c.slots {
		if got := len(f.tokensOf(t, i)); got != c.slots[i].len {
			t.Fatalf("slot %d: cache says %d tokens, engine holds %d", i, c.slots[i].len, got)
		}
		if ns := f.namespacesOf(i); len(ns) > 1 || (len(ns) == 1 && !ns[c.slots[i].ns]) {
			t.Fatalf("slot %d of namespace %d holds cells computed under namespaces %v", i, c.slots[i].ns, ns)
		}
	}
}

func TestSharedPrefixIsReused(t *testing.T) {
	f := newFakeKV()
	c, _ := New(f, Options{Slots: 4, Cells: 4096})
	system := seqTokens(400, 1000)
	a := append(append([]int32{}, system...), seqTokens(30, 1)...)
	b := append(append([]int32{}, system...), seqTokens(25, 500)...)
	la, err := c.Acquire(a)
	if err != nil || la.Reused != 0 {
		t.Fatalf("first acquire: %v reused=%d", err, la.Reused)
	}
	run(f, la, a)
	lb, err := c.Acquire(b) // a is still running: its cells are shared
	if err != nil {
		t.Fatal(err)
	}
	if lb.Reused != 400 {
		t.Fatalf("reused %d tokens, want 400", lb.Reused)
	}
	run(f, lb, b)
	check(t, c, f)
	if used := c.Stats().CellsUsed; used != 400+30+25 {
		t.Fatalf("cells used %d, want %d (prefix stored once)", used, 400+30+25)
	}
	if active := c.Stats().CellsActive; active != 400+30+25 {
		t.Fatalf("cells active %d, want %d (the shared prefix counted once)", active, 400+30+25)
	}
	if got := f.tokensOf(t, lb.Slot); !slices.Equal(got, b) {
		t.Fatalf("slot holds %v..., want b", got[:5])
	}
	// The same prompt again reuses all but its last token.
	la.Release(true)
	if st := c.Stats(); st.CellsActive != 400+25 || st.CellsUsed != 400+30+25 {
		t.Fatalf("after a release: active %d used %d, want 425 active of 455 used (the released tail is kept for reuse)", st.CellsActive, st.CellsUsed)
	}
	lc, _ := c.Acquire(a)
	if lc.Reused != len(a)-1 {
		t.Fatalf("identical prompt reused %d, want %d", lc.Reused, len(a)-1)
	}
	run(f, lc, a)
	check(t, c, f)
	st := c.Stats()
	if st.Hits != 2 || st.TokensReused != int64(400+len(a)-1) {
		t.Fatalf("stats %+v", st)
	}
}

func TestNoPrefixReuse(t *testing.T) {
	f := newFakeKV()
	c, _ := New(f, Options{Slots: 2, Cells: 1000, NoPrefixReuse: true})
	p := seqTokens(50, 1)
	l, _ := c.Acquire(p)
	run(f, l, p)
	l.Release(true)
	l2, _ := c.Acquire(p)
	if l2.Reused != 0 {
		t.Fatalf("reused %d with reuse off", l2.Reused)
	}
	run(f, l2, p)
	check(t, c, f)
}

func TestEvictionLRUAndActiveSlotsAreSafe(t *testing.T) {
	f := newFakeKV()
	c, _ := New(f, Options{Slots: 3, Cells: 1000})
	var leases []*Lease
	for i := range 3 {
		p := seqTokens(100, int32(1000*(i+1)))
		l, err := c.Acquire(p)
		if err != nil {
			t.Fatal(err)
		}
		run(f, l, p)
		leases = append(leases, l)
	}
	if _, err := c.Acquire(seqTokens(10, 9)); err != ErrNoSlot {
		t.Fatalf("acquire with all slots active: %v, want ErrNoSlot", err)
	}
	leases[1].Release(true) // cached, older
	leases[0].Release(true) // cached, newer
	l, err := c.Acquire(seqTokens(10, 7))
	if err != nil {
		t.Fatal(err)
	}
	if l.Slot != leases[1].Slot {
		t.Fatalf("evicted slot %d, want the least recently used %d", l.Slot, leases[1].Slot)
	}
	run(f, l, seqTokens(10, 7))
	check(t, c, f)
	// EvictFor frees cached cells but never active ones.
	if c.EvictFor(1000) {
		t.Fatal("EvictFor claimed to free cells held by running sequences")
	}
	check(t, c, f)
	if st := c.Stats(); st.SlotsCached != 0 || st.CellsUsed != 110 {
		t.Fatalf("after EvictFor: %+v", st)
	}
}

func TestForkSharesPrompt(t *testing.T) {
	f := newFakeKV()
	c, _ := New(f, Options{Slots: 4, Cells: 1000})
	p := seqTokens(64, 1)
	l, _ := c.Acquire(p)
	run(f, l, p)
	forks := []*Lease{l}
	for range 3 {
		k, err := l.Fork(len(p))
		if err != nil {
			t.Fatal(err)
		}
		forks = append(forks, k)
	}
	for i, k := range forks { // each continues differently
		f.decode(k.Slot, k.Len(), []int32{int32(9000 + i)})
		k.Append(int32(9000 + i))
	}
	check(t, c, f)
	if used := c.Stats().CellsUsed; used != 64+4 {
		t.Fatalf("cells used %d, want 68", used)
	}
	for _, k := range forks {
		k.Release(false)
	}
	check(t, c, f)
	if c.Stats().CellsUsed != 0 {
		t.Fatal("cells left after releasing everything")
	}
}

func TestDoubleReleasePanics(t *testing.T) {
	c, _ := New(newFakeKV(), Options{Slots: 1, Cells: 10})
	l, _ := c.Acquire([]int32{1, 2})
	l.Release(false)
	defer func() {
		if recover() == nil {
			t.Fatal("second Release did not panic")
		}
	}()
	l.Release(false)
}

// TestRandomOperations drives the cache with random prompts drawn from a
// few shared prefixes, random truncation, forks and releases, and checks
// after every operation that its accounting matches the fake engine.
func TestRandomOperations(t *testing.T) {
	for _, perSlot := range []bool{false, true} {
		t.Run(fmt.Sprintf("perSlot=%v", perSlot), func(t *testing.T) { randomOperations(t, perSlot) })
	}
}

func randomOperations(t *testing.T, perSlot bool) {
	rng := rand.New(rand.NewPCG(1, 1))
	f := newFakeKV()
	f.perSlot = perSlot
	c, _ := New(f, Options{Slots: 6, Cells: 100000, PerSlot: perSlot})
	prefixes := [][]int32{seqTokens(40, 100), seqTokens(15, 300), seqTokens(70, 100)}
	var live []*Lease
	nsOf := map[*Lease]int{} // each lease's namespace: KV of one is never reused in another
	for step := 0; step < 3000; step++ {
		switch op := rng.IntN(10); {
		case op < 4:
			pre := prefixes[rng.IntN(len(prefixes))]
			p := append(append([]int32{}, pre[:1+rng.IntN(len(pre))]...), seqTokens(rng.IntN(20), int32(rng.IntN(5)*50))...)
			if len(p) == 0 {
				continue
			}
			ns := rng.IntN(3)
			l, err := c.AcquireIn(ns, p)
			if err == ErrNoSlot {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.tokensOf(t, l.Slot); !slices.Equal(got, p[:l.Reused]) {
				t.Fatalf("step %d: reused cells %v do not match prompt %v", step, got, p[:l.Reused])
			}
			if got := f.namespacesOf(l.Slot); l.Reused > 0 && (len(got) != 1 || !got[ns]) {
				t.Fatalf("step %d: a lease in namespace %d reused cells of namespaces %v", step, ns, got)
			}
			nsOf[l] = ns
			f.decodeIn(ns, l.Slot, l.Len(), p[l.Len():])
			l.Append(p[l.Len():]...)
			live = append(live, l)
		case op < 6 && len(live) > 0:
			l := live[rng.IntN(len(live))]
			toks := seqTokens(1+rng.IntN(5), int32(rng.IntN(1000)))
			f.decodeIn(nsOf[l], l.Slot, l.Len(), toks)
			l.Append(toks...)
		case op < 7 && len(live) > 0:
			l := live[rng.IntN(len(live))]
			l.Truncate(rng.IntN(l.Len() + 1))
		case op < 8 && len(live) > 0:
			l := live[rng.IntN(len(live))]
			if k, err := l.Fork(rng.IntN(l.Len() + 1)); err == nil {
				nsOf[k] = nsOf[l]
				live = append(live, k)
			}
		case len(live) > 0:
			i := rng.IntN(len(live))
			live[i].Release(rng.IntN(2) == 0)
			live = append(live[:i], live[i+1:]...)
		}
		check(t, c, f)
	}
}

func TestCachedCellsAreBounded(t *testing.T) {
	f := newFakeKV()
	c, _ := New(f, Options{Slots: 8, Cells: 1000, MaxCachedCells: 250})
	for i := range 6 {
		p := seqTokens(100, int32(1000*(i+1)))
		l, err := c.Acquire(p)
		if err != nil {
			t.Fatal(err)
		}
		run(f, l, p)
		l.Release(true)
		if r := c.Reclaimable(); r > 250 {
			t.Fatalf("after %d releases %d cells cached, bound 250", i+1, r)
		}
		check(t, c, f)
	}
	// The two most recent prompts stay cached.
	l, _ := c.Acquire(seqTokens(100, 6000))
	if l.Reused != 99 {
		t.Fatalf("most recent prompt reused %d tokens, want 99", l.Reused)
	}
}

// TestPerSlot: with a stream per slot, a prefix is reused only by taking
// over the slot that holds it; a running sequence's prefix is not shared;
// forks copy.
func TestPerSlot(t *testing.T) {
	f := newFakeKV()
	f.perSlot = true
	c, _ := New(f, Options{Slots: 3, Cells: 3000, PerSlot: true})
	sys := seqTokens(400, 1)
	a := append(slices.Clone(sys), seqTokens(30, 5000)...)
	b := append(slices.Clone(sys), seqTokens(25, 7000)...)
	la, _ := c.Acquire(a)
	run(f, la, a)
	lb, _ := c.Acquire(b)
	if lb.Reused != 0 || lb.Slot == la.Slot {
		t.Fatalf("running sequence's prefix shared across streams: slot %d reused %d", lb.Slot, lb.Reused)
	}
	run(f, lb, b)
	la.Release(true)
	check(t, c, f)
	lc, _ := c.Acquire(b[:410])
	if lc.Slot != la.Slot || lc.Reused != 400 {
		t.Fatalf("took slot %d reusing %d, want slot %d reusing 400", lc.Slot, lc.Reused, la.Slot)
	}
	run(f, lc, b[:410])
	check(t, c, f)
	k, err := lc.Fork(405)
	if err != nil {
		t.Fatal(err)
	}
	check(t, c, f)
	if got := f.tokensOf(t, k.Slot); !slices.Equal(got, b[:405]) {
		t.Fatalf("fork holds %d tokens, want the first 405 of the prompt", len(got))
	}
	if used := c.Stats().CellsUsed; used != len(b)+410+405 {
		t.Fatalf("cells used %d, want %d (nothing shared)", used, len(b)+410+405)
	}
	if !c.EvictFor(1 << 20) {
		t.Fatal("EvictFor failed with no shared pool to run out of")
	}
}

// TestNamespacesShareNothing: a prompt cached under one namespace (adapter
// set) is not reused under another, running or cached; under its own it is.
func TestNamespacesShareNothing(t *testing.T) {
	f := newFakeKV()
	c, _ := New(f, Options{Slots: 4, Cells: 1000})
	p := seqTokens(50, 1)
	la, _ := c.AcquireIn(1, p)
	f.decodeIn(1, la.Slot, 0, p)
	la.Append(p...)
	lb, _ := c.AcquireIn(2, p) // la is running
	if lb.Reused != 0 {
		t.Fatalf("namespace 2 reused %d tokens of namespace 1's running sequence", lb.Reused)
	}
	f.decodeIn(2, lb.Slot, 0, p)
	lb.Append(p...)
	la.Release(true)
	lb.Release(true)
	for _, ns := range []int{0, 3} {
		l, _ := c.AcquireIn(ns, p)
		if l.Reused != 0 {
			t.Fatalf("namespace %d reused %d cached tokens of other namespaces", ns, l.Reused)
		}
		l.Release(false)
	}
	for _, ns := range []int{1, 2} {
		l, _ := c.AcquireIn(ns, p)
		if l.Reused != len(p)-1 {
			t.Fatalf("namespace %d reused %d of its own cached tokens, want %d", ns, l.Reused, len(p)-1)
		}
		if got := f.namespacesOf(l.Slot); len(got) != 1 || !got[ns] {
			t.Fatalf("namespace %d's lease holds cells of %v", ns, got)
		}
		l.Release(true)
		check(t, c, f)
	}
}
