package replica

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// localPool serves the tiny model in this process under the name "tiny".
func localPool(t *testing.T) (*multiplex.Pool, *scheduler.Scheduler) {
	t.Helper()
	m, err := engine.LoadModel(modeltest.Preset(t, "tiny"), engine.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(m, scheduler.Options{Parallel: 4, Cells: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sched.Run(ctx) }()
	r := multiplex.NewRunner("tiny", sched)
	p := multiplex.NewPool(multiplex.PoolOptions{})
	if err := p.Add("tiny", nil, r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done; r.Close(); sched.Close(); m.Close() })
	return p, sched
}

// serveOnSocket serves backend on a Unix socket in this process and
// returns a client of it (the caller closes it), the function that stops
// the server and Serve's result.
func serveOnSocket(t testing.TB, backend llm.Backend) (*Client, context.CancelFunc, <-chan error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, backend, nil) }()
	c, err := Dial("r0", path)
	if err != nil {
		t.Fatal(err)
	}
	return c, cancel, served
}

// overSocket serves backend on a Unix socket in this process and returns
// a client of it; the test's cleanup stops the server and checks Serve's
// result.
func overSocket(t testing.TB, backend llm.Backend) *Client {
	t.Helper()
	c, stop, served := serveOnSocket(t, backend)
	t.Cleanup(func() {
		c.Close()
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return c
}

// TestCancellationCrossesTheSocket abandons a long stream at the client
// and expects the replica's scheduler to free the sequence.
func TestCancellationCrossesTheSocket(t *testing.T) {
	pool, sched := localPool(t)
	c := overSocket(t, pool)
	ctx, cancel := context.WithCancel(context.Background())
	st, e := c.Generate(ctx, longRequest())
	if e != nil {
		t.Fatal(e)
	}
	for range 3 {
		if ev, ok := st.Recv(ctx); !ok || ev.Error != nil {
			t.Fatalf("event: %+v", ev)
		}
	}
	cancel()
	st.Close()
	waitIdle(t, sched, "after the client abandoned the stream")
}
