package replica

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
)

// llmuxBinary is the llmux binary the test runs as replica processes:
// $LLMUX_BIN (make test sets it to bin/llmux), else one built now. These
// tests need a binary without the race detector, whose shadow memory
// cannot live under an address-space limit.
func llmuxBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LLMUX_BIN"); p != "" {
		return p
	}
	out := filepath.Join(t.TempDir(), "llmux")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/llmux")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build llmux (or set LLMUX_BIN): %v\n%s", err, b)
	}
	return out
}

// procField is what follows prefix on the line of /proc/PID/FILE that
// starts with it.
func procField(t *testing.T, pid int, file, prefix string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q in /proc/%d/%s", prefix, pid, file)
	return ""
}

// vmSize is a process's address space in bytes.
func vmSize(t *testing.T, pid int) uint64 {
	t.Helper()
	kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(procField(t, pid, "status", "VmSize:"), "kB")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return kb << 10
}

// addressSpaceLimit is the soft RLIMIT_AS of a process.
func addressSpaceLimit(t *testing.T, pid int) string {
	t.Helper()
	return strings.Fields(procField(t, pid, "limits", "Max address space"))[0]
}

// TestAReplicaMemoryLimitFailsOnlyTheModelThatDoesNotFit runs two real
// `llmux replica` processes under an address-space limit with room for
// the tiny model and not for the 86M bench model: asking for the big one
// fails that request with an out-of-memory error, while the tiny streams
// running on both replicas complete, no replica dies, and the tiny model
// still serves.
func TestAReplicaMemoryLimitFailsOnlyTheModelThatDoesNotFit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real replica processes")
	}
	bin := llmuxBinary(t)
	tiny, big := modeltest.Preset(t, "tiny"), modeltest.Preset(t, "bench")
	command := []string{bin, "replica", "--model", "tiny=" + tiny, "--model", "big=" + big,
		"--parallel", "4", "--threads", "1", "--log-format", "json", "--log-level", "warn"}
	newSet := func(n, maxOngoing int, limit uint64) (*Set, func()) {
		return runSet(t, SetOptions{Replicas: n, MaxOngoing: maxOngoing, MinBackoff: 100 * time.Millisecond, HealthInterval: 200 * time.Millisecond, RetryWait: time.Minute,
			Process: ProcessOptions{Name: "m", Command: command, Env: os.Environ(), SocketDir: t.TempDir(), MemoryLimit: limit}})
	}
	ctx := context.Background()

	// How much address space a replica serving the tiny model has here
	// (it depends on the machine's threads): the limit leaves it 192 MiB
	// more, less than the bench model's weights, KV cache and buffers.
	probe, stop := newSet(1, 0, 0)
	waitReady(t, probe, 1, 0)
	if o := run(ctx, probe, "warm", 50, nil); o.err != nil {
		stop()
		t.Fatal(o.err)
	}
	base := vmSize(t, probe.Status()[0].PID)
	stop()
	limit := base + 192<<20

	s, stop := newSet(2, 3, limit)
	defer stop()
	for _, r := range waitReady(t, s, 2, 0) {
		if got := addressSpaceLimit(t, r.PID); got != strconv.FormatUint(limit, 10) {
			t.Fatalf("replica %s runs with an address-space limit of %s, want %d", r.Name, got, limit)
		}
	}
	// Four long streams: the router puts three on the first replica (the
	// model's holder, until it is full) and the fourth on the second.
	var wg sync.WaitGroup
	outs := make([]outcome, 4)
	started := make(chan struct{}, 4)
	for i := range outs {
		wg.Add(1)
		go func() { defer wg.Done(); outs[i] = run(ctx, s, fmt.Sprintf("story %d", i), 1500, started) }()
		<-started
	}
	busy := 0
	for _, r := range s.Status() {
		if r.Ongoing > 0 {
			busy++
		}
	}
	if busy != 2 {
		t.Fatalf("the streams run on %d replicas, want both: %+v", busy, s.Status())
	}
	_, e := s.Generate(ctx, &llm.Request{Model: "big", Prompts: []llm.Prompt{{Text: "too big"}}, Params: llm.Params{MaxTokens: 4}})
	if e == nil || !strings.Contains(e.Message, "out of memory") {
		t.Fatalf("asking for the model over the limit: got %v, want an out-of-memory error", e)
	}
	if strings.Contains(e.Message, "/") {
		t.Errorf("the error names a path: %q", e.Message)
	}
	t.Logf("over the limit (%d MiB): %s", limit>>20, e.Message)
	wg.Wait()
	for i, o := range outs {
		if o.err != nil || o.finish != llm.FinishLength {
			t.Errorf("stream %d beside the failed load: %+v", i, o)
		}
	}
	for _, r := range s.Status() {
		if r.Restarts != 0 || r.State != "ready" {
			t.Errorf("replica %s after the failed load: %+v", r.Name, r)
		}
	}
	if o := run(ctx, s, "after", 5, nil); o.err != nil || o.finish != llm.FinishLength {
		t.Fatalf("the tiny model after the failed load: %+v", o)
	}
}
