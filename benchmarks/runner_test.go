package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// modelRecorder is a fake OpenAI server that streams one token and
// records the model each request names and the most requests it had in
// flight at once.
type modelRecorder struct {
	mu       sync.Mutex
	models   map[string]int
	inFlight int
	peak     int
}

func (m *modelRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string `json:"model"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	m.models[req.Model]++
	m.inFlight++
	m.peak = max(m.peak, m.inFlight)
	n := m.models[req.Model]
	m.mu.Unlock()
	defer func() { m.mu.Lock(); m.inFlight--; m.mu.Unlock() }()
	time.Sleep(time.Duration(1+n%3) * time.Millisecond) // uneven, so clients interleave
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"%s\"}]}\n\n", req.Model)
	fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n")
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// TestRunPairsAlternatesPerClient runs the churn shape against a server
// that records the model each request names: every client alternates
// between its two models, and the server saw what the records say.
func TestRunPairsAlternatesPerClient(t *testing.T) {
	rec := &modelRecorder{models: map[string]int{}}
	hs := httptest.NewServer(rec)
	defer hs.Close()
	models := []string{"a", "b", "c"}
	const clients, n = 4, 60
	items, err := Generate(WorkloadConfig{Dataset: "stories", OutputLen: 1, Models: models, ModelDist: "pairs", Seed: 1}, n)
	if err != nil {
		t.Fatal(err)
	}
	cfg := RunConfig{BaseURL: hs.URL, MaxConcurrency: clients, ClientModel: PairsModel(models)}
	recs, dur, err := Run(context.Background(), cfg, items)
	if err != nil {
		t.Fatal(err)
	}
	perClient := map[int][]string{}
	sent := map[string]int{}
	for i, r := range recs {
		if !r.OK() {
			t.Fatalf("request %d failed: %s", i, r.Err)
		}
		if r.Client < 0 || r.Client >= clients {
			t.Fatalf("request %d: client %d, want 0..%d", i, r.Client, clients-1)
		}
		perClient[r.Client] = append(perClient[r.Client], r.Model)
		sent[r.Model]++
	}
	if len(perClient) != clients {
		t.Fatalf("%d clients sent requests, want %d", len(perClient), clients)
	}
	for c, seq := range perClient {
		for k, m := range seq {
			if want := models[(c+k%2)%len(models)]; m != want {
				t.Fatalf("client %d's request %d named %q, want %q: sequence %v", c, k, m, want, seq)
			}
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	total := 0
	for _, m := range models {
		if rec.models[m] != sent[m] {
			t.Errorf("model %s: server saw %d requests, records say %d", m, rec.models[m], sent[m])
		}
		total += rec.models[m]
	}
	if total != n || len(rec.models) != len(models) {
		t.Errorf("server saw %v, want %d requests over %v", rec.models, n, models)
	}
	if rec.peak > clients {
		t.Errorf("%d requests in flight at once, want at most %d", rec.peak, clients)
	}
	s := Summarize(recs, dur, SLO{})
	for _, m := range models {
		if s.PerModel[m] != sent[m] {
			t.Errorf("summary: %d requests for %s, want %d", s.PerModel[m], m, sent[m])
		}
	}

	// The assignment needs clients.
	cfg.MaxConcurrency = 0
	if _, _, err := Run(context.Background(), cfg, items); err == nil {
		t.Error("per-client models without a concurrency limit: no error")
	}
}

// TestRunSurvivesAServerClosingKeptAliveConnections: a server that drops a
// kept-alive connection when a second request arrives on it (as
// llama-server does after a few requests) costs no request: each is sent
// again on a new connection, and every one completes.
func TestRunSurvivesAServerClosingKeptAliveConnections(t *testing.T) {
	var mu sync.Mutex
	served := map[string]int{} // requests read per connection
	dropped := 0
	rec := &modelRecorder{models: map[string]int{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served[r.RemoteAddr]++
		drop := served[r.RemoteAddr] > 1
		if drop {
			dropped++
		}
		mu.Unlock()
		if drop {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		rec.ServeHTTP(w, r)
	}))
	defer hs.Close()
	items, err := Generate(WorkloadConfig{Dataset: "stories", OutputLen: 1, Seed: 1}, 8)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := Run(context.Background(), RunConfig{BaseURL: hs.URL, MaxConcurrency: 1}, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if !r.OK() {
			t.Fatalf("request %d failed: %s", i, r.Err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if dropped == 0 {
		t.Fatal("no request arrived on a reused connection: the test did not exercise a dropped one")
	}
}
