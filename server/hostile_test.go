package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

// syncBuffer is a log sink the server's goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// served is a server running through Serve on a loopback listener, so
// its http.Server settings (header limits, timeouts, the loopback Host
// rule) are the ones llmux serve runs with.
type served struct {
	addr      string
	srv       *Server
	sched     *scheduler.Scheduler
	modelPath string
	log       *syncBuffer
}

func serveTiny(t *testing.T, opts Options, so scheduler.Options, run bool) *served {
	t.Helper()
	path := modeltest.Preset(t, "tiny")
	m, sched := loadScheduler(t, path, so)
	schedCtx, stopSched := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	if run {
		go func() { sched.Run(schedCtx); close(schedDone) }()
	}
	if !run {
		stopSched() // the scheduler starts only to stop, at cleanup
	}
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	srv := New(backendFor(t, sched, "tiny"), opts)
	addr, stop, done := serveOnLoopback(t, srv)
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		stopSched()
		if !run {
			go func() { sched.Run(schedCtx); close(schedDone) }()
		}
		<-schedDone
		sched.Close()
		m.Close()
	})
	return &served{addr: addr, srv: srv, sched: sched, modelPath: path, log: logs}
}

// rawRequest sends one request as written, over its own connection, and
// reads the response.
func rawRequest(t *testing.T, addr, req string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute)) // liveness bound, not a speed target
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

// hostile is one request of the table: the method, the request target as
// sent, header lines that replace the defaults of the same name ("Name:"
// alone removes one), a body, and what must come back.
type hostile struct {
	name   string
	method string
	path   string
	hdr    []string
	body   string
	status int
	code   string // the error's code, when it has one to check
	param  string // the error's param, when it has one to check
	raw    bool   // answered by net/http before llmux: no OpenAI body
	check  func(h http.Header, body []byte) error
}

func (h hostile) request(host string) string {
	method := h.method
	if method == "" {
		method = http.MethodPost
		if h.body == "" {
			method = http.MethodGet
		}
	}
	hdr := map[string]string{"Host": host, "Authorization": "Bearer sekret", "Connection": "close"}
	order := []string{"Host", "Authorization", "Connection"}
	if h.body != "" {
		hdr["Content-Type"] = "application/json"
		hdr["Content-Length"] = strconv.Itoa(len(h.body))
		order = append(order, "Content-Type", "Content-Length")
	}
	var extra []string
	for _, line := range h.hdr {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		if _, ok := hdr[k]; ok {
			if v == "" {
				delete(hdr, k)
			} else {
				hdr[k] = v
			}
			continue
		}
		extra = append(extra, line)
	}
	var b strings.Builder
	b.WriteString(method + " " + h.path + " HTTP/1.1\r\n")
	for _, k := range order {
		if v, ok := hdr[k]; ok {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	for _, line := range extra {
		b.WriteString(line + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(h.body)
	return b.String()
}

// TestHostileRequests sends broken and hostile requests (the public
// advisories of ollama, vLLM and llama.cpp, and more) to a server with
// API, admin and metrics keys, CORS and tight limits. Each must get its
// status and OpenAI's error shape; none may get a 5xx, crash a handler or
// show an absolute path; then good requests still succeed, and one without
// max_tokens ends at --max-tokens-limit.
func TestHostileRequests(t *testing.T) {
	limits := openai.DefaultLimits()
	limits.MaxPromptBytes = 32 << 10
	limits.MaxTokens = 8
	s := serveTiny(t, Options{
		APIKeys: []string{"sekret"}, AdminKeys: []string{"adm1n"}, MetricsAuth: true,
		AllowedHosts: []string{"llm.internal"}, CORSOrigins: []string{"https://app.example"},
		MaxBodyBytes: 256 << 10, Limits: &limits,
	}, scheduler.Options{}, true)
	host := s.addr
	chat, comp := "/v1/chat/completions", "/v1/completions"
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	chatWith := func(extra string) string { return `{"model":"tiny",` + msgs + `,"max_tokens":2` + extra + `}` }
	compWith := func(extra string) string { return `{"model":"tiny","prompt":"hi","max_tokens":2` + extra + `}` }
	schema := func(sc string) string {
		return chatWith(`,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":` + sc + `}}`)
	}
	tool := func(params string) string {
		return chatWith(`,"tools":[{"type":"function","function":{"name":"f","parameters":` + params + `}}]`)
	}
	deepSchema := strings.Repeat(`{"type":"array","items":`, 40) + `{"type":"string"}` + strings.Repeat(`}`, 40)
	manyValues := `{"enum":[` + strings.TrimSuffix(strings.Repeat("1,", 5000), ",") + `]}`
	manyHeaders := make([]string, 0, 101)
	for i := range 101 {
		manyHeaders = append(manyHeaders, fmt.Sprintf("X-Flood-%d: x", i))
	}
	bigTokens := "[" + strings.TrimSuffix(strings.Repeat("1,", 3000), ",") + "]"
	bias := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`"%d":1`, i)
		}
		return `{` + strings.Join(parts, ",") + `}`
	}
	manyMsgs := `[` + strings.TrimSuffix(strings.Repeat(`{"role":"user","content":"x"},`, 1025), ",") + `]`
	noACAO := func(h http.Header, _ []byte) error {
		if v := h.Get("Access-Control-Allow-Origin"); v != "" {
			return fmt.Errorf("Access-Control-Allow-Origin %q for an unlisted origin", v)
		}
		return nil
	}
	wantACAO := func(h http.Header, _ []byte) error {
		if v := h.Get("Access-Control-Allow-Origin"); v != "https://app.example" {
			return fmt.Errorf("Access-Control-Allow-Origin %q", v)
		}
		return nil
	}
	cases := []hostile{
		// DNS rebinding: on a loopback listener only loopback names (and
		// --allowed-hosts) pass.
		{name: "rebound host", path: "/v1/models", hdr: []string{"Host: evil.example"}, status: 403, code: "host_not_allowed"},
		{name: "rebound host with port", path: "/health", hdr: []string{"Host: evil.example:8080"}, status: 403, code: "host_not_allowed"},
		{name: "localhost as a subdomain of another name", path: "/health", hdr: []string{"Host: localhost.evil.example"}, status: 403, code: "host_not_allowed"},
		{name: "loopback ip inside another name", path: "/health", hdr: []string{"Host: 127.0.0.1.nip.io"}, status: 403, code: "host_not_allowed"},
		{name: "0.0.0.0 day", path: "/health", hdr: []string{"Host: 0.0.0.0:" + strings.Split(host, ":")[1]}, status: 403, code: "host_not_allowed"},
		{name: "absolute-form target names another host", path: "http://evil.example/v1/models", status: 403, code: "host_not_allowed"},
		{name: "rebound host on a generation route", path: chat, hdr: []string{"Host: attacker.test"}, body: chatWith(""), status: 403, code: "host_not_allowed"},
		{name: "host localhost", path: "/health", hdr: []string{"Host: localhost"}, status: 200},
		{name: "host LOCALHOST with port", path: "/health", hdr: []string{"Host: LOCALHOST:1234"}, status: 200},
		{name: "host [::1] with port", path: "/health", hdr: []string{"Host: [::1]:8080"}, status: 200},
		{name: "host *.localhost", path: "/health", hdr: []string{"Host: app.localhost"}, status: 200},
		{name: "host from --allowed-hosts", path: "/health", hdr: []string{"Host: llm.internal:9000"}, status: 200},
		// Header floods.
		{name: "101 header fields", path: "/health", hdr: manyHeaders, status: 431, code: "request_header_fields_too_large"},
		{name: "33 KiB of headers", path: "/health", hdr: []string{"X-Big: " + strings.Repeat("a", 33<<10)}, status: 431, code: "request_header_fields_too_large"},
		{name: "64 KiB of headers (cut by net/http)", path: "/health", hdr: []string{"X-Big: " + strings.Repeat("a", 64<<10)}, status: 431, raw: true},
		{name: "header name with a space (net/http)", path: "/health", hdr: []string{"X Bad: 1"}, status: 400, raw: true},
		{name: "conflicting Content-Length (smuggling)", path: comp, hdr: []string{"Content-Length: 5", "Content-Length: 6"}, body: compWith(""), status: 400, raw: true},
		// Authentication on the matched route, not on a prefix.
		{name: "no API key", path: "/v1/models", hdr: []string{"Authorization:"}, status: 401, code: "invalid_api_key"},
		{name: "wrong API key", path: "/v1/models", hdr: []string{"Authorization: Bearer nope"}, status: 401, code: "invalid_api_key"},
		{name: "API key prefix", path: "/v1/models", hdr: []string{"Authorization: Bearer sekre"}, status: 401, code: "invalid_api_key"},
		{name: "API key with a suffix", path: "/v1/models", hdr: []string{"Authorization: Bearer sekret2"}, status: 401, code: "invalid_api_key"},
		{name: "lower-case scheme", path: "/v1/models", hdr: []string{"Authorization: bearer sekret"}, status: 401, code: "invalid_api_key"},
		{name: "basic auth", path: "/v1/models", hdr: []string{"Authorization: Basic c2VrcmV0Og=="}, status: 401, code: "invalid_api_key"},
		{name: "8 KiB key", path: "/v1/models", hdr: []string{"Authorization: Bearer " + strings.Repeat("k", 8<<10)}, status: 401, code: "invalid_api_key"},
		{name: "double slash prefix", path: "//v1/models", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "upper-case prefix", path: "/V1/models", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "trailing slash", path: "/v1/models/", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "encoded dot segments", path: "/v1/%2e%2e/v1/models", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "dot-dot after the route", path: "/v1/models/../models", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "dot segment", path: "/./v1/models", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "dot-dot as a model id needs the key", path: "/v1/models/..", hdr: []string{"Authorization:"}, status: 401, code: "invalid_api_key"},
		{name: "encoded slash matches the route and needs the key", path: "/v1%2Fmodels", hdr: []string{"Authorization:"}, status: 401, code: "invalid_api_key"},
		{name: "generation behind a double slash", path: "//v1/chat/completions", hdr: []string{"Authorization:"}, body: chatWith(""), status: 404, code: "unknown_url"},
		{name: "generation with a wrong method", method: "GET", path: chat, hdr: []string{"Authorization:"}, status: 405},
		{name: "unknown method", method: "BREW", path: "/v1/models", status: 405},
		{name: "metrics without a key", path: "/metrics", hdr: []string{"Authorization:"}, status: 401, code: "invalid_api_key"},
		{name: "metrics with a wrong key", path: "/metrics", hdr: []string{"Authorization: Bearer nope"}, status: 401, code: "invalid_api_key"},
		{name: "metrics with the API key", path: "/metrics", status: 200},
		{name: "health needs no key", path: "/health", hdr: []string{"Authorization:"}, status: 200},
		{name: "ready needs no key", path: "/ready", hdr: []string{"Authorization:"}, status: 200},
		{name: "admin without a key", path: "/-/status", hdr: []string{"Authorization:"}, status: 401, code: "invalid_api_key"},
		{name: "admin with the API key", path: "/-/status", status: 401, code: "invalid_api_key"},
		{name: "admin with the admin key", path: "/-/status", hdr: []string{"Authorization: Bearer adm1n"}, status: 200},
		{name: "admin behind a double slash", path: "//-/status", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "admin upper-case", path: "/-/STATUS", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		{name: "admin trailing slash", path: "/-/status/", hdr: []string{"Authorization:"}, status: 404, code: "unknown_url"},
		// CORS: exact origins only.
		{name: "preflight from an unlisted origin", method: "OPTIONS", path: chat, hdr: []string{"Origin: https://evil.example", "Access-Control-Request-Method: POST"}, status: 403, code: "origin_not_allowed", check: noACAO},
		{name: "preflight from a listed origin's lookalike", method: "OPTIONS", path: chat, hdr: []string{"Origin: https://app.example.evil.com", "Access-Control-Request-Method: POST"}, status: 403, code: "origin_not_allowed", check: noACAO},
		{name: "preflight from origin null", method: "OPTIONS", path: chat, hdr: []string{"Origin: null", "Access-Control-Request-Method: POST"}, status: 403, code: "origin_not_allowed", check: noACAO},
		{name: "preflight from the listed origin", method: "OPTIONS", path: chat, hdr: []string{"Origin: https://app.example", "Access-Control-Request-Method: POST"}, status: 204, check: wantACAO},
		{name: "request from an unlisted origin gets no CORS headers", path: "/health", hdr: []string{"Origin: https://evil.example"}, status: 200, check: noACAO},
		// Bodies must be JSON.
		{name: "text/plain body (no-preflight CSRF)", path: chat, hdr: []string{"Content-Type: text/plain"}, body: chatWith(""), status: 415, code: "unsupported_media_type"},
		{name: "form body (curl -d default)", path: comp, hdr: []string{"Content-Type: application/x-www-form-urlencoded"}, body: compWith(""), status: 415, code: "unsupported_media_type"},
		{name: "multipart body", path: comp, hdr: []string{"Content-Type: multipart/form-data; boundary=x"}, body: compWith(""), status: 415, code: "unsupported_media_type"},
		{name: "unparseable content type", path: comp, hdr: []string{"Content-Type: ;;;"}, body: compWith(""), status: 415, code: "unsupported_media_type"},
		{name: "json with a charset", path: comp, hdr: []string{"Content-Type: application/json; charset=utf-8"}, body: compWith(""), status: 200},
		{name: "no content type", path: comp, hdr: []string{"Content-Type:"}, body: compWith(""), status: 200},
		{name: "gzip body that is not decoded", path: comp, hdr: []string{"Content-Encoding: gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", status: 400},
		{name: "declared length over the limit", path: comp, hdr: []string{"Content-Length: 999999999"}, body: compWith(""), status: 413, code: "request_too_large"},
		{name: "chunked body over the limit", path: comp, hdr: []string{"Content-Length:", "Transfer-Encoding: chunked"}, body: fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 300<<10, strings.Repeat(" ", 300<<10)), status: 413, code: "request_too_large"},
		{name: "empty body", path: comp, hdr: []string{"Content-Length: 0"}, method: "POST", status: 400},
		{name: "byte order mark", path: comp, body: "\ufeff" + compWith(""), status: 400},
		{name: "top-level null", path: comp, body: `null`, status: 400, param: "prompt"},
		// JSON nesting.
		{name: "deep unknown field", path: chat, body: chatWith(`,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100)), status: 400},
		{name: "ten thousand open brackets", path: chat, body: strings.Repeat("[", 10000), status: 400},
		{name: "deep content parts", path: chat, body: `{"model":"tiny","messages":[{"role":"user","content":` + strings.Repeat("[", 80) + strings.Repeat("]", 80) + `}]}`, status: 400},
		// Hostile schemas get 400 before any grammar is built.
		{name: "schema 40 levels deep", path: chat, body: schema(deepSchema), status: 400, param: "response_format.json_schema"},
		{name: "schema with 5000 values", path: chat, body: schema(manyValues), status: 400, param: "response_format.json_schema"},
		{name: "schema minItems 100000", path: chat, body: schema(`{"type":"array","items":{"type":"integer"},"minItems":100000}`), status: 400, param: "response_format.json_schema"},
		{name: "schema maxLength 1e9", path: chat, body: schema(`{"type":"string","maxLength":1000000000}`), status: 400, param: "response_format.json_schema"},
		{name: "schema pattern repeat", path: chat, body: schema(`{"type":"string","pattern":"(ab){1000000}"}`), status: 400, param: "response_format.json_schema"},
		{name: "schema pattern repeat beyond int", path: chat, body: schema(`{"type":"string","pattern":"a{1,99999999999999999999}"}`), status: 400, param: "response_format.json_schema"},
		{name: "schema pattern 4 KiB", path: chat, body: schema(`{"type":"string","pattern":"` + strings.Repeat("a", 4096) + `"}`), status: 400, param: "response_format.json_schema"},
		{name: "schema as a string", path: chat, body: schema(`"{}"`), status: 400, param: "response_format.json_schema"},
		{name: "tool parameters 40 levels deep", path: chat, body: tool(deepSchema), status: 400, param: "tools[0].function.parameters"},
		{name: "tool parameters minProperties 1e6", path: chat, body: tool(`{"type":"object","minProperties":1000000}`), status: 400, param: "tools[0].function.parameters"},
		{name: "129 tools", path: chat, body: chatWith(`,"tools":[` + strings.TrimSuffix(strings.Repeat(`{"type":"function","function":{"name":"f"}},`, 129), ",") + `]`), status: 400, param: "tools"},
		{name: "tool name of 65 bytes", path: chat, body: chatWith(`,"tools":[{"type":"function","function":{"name":"` + strings.Repeat("f", 65) + `"}}]`), status: 400, param: "tools[0].function.name"},
		{name: "tool defined twice", path: chat, body: chatWith(`,"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]`), status: 400, param: "tools[1].function.name"},
		// No client-supplied templates (vLLM's chat_template SSTI).
		{name: "chat_template", path: chat, body: chatWith(`,"chat_template":"{{ cycler.__init__.__globals__ }}"`), status: 400, param: "chat_template"},
		{name: "chat_template_kwargs", path: chat, body: chatWith(`,"chat_template_kwargs":{"x":1}`), status: 400, param: "chat_template_kwargs"},
		// Sizes before tokenizing.
		{name: "message text over the byte limit", path: chat, body: `{"model":"tiny","messages":[{"role":"user","content":"` + strings.Repeat("a", 40<<10) + `"}]}`, status: 400, param: "messages"},
		{name: "prompts over the byte limit together", path: comp, body: `{"model":"tiny","prompt":["` + strings.Repeat("a", 20<<10) + `","` + strings.Repeat("b", 20<<10) + `"]}`, status: 400, param: "prompt"},
		{name: "1025 messages", path: chat, body: `{"model":"tiny","messages":` + manyMsgs + `}`, status: 400, param: "messages"},
		{name: "tokenize over the byte limit", path: "/tokenize", body: `{"content":"` + strings.Repeat("a", 40<<10) + `"}`, status: 400, param: "content"},
		{name: "embeddings over the byte limit", path: "/v1/embeddings", body: `{"model":"tiny","input":"` + strings.Repeat("a", 40<<10) + `"}`, status: 400, param: "input"},
		// Token ids within the vocabulary and the context.
		{name: "token prompt over the context", path: comp, body: `{"model":"tiny","prompt":` + bigTokens + `}`, status: 400, code: "context_length_exceeded", param: "prompt"},
		{name: "token id at int32 max", path: comp, body: `{"model":"tiny","prompt":[2147483647]}`, status: 400, param: "prompt"},
		{name: "token id beyond int32", path: comp, body: `{"model":"tiny","prompt":[2147483648]}`, status: 400},
		{name: "token id fractional", path: comp, body: `{"model":"tiny","prompt":[1.5]}`, status: 400},
		{name: "embedding token out of vocabulary", path: "/v1/embeddings", body: `{"model":"tiny","input":[1,99999]}`, status: 400, param: "input"},
		{name: "detokenize negative id", path: "/detokenize", body: `{"model":"tiny","tokens":[-1]}`, status: 400},
		// Counts and numeric ranges.
		{name: "n beyond int64", path: comp, body: compWith(`,"n":99999999999999999999`), status: 400, param: "n"},
		{name: "n negative", path: comp, body: compWith(`,"n":-1`), status: 400, param: "n"},
		{name: "max_tokens 1e10", path: comp, body: `{"model":"tiny","prompt":"hi","max_tokens":1e10}`, status: 400, param: "max_tokens"},
		{name: "max_tokens fractional", path: comp, body: `{"model":"tiny","prompt":"hi","max_tokens":1.5}`, status: 400, param: "max_tokens"},
		{name: "max_tokens over --max-tokens-limit", path: comp, body: `{"model":"tiny","prompt":"hi","max_tokens":9}`, status: 400, param: "max_tokens"},
		{name: "temperature overflowing float64", path: comp, body: compWith(`,"temperature":1e400`), status: 400, param: "temperature"},
		{name: "temperature NaN", path: comp, body: compWith(`,"temperature":NaN`), status: 400},
		{name: "temperature Infinity", path: comp, body: compWith(`,"temperature":Infinity`), status: 400},
		{name: "temperature as the string NaN", path: comp, body: compWith(`,"temperature":"NaN"`), status: 400, param: "temperature"},
		{name: "top_p negative zero", path: comp, body: compWith(`,"top_p":-0.0`), status: 400, param: "top_p"},
		{name: "logit_bias value overflowing", path: comp, body: compWith(`,"logit_bias":{"5":1e309}`), status: 400, param: "logit_bias"},
		{name: "logit_bias value -inf as text", path: comp, body: compWith(`,"logit_bias":{"5":"-Infinity"}`), status: 400, param: "logit_bias"},
		{name: "logit_bias negative key", path: comp, body: compWith(`,"logit_bias":{"-1":1}`), status: 400, param: "logit_bias"},
		{name: "logit_bias exponent key", path: comp, body: compWith(`,"logit_bias":{"1e3":1}`), status: 400, param: "logit_bias"},
		{name: "logit_bias padded key", path: comp, body: compWith(`,"logit_bias":{" 5":1}`), status: 400, param: "logit_bias"},
		{name: "logit_bias 1025 entries", path: comp, body: compWith(`,"logit_bias":` + bias(1025)), status: 400, param: "logit_bias"},
		{name: "top_logprobs negative", path: chat, body: chatWith(`,"logprobs":true,"top_logprobs":-1`), status: 400, param: "top_logprobs"},
		{name: "top_logprobs 21", path: chat, body: chatWith(`,"logprobs":true,"top_logprobs":21`), status: 400, param: "top_logprobs"},
		{name: "completions logprobs negative", path: comp, body: compWith(`,"logprobs":-1`), status: 400, param: "logprobs"},
		{name: "stop of 300 bytes", path: comp, body: compWith(`,"stop":["` + strings.Repeat("s", 300) + `"]`), status: 400, param: "stop"},
		{name: "1000 stop strings", path: comp, body: compWith(`,"stop":[` + strings.TrimSuffix(strings.Repeat(`"x",`, 1000), ",") + `]`), status: 400, param: "stop"},
		{name: "stop as an object", path: comp, body: compWith(`,"stop":{"a":1}`), status: 400},
		{name: "seed as a string", path: comp, body: compWith(`,"seed":"abc"`), status: 400, param: "seed"},
		{name: "stream as a string", path: comp, body: compWith(`,"stream":"yes"`), status: 400, param: "stream"},
		{name: "role with a NUL", path: chat, body: `{"model":"tiny","messages":[{"role":"user\u0000","content":"hi"}]}`, status: 400, param: "messages[0].role"},
		// Model names are names, never paths (ollama's path traversal).
		{name: "model as a relative path", path: comp, body: `{"model":"../../../../etc/passwd","prompt":"hi"}`, status: 404, code: "model_not_found"},
		{name: "model as an absolute path", path: comp, body: `{"model":"/etc/passwd","prompt":"hi"}`, status: 404, code: "model_not_found"},
		{name: "model as the served file's path", path: comp, body: `{"model":` + strconv.Quote(s.modelPath) + `,"prompt":"hi"}`, status: 404, code: "model_not_found"},
		{name: "model with a tag and a traversal", path: comp, body: `{"model":"tiny:../../x","prompt":"hi"}`, status: 404, code: "model_not_found"},
		{name: "multiplex header with a traversal", path: comp, hdr: []string{"llmux-multiplexed-model-id: ../../etc/passwd"}, body: compWith(""), status: 404, code: "model_not_found"},
		{name: "model lookup by encoded path", path: "/v1/models/..%2F..%2Fetc%2Fpasswd", status: 404},
		{name: "model lookup of dot-dot", path: "/v1/models/..", status: 404, code: "model_not_found"},
		// Request ids are echoed only when sane.
		{name: "oversize request id", path: "/health", hdr: []string{"X-Request-Id: " + strings.Repeat("r", 1000)}, status: 200, check: func(h http.Header, _ []byte) error {
			if id := h.Get("X-Request-Id"); len(id) > 128 || strings.Contains(id, "rrrr") {
				return fmt.Errorf("echoed request id %.40q", id)
			}
			return nil
		}},
	}
	if len(cases) < 80 {
		t.Fatalf("only %d cases", len(cases))
	}
	forbidden := []string{filepath.Dir(s.modelPath), "goroutine ", ".go:"}
	if wd, err := os.Getwd(); err == nil {
		forbidden = append(forbidden, wd)
	}
	if home, err := os.UserHomeDir(); err == nil && len(home) > 1 {
		forbidden = append(forbidden, home+"/")
	}
	hostileCount := 0
	for _, c := range cases {
		if c.status >= 400 {
			hostileCount++
		}
		t.Run(c.name, func(t *testing.T) {
			req := c.request(host)
			resp, body := rawRequest(t, s.addr, req)
			if resp.StatusCode >= 500 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, c.status, body)
			}
			for _, f := range forbidden {
				// A response may quote what the client sent, never
				// reveal a path the client did not know.
				if f != "" && bytes.Contains(body, []byte(f)) && !strings.Contains(req, f) {
					t.Fatalf("the response shows %q: %.300s", f, body)
				}
			}
			if c.check != nil {
				if err := c.check(resp.Header, body); err != nil {
					t.Fatal(err)
				}
			}
			if c.status < 400 || c.raw {
				return
			}
			var eb struct {
				Error *openai.Error `json:"error"`
			}
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil || eb.Error.Message == "" || eb.Error.Type == "" {
				t.Fatalf("not an OpenAI error: %.300s", body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("error content type %q", ct)
			}
			if got := deref(eb.Error.Code); c.code != "" && got != c.code {
				t.Fatalf("code %q, want %q (%s)", got, c.code, eb.Error.Message)
			}
			if got := deref(eb.Error.Param); c.param != "" && got != c.param {
				t.Fatalf("param %q, want %q (%s)", got, c.param, eb.Error.Message)
			}
		})
	}
	t.Logf("%d cases, %d of them refused", len(cases), hostileCount)
	if logs := s.log.String(); strings.Contains(logs, "panic") {
		t.Fatalf("a handler panicked:\n%s", logs)
	}

	// Good requests still succeed, and one without max_tokens (and
	// ignoring EOS) stops at --max-tokens-limit.
	resp, body := rawRequest(t, s.addr, hostile{path: comp, body: `{"model":"tiny","prompt":"the cat","ignore_eos":true}`}.request(host))
	var out openai.Completion
	if err := json.Unmarshal(body, &out); resp.StatusCode != 200 || err != nil || out.Usage == nil || len(out.Choices) != 1 {
		t.Fatalf("good request after the hostile ones: %d %s", resp.StatusCode, body)
	}
	if out.Usage.CompletionTokens != limits.MaxTokens || deref(out.Choices[0].FinishReason) != "length" {
		t.Fatalf("without max_tokens: %d tokens (%s), want %d (length)", out.Usage.CompletionTokens, deref(out.Choices[0].FinishReason), limits.MaxTokens)
	}
	resp, body = rawRequest(t, s.addr, hostile{path: chat, body: chatWith(`,"stream":true`)}.request(host))
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("data: [DONE]")) {
		t.Fatalf("good stream after the hostile ones: %d %s", resp.StatusCode, body)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestSlowClients: a client that never finishes its headers, or keeps an
// idle connection, is cut off at ReadHeaderTimeout and IdleTimeout.
func TestSlowClients(t *testing.T) {
	s := serveTiny(t, Options{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, BodyTimeout: 300 * time.Millisecond}, scheduler.Options{}, true)
	closed := func(conn net.Conn) error {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // liveness bound
		_, err := io.ReadAll(conn)
		return err
	}
	// Slowloris: half a request line, then nothing.
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
	if err := closed(conn); err != nil {
		t.Fatalf("slow headers: the connection stayed open: %v", err)
	}
	// A body that never completes gets 408.
	conn3, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close()
	io.WriteString(conn3, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	conn3.SetReadDeadline(time.Now().Add(30 * time.Second)) // liveness bound
	resp3, err := http.ReadResponse(bufio.NewReader(conn3), nil)
	if err != nil || resp3.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body: %v %v", resp3, err)
	}
	resp3.Body.Close()
	// An idle keep-alive connection after one request.
	conn2, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	io.WriteString(conn2, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
	r := bufio.NewReader(conn2)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	conn2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(r); err != nil {
		t.Fatalf("idle connection stayed open: %v", err)
	}
}

// TestRequestTimeout: a request that cannot finish (its scheduler never
// runs) ends at RequestTimeout with a 504, and a stream with a timeout
// error event.
func TestRequestTimeout(t *testing.T) {
	s := serveTiny(t, Options{RequestTimeout: 300 * time.Millisecond}, scheduler.Options{Parallel: 1, Cells: 256, MaxQueue: 8, QueueTimeout: time.Hour}, false)
	resp, body := rawRequest(t, s.addr, hostile{path: "/v1/completions", hdr: []string{"Authorization:"}, body: `{"model":"tiny","prompt":"hi","max_tokens":2}`}.request("localhost"))
	if resp.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(body, []byte(`"error"`)) {
		t.Fatalf("non-streamed: %d %s", resp.StatusCode, body)
	}
	resp, body = rawRequest(t, s.addr, hostile{path: "/v1/completions", hdr: []string{"Authorization:"}, body: `{"model":"tiny","prompt":"hi","max_tokens":2,"stream":true}`}.request("localhost"))
	if resp.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(body, []byte(`"error"`)) {
		t.Fatalf("streamed: %d %s", resp.StatusCode, body)
	}
}

// TestRouteAccess: every route has an access class, and only /health,
// /ready and /metrics are open; an unclassified route would need an admin
// key (fail closed).
func TestRouteAccess(t *testing.T) {
	s := New(nil, Options{})
	open := map[string]access{"GET /health": accessPublic, "GET /ready": accessPublic, "GET /metrics": accessMetrics}
	for _, r := range s.router.Routes() {
		key := r.Method + " " + r.Path
		a, ok := s.access[key]
		if !ok {
			t.Errorf("%s has no access class", key)
			continue
		}
		if want, isOpen := open[key]; isOpen && a != want || !isOpen && a != accessAPI && a != accessAdmin {
			t.Errorf("%s: access %d", key, a)
		}
		if strings.HasPrefix(r.Path, "/admin/") && a != accessAdmin {
			t.Errorf("%s is an admin route without the admin class", key)
		}
	}
	if accessAdmin != access(0) {
		t.Fatal("the zero access class must be the most closed one")
	}
}

// TestTextTheVocabularyCannotHoldIsA400 serves a model whose vocabulary
// has no byte-fallback tokens, on which llama.cpp's tokenizer throws
// std::out_of_range for text it cannot map (once an abort that ended the
// server): every route that tokenizes answers 400, and the model serves
// on.
func TestTextTheVocabularyCannotHoldIsA400(t *testing.T) {
	cfg := models.Presets["tiny"]
	cfg.ByteTokens = false
	s := startServer(t, modeltest.Synth(t, cfg), Options{}, scheduler.Options{})
	name := s.model
	for _, c := range []struct{ path, body string }{
		{"/v1/completions", `{"model":"` + name + `","prompt":"naïve café","max_tokens":4}`},
		{"/v1/chat/completions", `{"model":"` + name + `","messages":[{"role":"user","content":"naïve café ✓ 日本"}],"max_tokens":4}`},
		{"/v1/chat/completions", `{"model":"` + name + `","stream":true,"messages":[{"role":"user","content":"ünïcödé"}],"max_tokens":4}`},
		{"/v1/embeddings", `{"model":"` + name + `","input":"naïve"}`},
		{"/tokenize", `{"model":"` + name + `","prompt":"café"}`},
	} {
		code, _, e := post(t, s.URL+c.path, "application/json", []byte(c.body), nil)
		if code != http.StatusBadRequest || !strings.Contains(e.Message, "vocabulary cannot represent") {
			t.Errorf("%s %s: %d %+v, want 400 naming the vocabulary", c.path, c.body, code, e)
		}
	}
	if code, _, e := post(t, s.URL+"/v1/completions", "application/json", []byte(`{"model":"`+name+`","prompt":"the cat","max_tokens":4}`), nil); code != http.StatusOK {
		t.Fatalf("a plain prompt after the refused ones: %d %+v", code, e)
	}
}
