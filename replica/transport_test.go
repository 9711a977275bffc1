package replica

import (
	"context"
	"encoding/binary"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/llmux/llmux/llm"
)

// TestEventStreamSendsNoPings streams a real model's tokens from a replica
// and counts the HTTP/2 PING frames the serving process sends it. With
// gRPC's dynamic flow-control windows the receiver probes the bandwidth
// after data arrives whenever no probe is outstanding, so a stream of small
// events drew a ping — and a wake-up of the replica to answer it — for
// most tokens. The connection's windows are fixed, so there must be none.
func TestEventStreamSendsNoPings(t *testing.T) {
	pool, _ := localPool(t)
	path := filepath.Join(t.TempDir(), "r.sock")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var pings atomic.Int64
	ln := &pingCountingListener{Listener: inner, pings: &pings}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, pool, nil) }()
	c, err := Dial("r0", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	const tokens = 64
	st, e := c.Generate(ctx, &llm.Request{Model: "tiny", Prompts: []llm.Prompt{{Text: "once upon a time"}}, Params: llm.Params{MaxTokens: tokens, IgnoreEOS: true}})
	if e != nil {
		t.Fatal(e)
	}
	events := 0
	for {
		ev, ok := st.Recv(ctx)
		if !ok {
			t.Fatal("the stream ended without a final event")
		}
		if ev.Error != nil {
			t.Fatalf("event error: %+v", ev.Error)
		}
		if ev.Final {
			break
		}
		events++
	}
	st.Close()
	if events < tokens/2 {
		t.Fatalf("%d events for %d tokens: too few to show the pings", events, tokens)
	}
	if n := pings.Load(); n != 0 {
		t.Errorf("the serving process sent %d PING frames over %d events: want none", n, events)
	}
}

// pingCountingListener counts the PING frames (not their acks) that
// clients send over its connections.
type pingCountingListener struct {
	net.Listener
	pings *atomic.Int64
}

func (l *pingCountingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &pingCountingConn{Conn: conn, pings: l.pings, skip: len(http2Preface)}, nil
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// pingCountingConn parses the HTTP/2 frames read from a client: after the
// connection preface, each frame is a 9-byte header (24-bit length, type,
// flags, stream id) and its payload.
type pingCountingConn struct {
	net.Conn
	pings  *atomic.Int64
	skip   int    // bytes of preface or payload still to pass over
	header []byte // the frame header read so far
}

func (c *pingCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if c.skip > 0 {
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
			continue
		}
		k := min(9-len(c.header), len(b))
		c.header = append(c.header, b[:k]...)
		b = b[k:]
		if len(c.header) < 9 {
			continue
		}
		length := int(binary.BigEndian.Uint32(append([]byte{0}, c.header[:3]...)))
		const framePing, flagAck = 0x6, 0x1
		if c.header[3] == framePing && c.header[4]&flagAck == 0 {
			c.pings.Add(1)
		}
		c.skip, c.header = length, c.header[:0]
	}
	return n, err
}
