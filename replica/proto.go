// Package replica carries the llm boundary across a process boundary: a
// replica process serves an llm.Backend (its own multiplex pool) on a
// Unix socket, and the serving process reaches it through a Client that
// is itself an llm.Backend. Messages are the llm package's plain-data
// types, encoded as JSON. Unary calls and the watch stream are gRPC, with
// a JSON codec registered here, so there is no generated code and no
// code generator to install: the service is described by hand
// (serviceDesc). Generate streams have connections of their own on the
// same socket, with length-prefixed frames (stream.go): one write and one
// read per event.
package replica

import (
	"context"
	"encoding/json"

	"google.golang.org/grpc"

	"github.com/llmux/llmux/llm"
)

// codec encodes every message as JSON.
type codec struct{}

func (codec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (codec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (codec) Name() string                       { return "llmux-json" }

const serviceName = "llmux.replica.v1.Replica"

// Generate's frames. The client opens the connection with the request
// and sends nothing more; the replica answers with the header (or an error),
// then one message per event.
type (
	genUp struct {
		Request *llm.Request `json:"request,omitempty"`
	}
	genDown struct {
		Header *llm.Header `json:"header,omitempty"`
		Event  *llm.Event  `json:"event,omitempty"`
		Error  *llm.Error  `json:"error,omitempty"`
	}
)

// reply is every unary method's answer: a value, or an error as data.
type reply[T any] struct {
	Value T          `json:"value"`
	Error *llm.Error `json:"error,omitempty"`
}

// modelArg names a model (Info).
type modelArg struct {
	Model string `json:"model"`
}

// empty is the argument of methods that take none.
type empty struct{}

// unary describes a unary method served by f over the replica's backend.
func unary[In, Out any](name string, f func(ctx context.Context, b llm.Backend, in *In) reply[Out]) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in In
			if err := dec(&in); err != nil {
				return nil, err
			}
			return f(ctx, srv.(*service).backend, &in), nil
		},
	}
}

// answer wraps a backend call's result.
func answer[T any](v T, e *llm.Error) reply[T] { return reply[T]{Value: v, Error: e} }

// serviceDesc is the replica service: the llm.Backend methods but
// Generate, one gRPC method each, and the watch stream.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		unary("Info", func(ctx context.Context, b llm.Backend, in *modelArg) reply[llm.ModelInfo] {
			return answer(b.Info(ctx, in.Model))
		}),
		unary("Models", func(ctx context.Context, b llm.Backend, _ *empty) reply[[]llm.ModelInfo] {
			return answer(b.Models(ctx), nil)
		}),
		unary("Tokenize", func(ctx context.Context, b llm.Backend, in *llm.TokenizeRequest) reply[*llm.TokenizeResult] {
			return answer(b.Tokenize(ctx, in))
		}),
		unary("Detokenize", func(ctx context.Context, b llm.Backend, in *llm.DetokenizeRequest) reply[*llm.DetokenizeResult] {
			return answer(b.Detokenize(ctx, in))
		}),
		unary("Embed", func(ctx context.Context, b llm.Backend, in *llm.EmbedRequest) reply[*llm.EmbedResult] {
			return answer(b.Embed(ctx, in))
		}),
		unary("Load", func(ctx context.Context, b llm.Backend, _ *empty) reply[llm.LoadInfo] {
			return answer(b.Load(), nil)
		}),
		unary("LoadAdapter", func(ctx context.Context, b llm.Backend, in *llm.AdapterRequest) reply[llm.ModelInfo] {
			am, ok := b.(llm.AdapterManager)
			if !ok {
				return answer(llm.ModelInfo{}, llm.Errorf(llm.CodeInvalid, "", "this replica does not register adapters"))
			}
			return answer(am.LoadAdapter(ctx, in))
		}),
		unary("UnloadAdapter", func(ctx context.Context, b llm.Backend, in *modelArg) reply[empty] {
			am, ok := b.(llm.AdapterManager)
			if !ok {
				return answer(empty{}, llm.Errorf(llm.CodeInvalid, "", "this replica does not register adapters"))
			}
			return answer(empty{}, am.UnloadAdapter(ctx, in.Model))
		}),
		{MethodName: "Metrics", Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in empty
			if err := dec(&in); err != nil {
				return nil, err
			}
			return srv.(*service).metrics(), nil
		}},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Watch", Handler: func(srv any, st grpc.ServerStream) error { return srv.(*service).watch(st) }, ServerStreams: true, ClientStreams: true},
	},
}
