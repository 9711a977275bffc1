package replica

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/scheduler"
)

// longRequest asks the tiny model for more tokens than any test waits for.
func longRequest() *llm.Request {
	return &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "go on"}}, Params: llm.Params{MaxTokens: 100000, IgnoreEOS: true}}
}

// waitIdle waits (10 s at most) until the replica's scheduler runs no
// sequence.
func waitIdle(t *testing.T, sched *scheduler.Scheduler, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for sched.Stats().Running != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the replica still runs a sequence: %+v", what, sched.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStoppingAReplicaEndsItsOpenStreams stops the replica's server while
// a stream is open: Serve returns, the client's stream ends with an
// unavailable error, and the replica's scheduler frees the sequence.
func TestStoppingAReplicaEndsItsOpenStreams(t *testing.T) {
	pool, sched := localPool(t)
	c, stop, served := serveOnSocket(t, pool)
	defer c.Close()
	st, e := c.Generate(context.Background(), longRequest())
	if e != nil {
		t.Fatal(e)
	}
	defer st.Close()
	if ev, ok := st.Recv(context.Background()); !ok || ev.Error != nil {
		t.Fatalf("first event: %+v", ev)
	}
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return with a stream open")
	}
	for {
		ev, ok := st.Recv(context.Background())
		if !ok {
			t.Fatal("the stream ended without a final event")
		}
		if ev.Final {
			if ev.Error == nil || ev.Error.Code != llm.CodeUnavailable {
				t.Fatalf("final event %+v, want an unavailable error", ev)
			}
			break
		}
	}
	waitIdle(t, sched, "after the server stopped")
}

// TestRecvWithItsOwnContextEndsWhenThatEnds reads a stream opened with a
// context that never ends under a context that does: the read under way
// returns, and the replica frees the sequence.
func TestRecvWithItsOwnContextEndsWhenThatEnds(t *testing.T) {
	pool, sched := localPool(t)
	c := overSocket(t, pool)
	st, e := c.Generate(context.Background(), longRequest())
	if e != nil {
		t.Fatal(e)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	if ev, ok := st.Recv(ctx); !ok || ev.Error != nil {
		t.Fatalf("first event: %+v", ev)
	}
	cancel()
	ended := make(chan llm.Event, 1)
	go func() {
		for {
			ev, ok := st.Recv(ctx)
			if !ok || ev.Final {
				ended <- ev
				return
			}
		}
	}()
	select {
	case ev := <-ended:
		if ev.Error == nil || ev.Error.Code != llm.CodeCancelled {
			t.Fatalf("last event %+v, want a cancellation", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv went on after its context ended")
	}
	waitIdle(t, sched, "after the reader's context ended")
}

// TestABadStreamConnectionCostsOnlyItself opens Generate connections that
// break the framing (a frame larger than allowed, a request that is not
// JSON, a frame without a request) and a connection that speaks neither
// protocol, then
// expects the replica to serve a stream and a unary call as before.
func TestABadStreamConnectionCostsOnlyItself(t *testing.T) {
	pool, _ := localPool(t)
	c := overSocket(t, pool)
	frame := func(size uint32, body string) []byte {
		b := append([]byte(streamMagic), 0, 0, 0, 0)
		binary.BigEndian.PutUint32(b[len(streamMagic):], size)
		return append(b, body...)
	}
	for _, bad := range [][]byte{
		frame(maxFrame+1, ""),
		frame(5, "{nope"),
		frame(2, "{}"), // a frame with no request in it
		[]byte("GET / HTTP/1.1\r\nHost: replica\r\n\r\n"), // neither protocol
	} {
		conn, err := net.Dial("unix", c.path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(bad); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the replica kept a connection open after %q", bad)
				}
				break
			}
		}
		conn.Close()
	}
	if _, e := c.Info(context.Background(), "tiny"); e != nil {
		t.Fatalf("info after bad connections: %v", e)
	}
	st, e := c.Generate(context.Background(), &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "hi"}}, Params: llm.Params{MaxTokens: 4}})
	if e != nil {
		t.Fatal(e)
	}
	defer st.Close()
	n := 0
	for {
		ev, ok := st.Recv(context.Background())
		if !ok {
			t.Fatal("the stream ended without a final event")
		}
		if ev.Final {
			if ev.Error != nil {
				t.Fatal(ev.Error)
			}
			break
		}
		n++
	}
	if n == 0 {
		t.Fatal("no events after bad connections")
	}
}
