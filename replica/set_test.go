package replica

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
)

// startSet runs n replica processes (this test binary again, serving the
// tiny model; see child_test.go) and waits until all are ready.
func startSet(t *testing.T, n, maxOngoing int) *Set {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "LLMUX_REPLICA_CHILD=1", "LLMUX_REPLICA_MODEL="+modeltest.Preset(t, "tiny"))
	s, stop := runSet(t, SetOptions{Replicas: n, MaxOngoing: maxOngoing, MinBackoff: 100 * time.Millisecond, HealthInterval: 200 * time.Millisecond, RetryWait: 5 * time.Minute,
		Process: ProcessOptions{Name: "r", Command: []string{exe, "-test.run=^$"}, Env: env, SocketDir: t.TempDir()}})
	t.Cleanup(stop)
	waitReady(t, s, n, 0)
	return s
}

// runSet runs a set; stop ends it and fails the test if one of its
// replica processes outlives it.
func runSet(t *testing.T, o SetOptions) (s *Set, stop func()) {
	t.Helper()
	s = NewSet(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	return s, func() {
		cancel()
		<-done
		for _, st := range s.Status() {
			if st.PID != 0 && alive(st.PID) {
				t.Errorf("replica %s (pid %d) still runs after the set stopped", st.Name, st.PID)
			}
		}
	}
}

// waitReady waits until n replicas are ready with at least restarts
// restarts between them.
func waitReady(t *testing.T, s *Set, n, restarts int) []ReplicaStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := s.Status()
		ready, re := 0, 0
		for _, r := range st {
			if r.State == "ready" {
				ready++
			}
			re += r.Restarts
		}
		if ready == n && re >= restarts {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not ready: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// outcome is how one streamed request ended.
type outcome struct {
	events int
	err    *llm.Error
	finish llm.Finish
	ended  time.Time
}

func run(ctx context.Context, s *Set, prompt string, maxTokens int, firstEvent chan<- struct{}) outcome {
	st, e := s.Generate(ctx, &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: prompt}}, Params: llm.Params{MaxTokens: maxTokens, IgnoreEOS: true}})
	if e != nil {
		return outcome{err: e, ended: time.Now()}
	}
	defer st.Close()
	var o outcome
	for {
		ev, ok := st.Recv(ctx)
		if !ok || ev.Final {
			o.err, o.ended = ev.Error, time.Now()
			return o
		}
		if o.events == 0 && firstEvent != nil {
			firstEvent <- struct{}{}
		}
		o.events++
		if ev.Error != nil {
			o.err = ev.Error
		}
		if ev.Finish != "" {
			o.finish = ev.Finish
		}
	}
}

func TestKillingAReplicaUnderLoadLosesNoRequestThatHadNotStarted(t *testing.T) {
	s := startSet(t, 2, 2)
	ctx := context.Background()
	// Four long streams fill both replicas (two each); four more wait for
	// room in the set.
	var wg sync.WaitGroup
	outs := make([]outcome, 8)
	started := make(chan struct{}, 8)
	for i := range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); outs[i] = run(ctx, s, fmt.Sprintf("story %d", i), 300, started) }()
		if i < 4 {
			<-started
		}
	}
	time.Sleep(100 * time.Millisecond)
	victim := s.Status()[0]
	killed := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	failed, completed := 0, 0
	for i, o := range outs {
		switch {
		case o.err != nil:
			failed++
			if o.events == 0 {
				t.Errorf("request %d failed before producing anything (it should have been retried): %v", i, o.err)
			}
			if d := o.ended.Sub(killed); d > 2*time.Second {
				t.Errorf("request %d learned of its replica's death after %v", i, d)
			}
		case o.finish == llm.FinishLength:
			completed++
		default:
			t.Errorf("request %d: no error and no finish: %+v", i, o)
		}
	}
	if failed != 2 || completed != 6 {
		t.Fatalf("%d failed, %d completed; want the victim's 2 running streams to fail and the other 6 to complete", failed, completed)
	}
	st := waitReady(t, s, 2, 1)
	if st[0].PID == victim.PID {
		t.Fatalf("replica %s was not replaced: %+v", st[0].Name, st[0])
	}
	if o := run(ctx, s, "after", 5, nil); o.err != nil || o.finish != llm.FinishLength {
		t.Fatalf("after the restart: %+v", o)
	}
}

func TestAnEngineAbortCostsOneReplica(t *testing.T) {
	s := startSet(t, 2, 0)
	ctx := context.Background()
	var wg sync.WaitGroup
	var others [4]outcome
	for i := range others {
		wg.Add(1)
		go func() { defer wg.Done(); others[i] = run(ctx, s, fmt.Sprintf("fine %d", i), 100, nil) }()
	}
	time.Sleep(200 * time.Millisecond)
	bad := run(ctx, s, "please ABORT-NOW", 4, nil)
	if bad.err == nil {
		t.Fatal("the request that aborted its replica succeeded")
	}
	wg.Wait()
	restarts := 0
	for _, r := range waitReady(t, s, 2, 1) {
		restarts += r.Restarts
	}
	if restarts != 1 {
		t.Fatalf("%d restarts: the aborting request cost more than one replica", restarts)
	}
	for _, o := range others {
		if o.err != nil && o.events == 0 {
			t.Errorf("a request that had not started was lost: %v", o.err)
		}
	}
	if o := run(ctx, s, "after", 5, nil); o.err != nil {
		t.Fatalf("after the abort: %+v", o)
	}
}

// TestKillingTheServingProcessLeavesNoReplica runs a set in a child
// process (this test binary with LLMUX_SET_CHILD), kills that process
// with SIGKILL, and checks that its replica exits too.
func TestKillingTheServingProcessLeavesNoReplica(t *testing.T) {
	if os.Getenv("LLMUX_SET_CHILD") == "1" {
		s := NewSet(SetOptions{Replicas: 1, Process: ProcessOptions{Name: "orphan", Command: []string{os.Args[0], "-test.run=^$"},
			Env: append(os.Environ(), "LLMUX_SET_CHILD=", "LLMUX_REPLICA_CHILD=1"), SocketDir: os.Getenv("LLMUX_SET_DIR")}})
		go s.Run(context.Background())
		for {
			if st := s.Status(); st[0].State == "ready" {
				fmt.Printf("replica-pid %d\n", st[0].PID)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		select {}
	}
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^TestKillingTheServingProcessLeavesNoReplica$")
	cmd.Env = append(os.Environ(), "LLMUX_SET_CHILD=1", "LLMUX_SET_DIR="+t.TempDir(), "LLMUX_REPLICA_MODEL="+modeltest.Preset(t, "tiny"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	buf := make([]byte, 256)
	n, _ := out.Read(buf)
	if _, err := fmt.Sscanf(strings.TrimSpace(string(buf[:n])), "replica-pid %d", &pid); err != nil || pid == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no replica pid from the serving process: %q %v", buf[:n], err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("replica %d outlived its killed serving process", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether a process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestTheSetRelaysItsReplicasMetrics(t *testing.T) {
	s := startSet(t, 1, 0)
	if o := run(context.Background(), s, "count me", 4, nil); o.err != nil {
		t.Fatal(o.err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	// The scheduler publishes a step's counts after the step, which may be
	// just after the request's last event reached the client.
	steps := -1.0
	var mfs []*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); steps < 4 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if mfs, err = reg.Gather(); err != nil {
			t.Fatal(err)
		}
		steps = relayedSteps(mfs)
	}
	if steps < 4 {
		t.Fatalf("llmux_engine_steps_total{model=tiny,replica=r-0} = %g after a 4-token request, want ≥ 4 (families: %d)", steps, len(mfs))
	}
}

// relayedSteps is r-0's llmux_engine_steps_total for tiny (-1: none).
func relayedSteps(mfs []*dto.MetricFamily) float64 {
	steps := -1.0
	for _, mf := range mfs {
		if mf.GetName() != "llmux_engine_steps_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == "tiny" && labels["replica"] == "r-0" {
				steps = m.GetCounter().GetValue()
			}
		}
	}
	return steps
}
