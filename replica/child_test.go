package replica

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
)

// The tests start replica processes by running this test binary again
// with LLMUX_REPLICA_CHILD set: runChild then serves the model named by
// LLMUX_REPLICA_MODEL on the socket given by --socket, like `llmux
// replica` does.

// runChild serves as a replica process when this binary was started as
// one, and reports whether it did.
func runChild() bool {
	if os.Getenv("LLMUX_REPLICA_CHILD") != "1" {
		return false
	}
	var sock string
	for i, a := range os.Args {
		if a == "--socket" && i+1 < len(os.Args) {
			sock = os.Args[i+1]
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	m, err := engine.LoadModel(os.Getenv("LLMUX_REPLICA_MODEL"), engine.ModelOptions{})
	if err != nil {
		os.Stderr.WriteString("child: " + err.Error() + "\n")
		os.Exit(3)
	}
	sched, err := scheduler.New(m, scheduler.Options{Parallel: 4, Cells: 1024})
	if err != nil {
		os.Exit(3)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); sched.Run(sctx) }()
	pool := multiplex.NewPool(multiplex.PoolOptions{})
	_ = pool.Add("tiny", nil, multiplex.NewRunner("tiny", sched))
	os.Stderr.WriteString("child: serving\n")
	err = ServeProcess(ctx, sock, abortHook{pool})
	cancel()
	<-done
	if err != nil {
		os.Stderr.WriteString("child: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// abortHook stands in for an engine abort, in test builds only: a prompt
// containing ABORT-NOW kills the process with SIGABRT, as llama.cpp's
// failed assertions do.
type abortHook struct{ *multiplex.Pool }

func (a abortHook) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	for _, p := range req.Prompts {
		if strings.Contains(p.Text, "ABORT-NOW") {
			syscall.Kill(os.Getpid(), syscall.SIGABRT)
			select {}
		}
	}
	return a.Pool.Generate(ctx, req)
}
