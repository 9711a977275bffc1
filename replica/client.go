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
	path string // the replica's socket, where each Generate stream connects
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
	return &Client{name: name, path: path, conn: conn}, nil
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
