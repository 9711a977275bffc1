package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RunConfig says how to send a workload.
type RunConfig struct {
	BaseURL  string // e.g. http://127.0.0.1:8080 (with or without /v1)
	Endpoint string // /v1/completions (default), /v1/chat/completions, /v1/messages or /v1/responses
	APIKey   string
	// Model is used for items that name none.
	Model string
	// ModelHeader, when set, also sends each item's model in this header
	// (llmux-multiplexed-model-id).
	ModelHeader string
	// MaxConcurrency bounds requests in flight (0: unbounded). Each of
	// its slots is a client: it sends one request at a time, the next
	// item when its previous request has ended.
	MaxConcurrency int
	// ClientModel, when set, names the model of each item that names
	// none from the client (0 ≤ client < MaxConcurrency) that sends it and
	// how many requests that client has sent before (n, from 0); see
	// PairsModel. It needs MaxConcurrency > 0.
	ClientModel func(client, n int) string
	// RequestRate is the mean arrival rate in requests/s (0: all at once).
	RequestRate float64
	// Burstiness is the gamma shape of inter-arrival times: 1 is Poisson,
	// below 1 burstier, above 1 more regular.
	Burstiness float64
	IgnoreEOS  bool
	Seed       uint64
	SLO        SLO
	Timeout    time.Duration // per request (default 10 minutes)
	// Progress, if set, is told how many requests have finished.
	Progress func(done, total int)
	Client   *http.Client
}

// Run sends items and returns their records and the run's duration.
func Run(ctx context.Context, cfg RunConfig, items []Item) ([]Record, time.Duration, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = "/v1/completions"
	}
	if _, ok := APIs[cfg.Endpoint]; !ok {
		return nil, 0, fmt.Errorf("endpoint %q: want /v1/completions, /v1/chat/completions, /v1/messages or /v1/responses", cfg.Endpoint)
	}
	base := strings.TrimSuffix(strings.TrimSuffix(cfg.BaseURL, "/"), "/v1")
	url := base + cfg.Endpoint
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	}
	if cfg.Burstiness <= 0 {
		cfg.Burstiness = 1
	}
	if cfg.ClientModel != nil && cfg.MaxConcurrency <= 0 {
		return nil, 0, fmt.Errorf("a per-client model assignment needs a concurrency limit: each slot is a client")
	}
	// slots holds the free clients; every request takes one for its
	// duration. Unbounded concurrency has no clients (-1).
	var slots chan int
	var sent []int // requests each client has sent; only this loop touches it
	if cfg.MaxConcurrency > 0 {
		slots = make(chan int, cfg.MaxConcurrency)
		for c := range cfg.MaxConcurrency {
			slots <- c
		}
		sent = make([]int, cfg.MaxConcurrency)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x61727269))
	recs := make([]Record, len(items))
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	start := time.Now()
	for i, it := range items {
		if cfg.RequestRate > 0 && i > 0 {
			// Gamma inter-arrival with mean 1/rate.
			wait := gamma(rng, cfg.Burstiness) / (cfg.RequestRate * cfg.Burstiness)
			select {
			case <-time.After(time.Duration(wait * float64(time.Second))):
			case <-ctx.Done():
				wg.Wait()
				return nil, 0, ctx.Err()
			}
		}
		client := -1
		if slots != nil {
			select {
			case client = <-slots:
			case <-ctx.Done():
				wg.Wait()
				return nil, 0, ctx.Err()
			}
			if it.Model == "" && cfg.ClientModel != nil {
				it.Model = cfg.ClientModel(client, sent[client])
			}
			sent[client]++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if slots != nil {
				defer func() { slots <- client }()
			}
			recs[i] = send(ctx, cfg, url, it)
			recs[i].Client = client
			mu.Lock()
			done++
			if cfg.Progress != nil {
				cfg.Progress(done, len(items))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return recs, time.Since(start), nil
}

// gamma draws from Gamma(shape, 1) (Marsaglia and Tsang).
func gamma(rng *rand.Rand, shape float64) float64 {
	if shape < 1 {
		return gamma(rng, shape+1) * math.Pow(rng.Float64(), 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// APIs maps each endpoint the runner speaks to its --api name.
var APIs = map[string]string{"/v1/completions": "completions", "/v1/chat/completions": "chat", "/v1/messages": "messages", "/v1/responses": "responses"}

func body(cfg RunConfig, it Item) ([]byte, string) {
	model := it.Model
	if model == "" {
		model = cfg.Model
	}
	req := map[string]any{"model": model, "stream": true}
	msgs := it.Messages
	if len(msgs) == 0 {
		msgs = []Message{{"user", it.Prompt}}
	}
	switch cfg.Endpoint {
	case "/v1/chat/completions":
		req["messages"] = msgs
	case "/v1/messages":
		// Anthropic's API: max_tokens is required (0: the server's bound).
		req["messages"] = msgs
		req["max_tokens"] = 1 << 20
	case "/v1/responses":
		req["input"] = msgs
	default:
		req["prompt"] = it.Prompt
	}
	if cfg.Endpoint == "/v1/chat/completions" || cfg.Endpoint == "/v1/completions" {
		req["stream_options"] = map[string]any{"include_usage": true}
	}
	if it.MaxTokens > 0 {
		switch cfg.Endpoint {
		case "/v1/responses":
			req["max_output_tokens"] = it.MaxTokens
		default:
			req["max_tokens"] = it.MaxTokens
		}
	}
	if cfg.IgnoreEOS {
		req["ignore_eos"] = true
	}
	b, _ := json.Marshal(req)
	return b, model
}

// send runs one streaming request and records its timeline.
func send(ctx context.Context, cfg RunConfig, url string, it Item) (rec Record) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	payload, model := body(cfg, it)
	rec.PromptTokens = it.PromptWords
	rec.Model = model
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	// A request on a kept-alive connection that the server has just closed
	// (llama-server closes each after a few requests) fails before the
	// server reads it. With an idempotency key net/http sends it again on
	// a new connection instead of failing it; the key is the request's
	// own, so a server that honours such keys sees no duplicate.
	req.Header.Set("Idempotency-Key", idempotencyKey())
	if cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	if cfg.ModelHeader != "" {
		req.Header.Set(cfg.ModelHeader, model)
	}
	rec.Start = time.Now()
	resp, err := cfg.Client.Do(req)
	if err != nil {
		rec.Err = "connection"
		if errors.Is(err, context.DeadlineExceeded) {
			rec.Err = "timeout"
		}
		return rec
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		rec.Err = "http_" + strconv.Itoa(resp.StatusCode)
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			rec.RetryAfter = time.Duration(s) * time.Second
		}
		return rec
	}
	var last time.Time
	chunks, usageTokens, usagePrompt := 0, -1, -1
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if bytes.Equal(data, []byte("[DONE]")) {
			break
		}
		var ch chunk
		if err := json.Unmarshal(data, &ch); err != nil {
			rec.Err = "bad_chunk"
			return rec
		}
		if ch.Error != nil || ch.Type == "response.failed" {
			rec.Err = "stream_error"
			return rec
		}
		if u := ch.usage(); u != nil {
			usageTokens, usagePrompt = u.CompletionTokens+u.OutputTokens, u.PromptTokens+u.InputTokens+u.CacheRead
		}
		if ch.Type == "message_stop" || ch.Type == "response.completed" || ch.Type == "response.incomplete" {
			break
		}
		if !ch.hasText() {
			continue
		}
		now := time.Now()
		if chunks == 0 {
			rec.TTFT = now.Sub(rec.Start)
		} else {
			rec.ITLs = append(rec.ITLs, now.Sub(last))
		}
		last = now
		chunks++
		if it.CancelAfter > 0 && chunks >= it.CancelAfter {
			rec.Err = "client_cancel"
			rec.Latency = now.Sub(rec.Start)
			rec.OutputTokens = chunks
			return rec
		}
	}
	if err := sc.Err(); err != nil {
		rec.Err = "stream_cut"
		return rec
	}
	rec.Latency = time.Since(rec.Start)
	rec.OutputTokens = chunks
	if usageTokens >= 0 {
		rec.OutputTokens = usageTokens
	}
	if usagePrompt > 0 {
		rec.PromptTokens = usagePrompt
	}
	if chunks == 0 && rec.OutputTokens == 0 {
		rec.TTFT = rec.Latency
	}
	return rec
}

// chunk is one streamed event of any of the four APIs: chat and
// completions chunks (choices, usage), Anthropic's events (type, delta,
// usage) and the Responses API's (type, delta, response.usage).
type chunk struct {
	Type    string `json:"type"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Delta    json.RawMessage `json:"delta"`
	Usage    *usage          `json:"usage"`
	Response *struct {
		Usage *usage `json:"usage"`
	} `json:"response"`
	Error *json.RawMessage `json:"error"`
}

// usage counts tokens under each API's names (only one set is present).
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	InputTokens      int `json:"input_tokens"`
	OutputTokens     int `json:"output_tokens"`
	CacheRead        int `json:"cache_read_input_tokens"`
}

// usage is the event's final usage: a chat or completions usage chunk,
// Anthropic's message_delta, a Responses API's completed response.
func (c chunk) usage() *usage {
	switch {
	case c.Type == "message_delta" || c.Type == "":
		return c.Usage
	case (c.Type == "response.completed" || c.Type == "response.incomplete") && c.Response != nil:
		return c.Response.Usage
	}
	return nil
}

func (c chunk) hasText() bool {
	for _, ch := range c.Choices {
		if ch.Text != "" || ch.Delta.Content != "" {
			return true
		}
	}
	switch c.Type {
	case "content_block_delta":
		var d struct {
			Text     string `json:"text"`
			Thinking string `json:"thinking"`
		}
		return json.Unmarshal(c.Delta, &d) == nil && d.Text+d.Thinking != ""
	case "response.output_text.delta", "response.reasoning_text.delta":
		var d string
		return json.Unmarshal(c.Delta, &d) == nil && d != ""
	}
	return false
}

// idempotencyKey is a fresh random key for one request.
func idempotencyKey() string {
	var b [16]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
