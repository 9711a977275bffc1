package replica

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llmux/llmux/llm"
)

// ProcessOptions describe how to start one replica process.
type ProcessOptions struct {
	// Name identifies the replica in logs and errors.
	Name string
	// Command is the replica's command line; "--socket PATH" is appended.
	Command []string
	Env     []string
	// SocketDir holds the replica's Unix socket.
	SocketDir string
	// StartTimeout bounds how long the replica may take to answer
	// (default 2 minutes: it loads its pinned models first).
	StartTimeout time.Duration
	Logger       *slog.Logger
	// MemoryLimit caps the process's address space in bytes (RLIMIT_AS,
	// set as soon as it starts; 0: no cap). Past it allocations fail: a
	// model or context that does not fit fails to load with an
	// out-of-memory error, and an allocation that cannot fail ends the
	// process, which costs only this replica.
	MemoryLimit uint64
}

// process is one running replica process and its connection.
type process struct {
	name   string
	cmd    *exec.Cmd
	client *Client
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited
	// failedAt is when a call or stream first failed on this process
	// (Unix nanoseconds; 0: none has): a call that began after it cannot
	// have crashed the process.
	failedAt atomic.Int64
}

// noteFailure records that a call or stream failed on the process now,
// unless one already had.
func (p *process) noteFailure() { p.failedAt.CompareAndSwap(0, time.Now().UnixNano()) }

// beganBeforeFailure reports whether a call that began at t was already
// under way when the process first failed.
func (p *process) beganBeforeFailure(t time.Time) bool {
	f := p.failedAt.Load()
	return f == 0 || t.UnixNano() < f
}

// start starts the replica process and waits until it answers on its
// socket. The process gets SIGKILL if the thread that started it exits
// (Pdeathsig), so the starting goroutine stays locked to its thread for
// the life of the process; the replica also exits when its connection
// to this process closes.
func start(ctx context.Context, o ProcessOptions) (*process, error) {
	if o.StartTimeout <= 0 {
		o.StartTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	sock := filepath.Join(o.SocketDir, o.Name+".sock")
	_ = os.Remove(sock)
	args := append(append([]string(nil), o.Command[1:]...), "--socket", sock)
	p := &process{name: o.Name, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked the child exits:
		// keep this goroutine on its thread until the child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(o.Command[0], args...)
		cmd.Env = o.Env
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			started <- err
			close(p.exited)
			return
		}
		cmd.Stdout = cmd.Stderr
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.exited)
			return
		}
		p.cmd = cmd
		if o.MemoryLimit > 0 {
			lim := unix.Rlimit{Cur: o.MemoryLimit, Max: o.MemoryLimit}
			if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_AS, &lim, nil); err != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				_ = cmd.Wait()
				started <- fmt.Errorf("memory limit: %w", err)
				close(p.exited)
				return
			}
		}
		started <- nil
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); relayLog(o.Logger, o.Name, stderr) }()
		wg.Wait() // the pipe closes when the process exits
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("replica %s: start: %w", o.Name, err)
	}
	// Wait for the socket to answer.
	deadline := time.Now().Add(o.StartTimeout)
	for {
		if _, err := os.Stat(sock); err == nil {
			c, err := Dial(o.Name, sock)
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, e := call[empty, llm.LoadInfo](pctx, c, "Load", &empty{})
				cancel()
				if e == nil {
					p.client = c
					// The watch stream lives as long as this connection.
					if err := c.Watch(context.WithoutCancel(ctx)); err != nil {
						c.Close()
						p.kill()
						return nil, fmt.Errorf("replica %s: watch: %w", o.Name, err)
					}
					return p, nil
				}
				c.Close()
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("replica %s exited while starting: %v", o.Name, p.err)
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("replica %s did not answer within %v", o.Name, o.StartTimeout)
		}
	}
}

// kill ends the process (and its process group) and waits for it.
func (p *process) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.exited
	if p.client != nil {
		p.client.Close()
	}
}

// stop asks the process to exit (SIGTERM), then kills it after grace.
func (p *process) stop(grace time.Duration) {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.exited:
		if p.client != nil {
			p.client.Close()
		}
	case <-time.After(grace):
		p.kill()
	}
}

// pid is the process id (0 before start).
func (p *process) pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// relayLog copies the replica's output into the log, a line at a time,
// with the replica's name. A JSON log line (the replica logs in JSON) is
// re-emitted with its level, message and attributes; anything else (a
// crash trace) is logged as a line of text.
func relayLog(log *slog.Logger, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			level := slog.LevelWarn
			if bytes.HasPrefix(sc.Bytes(), []byte("SCHED ")) {
				// The Go runtime's scheduler trace, which a replica's
				// GODEBUG schedtrace setting may print (see replicaEnv).
				level = slog.LevelDebug
			}
			log.Log(context.Background(), level, sc.Text(), "replica", name)
			continue
		}
		level := slog.LevelInfo
		if l, ok := rec["level"].(string); ok {
			_ = level.UnmarshalText([]byte(l))
		}
		msg, _ := rec["msg"].(string)
		attrs := []any{"replica", name}
		for k, v := range rec {
			if k != "time" && k != "level" && k != "msg" {
				attrs = append(attrs, k, v)
			}
		}
		log.Log(context.Background(), level, msg, attrs...)
	}
}
