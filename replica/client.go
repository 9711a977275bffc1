package replica

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llmux/llmux/llm"
)

// Client is an llm.Backend served by a replica process over a Unix socket.
type Client struct {
	name string
	conn *grpc.ClientConn
}

var _ llm.Backend = (*Client)(nil)

// Dial connects to the replica serving on the Unix socket at path. name
// is used in errors.
func Dial(name, path string) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///"+name,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})))
	if err != nil {
		return nil, fmt.Errorf("replica %s: %w", name, err)
	}
	return &Client{name: name, conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// unreachable is the error of a call that did not reach the replica or
// got no answer.
func (c *Client) unreachable(err error) *llm.Error {
	return llm.Errorf(llm.CodeUnavailable, "", "replica %s is unavailable: %v", c.name, err)
}

func call[In, Out any](ctx context.Context, c *Client, method string, in *In) (Out, *llm.Error) {
	var r reply[Out]
	if err := c.conn.Invoke(ctx, "/"+serviceName+"/"+method, in, &r); err != nil {
		var zero Out
		if ctx.Err() != nil {
			return zero, llm.Errorf(llm.CodeCancelled, "", "request cancelled")
		}
		return zero, c.unreachable(err)
	}
	return r.Value, r.Error
}

// Info describes a model the replica serves.
func (c *Client) Info(ctx context.Context, model string) (llm.ModelInfo, *llm.Error) {
	return call[modelArg, llm.ModelInfo](ctx, c, "Info", &modelArg{Model: model})
}

// Models lists the replica's models (none when it cannot be reached).
func (c *Client) Models(ctx context.Context) []llm.ModelInfo {
	m, _ := call[empty, []llm.ModelInfo](ctx, c, "Models", &empty{})
	return m
}

// Tokenize tokenizes on the replica.
func (c *Client) Tokenize(ctx context.Context, req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	return call[llm.TokenizeRequest, *llm.TokenizeResult](ctx, c, "Tokenize", req)
}

// Detokenize detokenizes on the replica.
func (c *Client) Detokenize(ctx context.Context, req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	return call[llm.DetokenizeRequest, *llm.DetokenizeResult](ctx, c, "Detokenize", req)
}

// Embed computes embeddings on the replica.
func (c *Client) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	return call[llm.EmbedRequest, *llm.EmbedResult](ctx, c, "Embed", req)
}

// Load reports the replica's running and waiting sequences (zero when it
// cannot be reached).
func (c *Client) Load() llm.LoadInfo {
	l, _ := call[empty, llm.LoadInfo](context.Background(), c, "Load", &empty{})
	return l
}

var generateDesc = &grpc.StreamDesc{StreamName: "Generate", ServerStreams: true, ClientStreams: true}

// Generate starts a request on the replica. Ending ctx cancels it there.
func (c *Client) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	sctx, cancel := context.WithCancel(ctx)
	cs, err := c.conn.NewStream(sctx, generateDesc, "/"+serviceName+"/Generate")
	if err != nil {
		cancel()
		return nil, c.unreachable(err)
	}
	if err := cs.SendMsg(&genUp{Request: req}); err != nil {
		cancel()
		return nil, c.unreachable(err)
	}
	var d genDown
	if err := cs.RecvMsg(&d); err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, llm.Errorf(llm.CodeCancelled, "", "request cancelled")
		}
		return nil, c.unreachable(err)
	}
	if d.Error != nil {
		cancel()
		return nil, d.Error
	}
	if d.Header == nil {
		cancel()
		return nil, llm.Errorf(llm.CodeInternal, "", "replica %s answered without a header", c.name)
	}
	return &stream{c: c, cs: cs, cancel: cancel, header: *d.Header}, nil
}

// stream is a Generate stream from a replica.
type stream struct {
	c       *Client
	cs      grpc.ClientStream
	cancel  context.CancelFunc
	header  llm.Header
	done    bool
}

func (s *stream) Header() llm.Header { return s.header }

// Recv returns the next event. A replica that fails mid-stream ends the
// stream with a final event carrying the error.
func (s *stream) Recv(ctx context.Context) (llm.Event, bool) {
	if s.done {
		return llm.Event{}, false
	}
	stop := context.AfterFunc(ctx, s.cancel)
	defer stop()
	var d genDown
	if err := s.cs.RecvMsg(&d); err != nil {
		return s.fail(ctx, err)
	}
	if d.Event == nil {
		return s.fail(ctx, fmt.Errorf("a message without an event"))
	}
	if d.Event.Final {
		s.done = true
		s.cancel()
	}
	return *d.Event, true
}

func (s *stream) fail(ctx context.Context, err error) (llm.Event, bool) {
	s.done = true
	s.cancel()
	if ctx.Err() != nil {
		return llm.Event{Final: true, Error: llm.Errorf(llm.CodeCancelled, "", "request cancelled")}, false
	}
	return llm.Event{Final: true, Error: llm.Errorf(llm.CodeUnavailable, "", "replica %s failed during the request: %v", s.c.name, err)}, true
}

// Close abandons the request on the replica.
func (s *stream) Close() {
	s.done = true
	s.cancel()
}

var watchDesc = &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true, ClientStreams: true}

// Watch opens the stream whose end tells the replica that its serving
// process is gone. It stays open until ctx ends or the connection breaks.
func (c *Client) Watch(ctx context.Context) error {
	cs, err := c.conn.NewStream(ctx, watchDesc, "/"+serviceName+"/Watch")
	if err != nil {
		return err
	}
	return cs.SendMsg(&empty{})
}
