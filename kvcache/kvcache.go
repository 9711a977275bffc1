// Package kvcache owns the sequence slots of one engine context and the
// prefix tree over the tokens those slots hold in the KV cache.
//
// The engine's KV cache is one shared pool of cells (llama.cpp's unified
// KV). A slot is a sequence id. Copying a prefix from one slot to another
// shares the cells instead of duplicating them, so the tree's nodes are
// physical runs of cells: a node is shared by every slot whose sequence
// passes through it, and the cells in use are the sum of the node lengths.
//
// A finished sequence's slot is kept as a cached entry, so that a later
// request with the same prefix (system prompt, chat history) copies it and
// prefills only the rest. Cached entries are evicted least recently used
// when slots or cells run short. Slots held by running sequences are never
// evicted here; the scheduler decides about preemption.
//
// With PerSlot, each slot is a KV stream of its own (llama.cpp's
// non-unified KV): attention of one sequence scans only its own cells, which
// is much faster with many sequences, but cells cannot be shared. A
// finished prompt then stays in its slot, and a later request with the same
// prefix takes that slot over; forks copy the whole stream.
//
// KV cells are namespaced: a sequence acquires its slot in a namespace (the
// scheduler's LoRA adapter set), and a prefix is reused only from slots of
// the same namespace, since KV computed under one adapter set is not the KV
// of another. Each namespace has a tree of its own.
//
// Cache is not safe for concurrent use: the scheduler goroutine owns it.
package kvcache

import (
	"errors"
	"fmt"
)

// KV is the part of an engine context the cache drives. *engine.Context
// implements it.
type KV interface {
	// SeqRemove drops positions [p0, p1) of seq (p1 < 0: to the end).
	SeqRemove(seq, p0, p1 int) bool
	// SeqCopy makes positions [p0, p1) of src also belong to dst.
	SeqCopy(src, dst, p0, p1 int)
}

// Options size the cache. Slots and Cells must be positive.
type Options struct {
	Slots int // sequence ids in the engine context
	Cells int // KV cells (tokens) in the engine context
	// NoPrefixReuse turns prefix reuse off: every sequence prefills all of
	// its prompt (for benchmarks and debugging).
	NoPrefixReuse bool
	// PerSlot: every slot is its own KV stream of Cells/Slots cells.
	PerSlot bool
	// MaxCachedCells bounds the cells that finished sequences keep cached
	// (0: a quarter of Cells). Cached cells are not free: in a unified KV
	// cache every decode's attention scans all used cells, so an unbounded
	// cache of prompts nobody reuses slows every running stream.
	MaxCachedCells int
}

// Stats are the cache's counters.
type Stats struct {
	Lookups      int64 `json:"lookups"`
	Hits         int64 `json:"hits"`
	TokensReused int64 `json:"tokens_reused"`
	Evictions    int64 `json:"evictions"`
	CellsUsed    int   `json:"cells_used"`
	// CellsActive is the cells held by active slots (a shared prefix
	// counts once); CellsUsed adds the cells kept for prefix reuse.
	CellsActive int `json:"cells_active"`
	Cells       int `json:"cells"`
	SlotsActive int `json:"slots_active"`
	SlotsCached int `json:"slots_cached"`
	Slots       int `json:"slots"`
}

// ErrNoSlot is returned by Acquire when every slot is held by a running
// sequence.
var ErrNoSlot = errors.New("kvcache: no free sequence slot")

type slotState uint8

const (
	slotFree slotState = iota
	slotActive
	slotCached
)

type slot struct {
	state slotState
	ns    int     // the namespace of the cells it holds
	path  []*node // root-to-leaf nodes holding this slot's cells, in order
	len   int     // tokens held = sum of path node lengths
	used  uint64  // LRU tick of the last release
}

// node is a run of KV cells shared by the slots in holders.
type node struct {
	tokens   []int32
	parent   *node
	children []*node
	holders  map[int]struct{}
	mark     uint64 // the Stats call that last counted it
}

// Cache tracks slots and their prefix tree.
type Cache struct {
	kv    KV
	opts  Options
	roots map[int]*node // one tree per namespace
	slots []slot
	used  int // cells in use
	tick  uint64
	marks uint64 // Stats calls, to count shared nodes once
	stats Stats
}

// New creates a cache over an empty KV cache.
func New(kv KV, opts Options) (*Cache, error) {
	if opts.Slots < 1 || opts.Cells < 1 {
		return nil, fmt.Errorf("kvcache: need positive slots (%d) and cells (%d)", opts.Slots, opts.Cells)
	}
	if opts.MaxCachedCells <= 0 {
		opts.MaxCachedCells = max(1, opts.Cells/4)
	}
	return &Cache{kv: kv, opts: opts, roots: map[int]*node{}, slots: make([]slot, opts.Slots)}, nil
}

// Lease is a slot acquired for one sequence. Reused tokens of its prompt
// are already in the KV cache; the caller prefills the rest and reports
// computed tokens with Append.
type Lease struct {
	c        *Cache
	Slot     int
	Reused   int // prompt tokens already in the KV cache
	released bool
}

// Acquire takes a slot for a sequence whose prompt is tokens, in namespace
// 0 (AcquireIn).
func (c *Cache) Acquire(tokens []int32) (*Lease, error) { return c.AcquireIn(0, tokens) }

// root is namespace ns's tree.
func (c *Cache) root(ns int) *node {
	r, ok := c.roots[ns]
	if !ok {
		r = &node{holders: map[int]struct{}{}}
		c.roots[ns] = r
	}
	return r
}

// AcquireIn takes a slot in namespace ns for a sequence whose prompt is
// tokens. It reuses the longest prefix cached in ns it can, always leaving
// at least the last prompt token to be evaluated (its logits are needed).
// It evicts cached entries to find a slot, but never takes a slot from a
// running sequence.
func (c *Cache) AcquireIn(ns int, tokens []int32) (*Lease, error) {
	c.stats.Lookups++
	want := len(tokens) - 1 // keep the last token to re-evaluate
	if c.opts.NoPrefixReuse {
		want = 0
	}
	// Best candidate: a cached slot holding the longest prefix (it can be
	// taken over in place), else any slot sharing the longest prefix (its
	// cells are copied into a free slot).
	bestOwn, bestOwnLen := -1, 0
	for i := range c.slots {
		s := &c.slots[i]
		if s.state != slotCached || s.ns != ns {
			continue
		}
		if n := min(c.commonPrefix(i, tokens), want); n > bestOwnLen || bestOwn < 0 {
			bestOwn, bestOwnLen = i, n
		}
	}
	src, srcLen := -1, 0
	if !c.opts.PerSlot { // separate streams share nothing
		src, srcLen = c.longestHolder(ns, tokens, want)
	}
	if bestOwn >= 0 && bestOwnLen >= srcLen && bestOwnLen > 0 {
		// Take the cached slot over, keeping its prefix.
		c.truncate(bestOwn, bestOwnLen)
		c.slots[bestOwn].state = slotActive
		c.hit(bestOwnLen)
		return &Lease{c: c, Slot: bestOwn, Reused: bestOwnLen}, nil
	}
	dst := c.freeSlot(src)
	if dst < 0 {
		return nil, ErrNoSlot
	}
	c.slots[dst].state = slotActive
	c.slots[dst].ns = ns
	if srcLen > 0 && c.slots[src].len >= srcLen {
		c.attach(dst, src, srcLen)
		c.hit(srcLen)
		return &Lease{c: c, Slot: dst, Reused: srcLen}, nil
	}
	return &Lease{c: c, Slot: dst}, nil
}

func (c *Cache) hit(n int) {
	if n > 0 {
		c.stats.Hits++
		c.stats.TokensReused += int64(n)
	}
}

// freeSlot returns a free slot, evicting the least recently used cached
// one if needed (but not keep, the slot about to be copied from), or -1.
func (c *Cache) freeSlot(keep int) int {
	for i := range c.slots {
		if c.slots[i].state == slotFree {
			return i
		}
	}
	victim := -1
	for i := range c.slots {
		s := &c.slots[i]
		if s.state == slotCached && i != keep && (victim < 0 || s.used < c.slots[victim].used) {
			victim = i
		}
	}
	if victim < 0 {
		return -1
	}
	c.evict(victim)
	return victim
}

func (c *Cache) evict(i int) {
	c.truncate(i, 0)
	c.slots[i].state = slotFree
	c.stats.Evictions++
}

// EvictFor frees cached entries, least recently used first, until at least
// cells cells are free or nothing cached is left. It reports whether enough
// cells are free.
// With PerSlot there is no shared pool: it reports true.
func (c *Cache) EvictFor(cells int) bool {
	if c.opts.PerSlot {
		return true
	}
	for c.Free() < cells {
		if !c.evictLRU() {
			return false
		}
	}
	return true
}

// Free is the number of unused KV cells.
func (c *Cache) Free() int { return c.opts.Cells - c.used }

// Reclaimable is the number of cells cached entries could give back if
// they were all evicted (cells shared with running sequences excluded).
func (c *Cache) Reclaimable() int {
	n := 0
	for _, root := range c.roots {
		c.walk(root, func(nd *node) {
			if nd == root {
				return
			}
			for h := range nd.holders {
				if c.slots[h].state == slotActive {
					return
				}
			}
			n += len(nd.tokens)
		})
	}
	return n
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	s := c.stats
	s.CellsUsed, s.Cells, s.Slots = c.used, c.opts.Cells, len(c.slots)
	c.marks++
	for i := range c.slots {
		switch c.slots[i].state {
		case slotActive:
			s.SlotsActive++
			for _, nd := range c.slots[i].path {
				if nd.mark != c.marks {
					nd.mark = c.marks
					s.CellsActive += len(nd.tokens)
				}
			}
		case slotCached:
			s.SlotsCached++
		}
	}
	return s
}

// Len is the number of tokens the lease's slot holds in the KV cache.
func (l *Lease) Len() int { return l.c.slots[l.Slot].len }

// Append records tokens the engine has just computed for this slot, at
// positions Len() onwards.
func (l *Lease) Append(tokens ...int32) {
	l.c.appendTokens(l.Slot, tokens)
}

// Truncate keeps only the first n tokens of the slot (n <= Len()).
func (l *Lease) Truncate(n int) { l.c.truncate(l.Slot, n) }

// Fork acquires a new slot that shares the first n tokens of this lease's
// slot (for n > 1 completions of one prompt).
func (l *Lease) Fork(n int) (*Lease, error) {
	c := l.c
	dst := c.freeSlot(l.Slot)
	if dst < 0 {
		return nil, ErrNoSlot
	}
	c.slots[dst].state = slotActive
	c.slots[dst].ns = c.slots[l.Slot].ns
	n = min(n, c.slots[l.Slot].len)
	if c.opts.PerSlot {
		// Streams copy whole; then drop what lies past the prefix.
		prefix := make([]int32, 0, n)
		for _, nd := range c.slots[l.Slot].path {
			prefix = append(prefix, nd.tokens[:min(len(nd.tokens), n-len(prefix))]...)
		}
		c.kv.SeqCopy(l.Slot, dst, -1, -1)
		c.kv.SeqRemove(dst, n, -1)
		c.appendTokens(dst, prefix)
		return &Lease{c: c, Slot: dst}, nil
	}
	c.attach(dst, l.Slot, n)
	return &Lease{c: c, Slot: dst}, nil
}

// Release ends the sequence. With keep, its tokens stay cached for reuse;
// otherwise its cells are freed at once (a cancelled or preempted sequence).
func (l *Lease) Release(keep bool) {
	if l.released {
		panic("kvcache: lease released twice")
	}
	l.released = true
	c := l.c
	s := &c.slots[l.Slot]
	if !keep || s.len == 0 || c.opts.NoPrefixReuse {
		c.truncate(l.Slot, 0)
		s.state = slotFree
		return
	}
	c.tick++
	s.used = c.tick
	s.state = slotCached
	// In a shared pool, cached cells slow every decode; a stream of its own
	// costs nothing to others.
	for !c.opts.PerSlot && c.Reclaimable() > c.opts.MaxCachedCells && c.evictLRU() {
	}
}

// evictLRU evicts the least recently used cached slot; false if none.
func (c *Cache) evictLRU() bool {
	victim := -1
	for i := range c.slots {
		s := &c.slots[i]
		if s.state == slotCached && (victim < 0 || s.used < c.slots[victim].used) {
			victim = i
		}
	}
	if victim < 0 {
		return false
	}
	c.evict(victim)
	return true
}

// commonPrefix is how many leading tokens slot i shares with tokens.
func (c *Cache) commonPrefix(i int, tokens []int32) int {
	n := 0
	for _, nd := range c.slots[i].path {
		for _, t := range nd.tokens {
			if n >= len(tokens) || tokens[n] != t {
				return n
			}
			n++
		}
	}
	return n
}

// longestHolder walks namespace ns's tree along tokens (at most limit of
// them) and returns a slot holding the longest matching prefix and its
// length.
func (c *Cache) longestHolder(ns int, tokens []int32, limit int) (int, int) {
	best, bestLen := -1, 0
	var visit func(nd *node, depth int)
	visit = func(nd *node, depth int) {
		for _, ch := range nd.children {
			n := 0
			for n < len(ch.tokens) && depth+n < limit && ch.tokens[n] == tokens[depth+n] {
				n++
			}
			if n == 0 {
				continue
			}
			if depth+n > bestLen {
				for h := range ch.holders {
					best, bestLen = h, depth+n
					break
				}
			}
			if n == len(ch.tokens) {
				visit(ch, depth+n)
			}
		}
	}
	if limit > 0 {
		visit(c.root(ns), 0)
	}
	return best, bestLen
}

// attach makes empty slot dst share the first n cells of src.
func (c *Cache) attach(dst, src, n int) {
	if n == 0 {
		return
	}
	c.kv.SeqCopy(src, dst, 0, n)
	path := c.slots[src].path
	depth := 0
	var out []*node
	for _, nd := range path {
		if depth+len(nd.tokens) > n {
			c.split(nd, n-depth)
		}
		nd.holders[dst] = struct{}{}
		out = append(out, nd)
		depth += len(nd.tokens)
		if depth == n {
			break
		}
	}
	c.slots[dst].path = out
	c.slots[dst].len = n
}

// split cuts nd after k tokens; nd keeps the head and a new child holds the
// tail, with the same holders. Slot paths through nd gain the new node.
func (c *Cache) split(nd *node, k int) {
	tail := &node{tokens: append([]int32(nil), nd.tokens[k:]...), parent: nd, children: nd.children, holders: make(map[int]struct{}, len(nd.holders))}
	for _, ch := range tail.children {
		ch.parent = tail
	}
	for h := range nd.holders {
		tail.holders[h] = struct{}{}
		s := &c.slots[h]
		for i, p := range s.path {
			if p == nd {
				s.path = append(s.path[:i+1], append([]*node{tail}, s.path[i+1:]...)...)
				break
			}
		}
	}
	nd.tokens = nd.tokens[:k:k]
	nd.children = []*node{tail}
}

// appendTokens adds computed tokens to the end of slot i's path.
func (c *Cache) appendTokens(i int, tokens []int32) {
	if len(tokens) == 0 {
		return
	}
	s := &c.slots[i]
	var last *node
	if len(s.path) > 0 {
		last = s.path[len(s.path)-1]
	}
	if last != nil && len(last.holders) == 1 && len(last.children) == 0 {
		last.tokens = append(last.tokens, tokens...)
	} else {
		parent := c.root(s.ns)
		if last != nil {
			parent = last
		}
		nd := &node{tokens: append([]int32(nil), tokens...), parent: parent, holders: map[int]struct{}{i: {}}}
		parent.children = append(parent.children, nd)
		s.path = append(s.path, nd)
	}
	s.len += len(tokens)
	c.used += len(tokens)
}

// truncate keeps the first n tokens of slot i and frees the rest of its
// cells in the engine.
func (c *Cache) truncate(i, n int) {
	s := &c.slots[i]
	if n >= s.len {
		return
	}
	c.kv.SeqRemove(i, n, -1)
	depth := 0
	keep := 0
	for keep < len(s.path) && depth+len(s.path[keep].tokens) <= n {
		depth += len(s.path[keep].tokens)
		keep++
	}
	if depth < n { // n falls inside path[keep]
		nd := s.path[keep]
		c.split(nd, n-depth)
		keep++
		depth = n
	}
	for j := len(s.path) - 1; j >= keep; j-- {
		c.leave(s.path[j], i)
	}
	s.path = s.path[:keep]
	s.len = n
}

// leave removes slot i from nd's holders, deleting nd when nobody holds it.
func (c *Cache) leave(nd *node, i int) {
	delete(nd.holders, i)
	if len(nd.holders) > 0 {
		return
	}
	c.used -= len(nd.tokens)
	p := nd.parent
	for j, ch := range p.children {
		if ch == nd {
			p.children = append(p.children[:j], p.children[j+1:]...)
			break
		}
	}
	// Children of a node nobody holds are held by nobody either.
}

func (c *Cache) walk(nd *node, f func(*node)) {
	f(nd)
	for _, ch := range nd.children {
		c.walk(ch, f)
	}
}
