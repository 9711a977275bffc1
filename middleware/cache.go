package middleware

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
)

// CacheConfig bounds the response cache.
type CacheConfig struct {
	// MaxEntries is the most responses kept (default 1024); the least
	// recently used goes first.
	MaxEntries int `json:"max_entries,omitempty" yaml:"max_entries,omitempty"`
	// TTL is how long a response stays valid, as a Go duration (default
	// "10m").
	TTL string `json:"ttl,omitempty" yaml:"ttl,omitempty"`
}

// Validate checks the bounds.
func (c *CacheConfig) Validate() error {
	if c.MaxEntries < 0 {
		return fmt.Errorf("max_entries: must not be negative")
	}
	if c.TTL != "" {
		d, err := time.ParseDuration(c.TTL)
		if err != nil || d <= 0 {
			return fmt.Errorf("ttl: %q is not a positive duration (e.g. 10m)", c.TTL)
		}
	}
	return nil
}

// Cache answers a repeated deterministic request — greedy (temperature 0)
// or with a seed the client chose — from the response the deployment it
// wraps gave the first time. The key covers the model name (which names
// the adapter too), every message or prompt (the model's template renders
// them the same way each time) and every parameter. Anything else passes
// through uncached. Only a response that ended without error is kept.
type Cache struct {
	next *deploy.Handle
	max  int
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex // guards the rest
	lru     *list.List // of *cacheEntry, most recent first
	entries map[[32]byte]*list.Element
	hits    int64
	misses  int64
}

type cacheEntry struct {
	key     [32]byte
	header  llm.Header
	events  []llm.Event
	expires time.Time
}

// NewCache caches next's responses.
func NewCache(cfg CacheConfig, next *deploy.Handle) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{next: next, max: cfg.MaxEntries, ttl: 10 * time.Minute, now: time.Now, lru: list.New(), entries: map[[32]byte]*list.Element{}}
	if c.max == 0 {
		c.max = 1024
	}
	if cfg.TTL != "" {
		c.ttl, _ = time.ParseDuration(cfg.TTL)
	}
	return c, nil
}

// Deterministic reports whether req's output is reproducible, and so
// cacheable.
func Deterministic(req *llm.Request) bool {
	return req.Params.Temperature <= 0 || req.Params.SeedGiven
}

// key is the request's identity without what differs between identical
// requests: its id, trace and deadline.
func key(req *llm.Request) ([32]byte, bool) {
	r := *req
	r.ID, r.TraceParent, r.Params.Deadline = "", "", time.Time{}
	b, err := json.Marshal(&r)
	if err != nil {
		return [32]byte{}, false
	}
	return sha256.Sum256(b), true
}

// Stats counts lookups of deterministic requests.
func (c *Cache) Stats() (hits, misses int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

func (c *Cache) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	if !Deterministic(req) {
		return c.next.Stream(ctx, req)
	}
	k, ok := key(req)
	if !ok {
		return c.next.Stream(ctx, req)
	}
	if e := c.lookup(k); e != nil {
		return &replay{header: e.header, events: e.events}, nil
	}
	st, le := c.next.Stream(ctx, req)
	if le != nil {
		return nil, le
	}
	return &recording{Stream: st, c: c, key: k}, nil
}

func (c *Cache) lookup(k [32]byte) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if ok {
		e := el.Value.(*cacheEntry)
		if c.now().Before(e.expires) {
			c.lru.MoveToFront(el)
			c.hits++
			return e
		}
		c.lru.Remove(el)
		delete(c.entries, k)
	}
	c.misses++
	return nil
}

func (c *Cache) store(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.expires = c.now().Add(c.ttl)
	if el, ok := c.entries[e.key]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[e.key] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).key)
	}
}

// recording passes a response through and keeps it once it has ended
// well.
type recording struct {
	llm.Stream
	c      *Cache
	key    [32]byte
	events []llm.Event
	done   bool // the response ended or failed: nothing more to record
}

func (r *recording) Recv(ctx context.Context) (llm.Event, bool) {
	ev, ok := r.Stream.Recv(ctx)
	if r.done {
		return ev, ok
	}
	if !ok { // cancelled: nothing to keep
		r.done, r.events = true, nil
		return ev, ok
	}
	r.events = append(r.events, ev)
	if ev.Final {
		if !failed(r.events) {
			r.c.store(&cacheEntry{key: r.key, header: r.Stream.Header(), events: r.events})
		}
		r.done, r.events = true, nil
	}
	return ev, ok
}

func failed(evs []llm.Event) bool {
	for _, ev := range evs {
		if ev.Error != nil {
			return true
		}
	}
	return false
}

// replay serves a kept response. Its usage keeps the token counts and
// drops the original's timings: nothing was queued or computed this time.
type replay struct {
	header llm.Header
	events []llm.Event
	next   int
	closed bool
}

func (r *replay) Header() llm.Header { return r.header }

func (r *replay) Recv(ctx context.Context) (llm.Event, bool) {
	if r.closed || r.next >= len(r.events) {
		return llm.Event{}, false
	}
	if ctx.Err() != nil {
		r.closed = true
		return llm.Event{Final: true, Error: llm.Errorf(llm.CodeCancelled, "", "cancelled")}, false
	}
	ev := r.events[r.next]
	r.next++
	ev.At = time.Now()
	if ev.Usage != nil {
		u := *ev.Usage
		u.Timings = llm.Timings{}
		ev.Usage = &u
	}
	return ev, true
}

func (r *replay) Close() { r.closed = true }
