package kubernetes

// A live llmux for the tests: the binary named by LLMUX_BIN (the main
// Makefile's `make test` builds bin/llmux and passes it), started as a
// child process, with synthesized models.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// llmuxBin returns LLMUX_BIN, or skips the test when it is unset.
func llmuxBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("LLMUX_BIN")
	if bin == "" {
		t.Skip("LLMUX_BIN is not set: this test runs a live llmux (make test sets LLMUX_BIN=$(CURDIR)/bin/llmux)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("LLMUX_BIN: %v", err)
	}
	return bin
}

// runLLMux runs an llmux subcommand to completion and returns its output.
func runLLMux(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("llmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// childEnv is this process's environment without LLMUX_* settings (they
// would override the config under test), with HOME set to home.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LLMUX_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

// synthModels writes a tiny synthesized base model with the given trained
// context, and one LoRA adapter per name, into dir.
func synthModels(t *testing.T, bin, dir string, context int, adapters ...string) (base string, loras map[string]string) {
	t.Helper()
	base = filepath.Join(dir, "base.gguf")
	runLLMux(t, bin, "models", "synth", "--preset", "tiny", "--context", fmt.Sprint(context), base)
	loras = map[string]string{}
	for i, name := range adapters {
		p := filepath.Join(dir, name+".gguf")
		runLLMux(t, bin, "models", "synth-lora", "--seed", fmt.Sprint(i+1), "--base", base, p)
		loras[name] = p
	}
	return base, loras
}

// logBuffer collects a child's output for failure reports.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(line)
	l.buf.WriteByte('\n')
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// llmuxProcess is a running `llmux serve`.
type llmuxProcess struct {
	URL  string // http://127.0.0.1:PORT
	Addr string // 127.0.0.1:PORT
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
	log  *logBuffer
}

var servingURL = regexp.MustCompile(`"url":"(http://[^"]+)/v1"|url=(http://\S+)/v1`)

// startLLMux writes config to a file and runs `llmux serve --config FILE
// --port 0 ARGS...`: the port is chosen by the kernel and read back from
// llmux's "llmux serving" log line. It returns once GET /health answers.
// The process is stopped (SIGTERM, then SIGKILL) when the test ends.
func startLLMux(t *testing.T, bin string, config []byte, args ...string) *llmuxProcess {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "llmux.yaml")
	if err := os.WriteFile(cfgPath, config, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--config", cfgPath, "--port", "0"}, args...)...)
	cmd.Env = childEnv(dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	p := &llmuxProcess{cmd: cmd, done: make(chan struct{}), log: &logBuffer{}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.log.add(line)
			if m := servingURL.FindStringSubmatch(line); m != nil {
				u := m[1] + m[2]
				select {
				case urls <- u:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("llmux output:\n%s", p.log)
		}
	})
	select {
	case u := <-urls:
		// A wildcard listener is reached through loopback.
		u = strings.Replace(strings.Replace(u, "0.0.0.0", "127.0.0.1", 1), "[::]", "127.0.0.1", 1)
		p.URL = u
		p.Addr = strings.TrimPrefix(u, "http://")
	case <-p.done:
		t.Fatalf("llmux exited before serving: %v\n%s", p.err, p.log)
	case <-time.After(2 * time.Minute):
		t.Fatalf("llmux did not log its address within 2 minutes:\n%s", p.log)
	}
	waitFor(t, 2*time.Minute, "GET /health answers 200", func() (bool, string) {
		code, body, err := get(p.URL+"/health", "")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %s %v", code, body, err)
	})
	return p
}

// stop sends SIGTERM and waits for the exit, then kills after a bound.
func (p *llmuxProcess) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Logf("llmux did not exit 30 s after SIGTERM: killing it")
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// get does a GET with an optional Host header and returns status and body.
func get(url, host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// scrape reads llmux's /metrics into metric families, with the same
// parser the endpoint picker uses.
func scrape(t *testing.T, p *llmuxProcess) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, err := get(p.URL+"/metrics", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// waitFor polls cond until it holds or the deadline passes; the last
// description cond gave is reported on failure; on success, the
// description of the passing call is returned.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) string {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		ok, desc := cond()
		if ok {
			return desc
		}
		last = desc
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// generation is one streaming completion held open by the test.
type generation struct {
	Model  string
	cancel context.CancelFunc
	first  chan struct{} // closed at the first streamed token
	done   chan struct{} // closed when the stream ended
	tokens atomic.Int64  // streamed events with text so far
	mu     sync.Mutex
	status int
	err    error
	tail   string // the last bytes read, for failure reports
}

// generations numbers the test's generations, so that each has a prompt
// of its own (llmux's replica router prefers the replica that saw a
// prompt's prefix).
var generations atomic.Int64

// startGeneration starts a streamed completion that would run for
// maxTokens tokens (ignore_eos: the model cannot end it early) and keeps
// reading it until stopped.
func startGeneration(t *testing.T, p *llmuxProcess, modelName string, maxTokens int) *generation {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"model": modelName, "prompt": fmt.Sprintf("Story %d. Once upon a time", generations.Add(1)), "max_tokens": maxTokens,
		"ignore_eos": true, "stream": true, "temperature": 1,
	})
	ctx, cancel := context.WithCancel(context.Background())
	g := &generation{Model: modelName, cancel: cancel, first: make(chan struct{}), done: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/completions", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	go func() {
		defer close(g.done)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			g.finish(0, err, "")
			return
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		var first sync.Once
		var last string
		for {
			line, err := r.ReadString('\n')
			if strings.HasPrefix(line, "data: {") && strings.Contains(line, `"text"`) {
				g.tokens.Add(1)
				first.Do(func() { close(g.first) })
			}
			if strings.TrimSpace(line) != "" {
				last = line
			}
			if err != nil {
				g.finish(resp.StatusCode, err, last)
				return
			}
		}
	}()
	t.Cleanup(g.stop)
	return g
}

func (g *generation) finish(status int, err error, tail string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.status, g.err, g.tail = status, err, tail
}

// waitFirstToken waits until the generation streams its first token (it
// holds a sequence slot) and reports whether it did within d; a stream
// that ends first fails the test.
func (g *generation) waitFirstToken(t *testing.T, d time.Duration) bool {
	t.Helper()
	select {
	case <-g.first:
		return true
	case <-g.done:
		g.mu.Lock()
		defer g.mu.Unlock()
		t.Fatalf("generation on %s ended before its first token: status %d, %v, last %q", g.Model, g.status, g.err, g.tail)
	case <-time.After(d):
	}
	return false
}

// running reports whether the stream is still open.
func (g *generation) running() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// stop hangs up (llmux frees the slot at its next step) and waits for the
// reader to end.
func (g *generation) stop() {
	g.cancel()
	<-g.done
}

// withModelPaths returns config (an llmux config file) with every model's
// path replaced by base and every adapter's path by the synthesized
// adapter for its name; it fails when an adapter has none.
func withModelPaths(t *testing.T, config []byte, base string, loras map[string]string) []byte {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal(config, &cfg); err != nil {
		t.Fatalf("llmux config: %v", err)
	}
	models, _ := cfg["models"].([]any)
	for _, m := range models {
		entry, ok := m.(map[string]any)
		if !ok {
			t.Fatalf("llmux config: a models entry is %T", m)
		}
		entry["path"] = base
		adapters, _ := entry["adapters"].([]any)
		for _, a := range adapters {
			ad := a.(map[string]any)
			name, _ := ad["name"].(string)
			p, ok := loras[name]
			if !ok {
				t.Fatalf("llmux config: no synthesized adapter for %q", name)
			}
			ad["path"] = p
		}
	}
	if p, ok := cfg["model"]; ok {
		t.Fatalf("llmux config: replace the flat model key (%v) with a models list", p)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var sigterm = syscall.SIGTERM

// llmuxBinOrEmpty is LLMUX_BIN, or "" when unset.
func llmuxBinOrEmpty() string { return os.Getenv("LLMUX_BIN") }
