package replica

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/llmux/llmux/llm"
)

// A Generate stream does not ride on gRPC: it has a connection of its own
// on the replica's socket, opened with streamMagic, then length-prefixed
// JSON frames — the request up, the header (or the error) and one frame
// per event down. Each event is one write by the goroutine that took it
// from the replica's stream and one read by the goroutine that hands it
// to the serving process's client: no transport goroutines in between,
// no flow-control or keep-alive frames. Closing the connection cancels
// the request at the replica; a connection that breaks mid-stream is a
// replica that failed. Everything else (unary calls, the watch stream)
// stays on gRPC, which the socket also serves: a connection is routed by
// its first bytes.

// streamMagic opens a Generate connection. gRPC's connection preface
// starts "PRI * HT", so the two cannot be confused.
const streamMagic = "LLMUXGEN"

// maxFrame bounds one frame (a request with its prompts, or an event).
const maxFrame = 256 << 20

// sniffTimeout bounds how long a new connection may take to send its
// first bytes.
const sniffTimeout = 10 * time.Second

// writeFrame writes v as one frame and flushes it.
func writeFrame(w *bufio.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	_, _ = w.Write(n[:])
	_, _ = w.Write(data)
	return w.Flush()
}

// readFrame reads one frame into v.
func readFrame(r *bufio.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return fmt.Errorf("a frame of %d bytes (at most %d)", size, maxFrame)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// demux accepts the replica socket's connections and routes each by its
// first bytes: Generate streams to serve, everything else to gRPC, which
// accepts from the demux as from a listener.
type demux struct {
	ln    net.Listener
	serve func(net.Conn)
	grpc  chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // Generate connections being served
}

func newDemux(ln net.Listener, serve func(net.Conn)) *demux {
	d := &demux{ln: ln, serve: serve, grpc: make(chan net.Conn), done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	d.wg.Add(1)
	go d.acceptLoop()
	return d
}

func (d *demux) acceptLoop() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			_ = d.Close()
			return
		}
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.route(c) }()
	}
}

// route reads a connection's first bytes and hands it on.
func (d *demux) route(c net.Conn) {
	var head [len(streamMagic)]byte
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	n, err := io.ReadFull(c, head[:])
	_ = c.SetReadDeadline(time.Time{})
	if err == nil && string(head[:]) == streamMagic {
		if !d.track(c) {
			c.Close()
			return
		}
		defer d.untrack(c)
		d.serve(c)
		return
	}
	if err != nil {
		c.Close()
		return
	}
	pc := &prefixedConn{Conn: c, r: io.MultiReader(bytes.NewReader(head[:n]), c)}
	select {
	case d.grpc <- pc:
	case <-d.done:
		c.Close()
	}
}

// track records a Generate connection so that shutdown can close it;
// false once the demux is closed.
func (d *demux) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *demux) untrack(c net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.conns, c)
}

// Accept hands gRPC its next connection.
func (d *demux) Accept() (net.Conn, error) {
	select {
	case c := <-d.grpc:
		return c, nil
	case <-d.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting: the socket closes and gRPC's Accept returns.
func (d *demux) Close() error {
	d.once.Do(func() {
		close(d.done)
		_ = d.ln.Close()
	})
	return nil
}

func (d *demux) Addr() net.Addr { return d.ln.Addr() }

// shutdown closes the socket and every Generate connection (which
// cancels their requests) and waits for their goroutines.
func (d *demux) shutdown() {
	_ = d.Close()
	d.mu.Lock()
	for c := range d.conns {
		c.Close()
	}
	d.conns = nil
	d.mu.Unlock()
	d.wg.Wait()
}

// prefixedConn gives back the bytes the demux read.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// generate serves one Generate connection: the request, then the header
// (or the error), then each event as soon as the replica's stream has it.
// Taking the event here is what ends the replica scheduler's step handoff,
// so the event is on its way over the socket while the next step runs,
// and the serving process writes it to its client meanwhile.
func (s *service) generate(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	var up genUp
	if err := readFrame(r, &up); err != nil {
		slog.Warn("replica: a Generate connection without a request", "error", err)
		return
	}
	if up.Request == nil {
		_ = writeFrame(w, &genDown{Error: llm.Errorf(llm.CodeInvalid, "", "the stream did not start with a request")})
		return
	}
	req := up.Request
	log := slog.With("id", req.ID, "model", req.Model)
	if req.TraceParent != "" {
		log = log.With("traceparent", req.TraceParent)
	}
	log.Debug("replica: generate")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The client sends nothing after the request; a read that ends means
	// it has closed the connection (or gone), which cancels the request.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		defer cancel()
		_, _ = io.Copy(io.Discard, r)
	}()
	defer func() { conn.Close(); <-gone }()
	ls, e := s.backend.Generate(ctx, req)
	if e != nil {
		log.Warn("replica: request refused", "code", e.Code, "error", e.Message)
		_ = writeFrame(w, &genDown{Error: e})
		return
	}
	defer ls.Close()
	h := ls.Header()
	if err := writeFrame(w, &genDown{Header: &h}); err != nil {
		return
	}
	for {
		ev, ok := ls.Recv(ctx)
		if !ok {
			return
		}
		if err := writeFrame(w, &genDown{Event: &ev}); err != nil {
			return
		}
		if ev.Final {
			if ev.Error != nil {
				log.Warn("replica: request failed", "code", ev.Error.Code, "error", ev.Error.Message)
			}
			return
		}
	}
}

// Generate starts a request on the replica over a connection of its own.
// Ending ctx cancels it there.
func (c *Client) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", c.path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, llm.Errorf(llm.CodeCancelled, "", "request cancelled")
		}
		return nil, c.unreachable(err)
	}
	// Ending ctx closes the connection, which ends a read under way and
	// cancels the request at the replica.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	// refused closes the connection and passes e on.
	refused := func(e *llm.Error) (llm.Stream, *llm.Error) {
		stop()
		conn.Close()
		return nil, e
	}
	failed := func(err error) (llm.Stream, *llm.Error) {
		if ctx.Err() != nil {
			return refused(llm.Errorf(llm.CodeCancelled, "", "request cancelled"))
		}
		return refused(c.unreachable(err))
	}
	w := bufio.NewWriter(conn)
	_, _ = w.WriteString(streamMagic)
	if err := writeFrame(w, &genUp{Request: req}); err != nil {
		return failed(err)
	}
	r := bufio.NewReader(conn)
	var d genDown
	if err := readFrame(r, &d); err != nil {
		return failed(err)
	}
	if d.Error != nil {
		return refused(d.Error)
	}
	if d.Header == nil {
		return refused(llm.Errorf(llm.CodeInternal, "", "replica %s answered without a header", c.name))
	}
	return &stream{c: c, conn: conn, r: r, stop: stop, done: ctx.Done(), header: *d.Header}, nil
}

// stream is a Generate stream from a replica.
type stream struct {
	c      *Client
	conn   net.Conn
	r      *bufio.Reader
	stop   func() bool     // undoes the Generate context's hook
	done   <-chan struct{} // the Generate context's Done, which closes conn already
	header llm.Header
	ended  bool
}

func (s *stream) Header() llm.Header { return s.header }

// Recv returns the next event. A replica that fails mid-stream ends the
// stream with a final event carrying the error.
func (s *stream) Recv(ctx context.Context) (llm.Event, bool) {
	if s.ended {
		return llm.Event{}, false
	}
	// A context other than Generate's ends this read by closing the
	// connection too; Generate's is hooked already, for the stream's life.
	if d := ctx.Done(); d != nil && d != s.done {
		stop := context.AfterFunc(ctx, func() { s.conn.Close() })
		defer stop()
	}
	var d genDown
	if err := readFrame(s.r, &d); err != nil {
		return s.fail(ctx, err)
	}
	if d.Event == nil {
		return s.fail(ctx, fmt.Errorf("a message without an event"))
	}
	if d.Event.Final {
		s.Close()
	}
	return *d.Event, true
}

func (s *stream) fail(ctx context.Context, err error) (llm.Event, bool) {
	s.Close()
	if ctx.Err() != nil || s.cancelled() {
		return llm.Event{Final: true, Error: llm.Errorf(llm.CodeCancelled, "", "request cancelled")}, false
	}
	return llm.Event{Final: true, Error: llm.Errorf(llm.CodeUnavailable, "", "replica %s failed during the request: %v", s.c.name, err)}, true
}

// cancelled reports whether the Generate context has ended.
func (s *stream) cancelled() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Close abandons the request on the replica.
func (s *stream) Close() {
	s.ended = true
	s.stop()
	s.conn.Close()
}
