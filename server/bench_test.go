package server

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmux/llmux/benchmarks"
	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/scheduler"
)

var benchPreset = flag.String("server.model", "bench", "preset for BenchmarkSSEOverhead")

// BenchmarkSSEOverhead: 16 concurrent streams (128 generated tokens each),
// first in-process through the scheduler, then over HTTP+SSE through the
// server, in one run. Reports both aggregate output tokens/s over the window
// in which all streams decode, their ratio, and the per-token latency the
// HTTP layer adds (scheduler emission to client receipt), p50 and p99, and
// the server's own share of it (emission to the chunk flushed to the
// socket), p50; and the inter-token latency p50 of both paths, whose
// difference is the steady-state cost per token. It runs with the scheduler's handoff pause off and at its
// default.
func BenchmarkSSEOverhead(b *testing.B) {
	m, err := engine.LoadModel(modeltest.Preset(b, *benchPreset), engine.ModelOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, h := range []struct {
		name string
		d    time.Duration
	}{{"off", -1}, {"default", 0}} {
		b.Run("handoff="+h.name, func(b *testing.B) { sseOverhead(b, m, h.d) })
	}
}

func sseOverhead(b *testing.B, m *engine.Model, handoff time.Duration) {
	const streams, gen = 16, 128
	sched, err := scheduler.New(m, scheduler.Options{Parallel: streams, CacheSlots: -1, Cells: streams * 300, NoPrefixCache: true, Handoff: handoff})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go sched.Run(ctx)
	defer func() { cancel(); sched.Close() }()
	srv := New(backendFor(b, sched, "m"), Options{})
	var mu sync.Mutex
	emitted := map[string][]time.Time{}
	var serverLat []time.Duration // emission to the chunk flushed to the socket
	srv.traceWrite = func(id string, at time.Time) {
		d := time.Since(at)
		mu.Lock()
		emitted[id] = append(emitted[id], at)
		serverLat = append(serverLat, d)
		mu.Unlock()
	}
	hs := &http.Server{Handler: srv.Handler()}
	ln := listen(b)
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String() + "/v1/completions"
	var inproc, overHTTP float64
	var lat, itlIn, itlHTTP []time.Duration
	for range b.N {
		// In-process.
		times := make([][]time.Time, streams)
		var wg sync.WaitGroup
		for i := range streams {
			st, err := sched.Submit(context.Background(), scheduler.Request{Prompt: benchPrompt(m, i), MaxTokens: gen, IgnoreEOS: true})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ev, err := st.Recv(context.Background())
					if err == io.EOF {
						return
					}
					if ev.Text != "" { // what the HTTP side sends as a chunk
						times[i] = append(times[i], time.Now())
					}
				}
			}()
		}
		wg.Wait()
		inproc += benchmarks.SteadyRate(times)
		itlIn = append(itlIn, gaps(times)...)
		// Over HTTP.
		times = make([][]time.Time, streams)
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
				recv := sseStream(b, url, id, benchPromptText(i), gen)
				times[i] = recv
				mu.Lock()
				em := emitted[id]
				mu.Unlock()
				for k := range min(len(em), len(recv)) {
					lat = append(lat, recv[k].Sub(em[k]))
				}
			}()
		}
		wg.Wait()
		overHTTP += benchmarks.SteadyRate(times)
		itlHTTP = append(itlHTTP, gaps(times)...)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(median(itlIn).Microseconds())/1000, "itl_inproc_p50_ms")
	b.ReportMetric(float64(median(itlHTTP).Microseconds())/1000, "itl_http_p50_ms")
	b.ReportMetric(inproc/float64(b.N), "inproc_tok/s")
	b.ReportMetric(overHTTP/float64(b.N), "http_tok/s")
	b.ReportMetric(overHTTP/inproc, "ratio")
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "added_p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "added_p99_ms")
	}
	sort.Slice(serverLat, func(i, j int) bool { return serverLat[i] < serverLat[j] })
	if len(serverLat) > 0 {
		b.ReportMetric(float64(serverLat[len(serverLat)/2].Microseconds())/1000, "server_p50_ms")
	}
}

// gaps are the intervals between consecutive chunks of each stream.
func gaps(times [][]time.Time) []time.Duration {
	var out []time.Duration
	for _, ts := range times {
		for k := 1; k < len(ts); k++ {
			out = append(out, ts[k].Sub(ts[k-1]))
		}
	}
	return out
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func benchPromptText(i int) string {
	w := strings.Fields("the cat saw a big red ball and ran to the park with her mom")
	var sb strings.Builder
	for j := 0; j < 100; j++ {
		sb.WriteString(w[(i*5+j*3)%len(w)])
		sb.WriteByte(' ')
	}
	return sb.String()
}

func benchPrompt(m *engine.Model, i int) []int32 {
	toks, _ := m.Tokenize(benchPromptText(i), true, false)
	return toks
}

// sseStream posts a streaming greedy completion (the same tokens as the
// in-process run) and returns the receipt time of every chunk with text.
func sseStream(b *testing.B, url, id, prompt string, maxTokens int) []time.Time {
	body := fmt.Sprintf(`{"model":"m","stream":true,"ignore_eos":true,"temperature":0,"max_tokens":%d,"prompt":%q}`, maxTokens, prompt)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Error(err)
		return nil
	}
	defer resp.Body.Close()
	var out []time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("data: {")) && bytes.Contains(line, []byte(`"text":"`)) && !bytes.Contains(line, []byte(`"text":""`)) {
			out = append(out, time.Now())
		}
	}
	return out
}

func listen(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}
