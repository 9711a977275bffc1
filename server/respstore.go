package server

import (
	"container/list"
	"sync"
	"time"

	"github.com/llmux/llmux/openai"
)

// responseStore keeps stored Responses API responses in the serving
// process (not in a replica, so a conversation continues on whichever
// replica serves its next turn), bounded by count and bytes, each for a
// TTL, each visible only to the API key that created it. The oldest go
// first when a bound is reached.
type responseStore struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	ttl      time.Duration
	now      func() time.Time

	byID  map[string]*list.Element // of *storedResponse
	order *list.List               // oldest first
	bytes int64
}

// storedResponse is one response with the conversation it ends: the chat
// messages so far (input and output), what a later previous_response_id
// continues from.
type storedResponse struct {
	id      string
	owner   string // a digest of the creating request's key ("" without auth)
	created time.Time
	resp    openai.Response
	history []openai.Message
	size    int64
}

func newResponseStore(max int, maxBytes int64, ttl time.Duration) *responseStore {
	return &responseStore{max: max, maxBytes: maxBytes, ttl: ttl, now: time.Now, byID: map[string]*list.Element{}, order: list.New()}
}

// put stores r, dropping the oldest responses (and the expired) while a
// bound is exceeded. A response larger than the byte bound is not kept.
func (s *responseStore) put(r *storedResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.size > s.maxBytes || s.max <= 0 {
		return
	}
	if old, ok := s.byID[r.id]; ok {
		s.remove(old)
	}
	s.byID[r.id] = s.order.PushBack(r)
	s.bytes += r.size
	now := s.now()
	for s.order.Len() > 0 {
		front := s.order.Front()
		oldest := front.Value.(*storedResponse)
		if s.order.Len() <= s.max && s.bytes <= s.maxBytes && now.Sub(oldest.created) < s.ttl {
			break
		}
		s.remove(front)
	}
}

func (s *responseStore) remove(e *list.Element) {
	r := e.Value.(*storedResponse)
	s.order.Remove(e)
	delete(s.byID, r.id)
	s.bytes -= r.size
}

// get returns the response id stored by owner; another owner's, an
// expired or an unknown one is not found alike.
func (s *responseStore) get(id, owner string) (*storedResponse, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	r := e.Value.(*storedResponse)
	if s.now().Sub(r.created) >= s.ttl {
		s.remove(e)
		return nil, false
	}
	if r.owner != owner {
		return nil, false
	}
	return r, true
}

// delete removes owner's response id.
func (s *responseStore) delete(id, owner string) bool {
	if _, ok := s.get(id, owner); !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[id]; ok {
		s.remove(e)
	}
	return true
}

// usage is the count and bytes held.
func (s *responseStore) usage() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len(), s.bytes
}
