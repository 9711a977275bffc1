package replica

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/llmux/llmux/llm"
)

// service serves a backend to one serving process.
type service struct {
	backend llm.Backend
	// parentGone is called when the serving process's Watch stream ends:
	// the parent has exited or closed its connection.
	parentGone func()
	// gatherer has the backend's own series, when it exports any.
	gatherer prometheus.Gatherer
}

// Serve serves backend on ln until ctx ends or the serving process that
// watches it goes away (then parentGone runs, if set). It returns when
// the gRPC server has stopped.
func Serve(ctx context.Context, ln net.Listener, backend llm.Backend, parentGone func()) error {
	srv := grpc.NewServer(grpc.ForceServerCodec(codec{}))
	svc := &service{backend: backend, parentGone: parentGone}
	if c, ok := backend.(prometheus.Collector); ok {
		reg := prometheus.NewRegistry()
		if err := reg.Register(c); err == nil {
			svc.gatherer = reg
		}
	}
	srv.RegisterService(&serviceDesc, svc)
	stop := context.AfterFunc(ctx, srv.Stop)
	defer stop()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// generate serves one Generate stream: the request, then the header (or
// the error), then each event as soon as the replica's stream has it.
// Taking the event here is what ends the replica scheduler's step handoff,
// so the event is on its way over the socket while the next step runs,
// and the serving process writes it to its client meanwhile.
func (s *service) generate(st grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	var up genUp
	if err := st.RecvMsg(&up); err != nil {
		return err
	}
	if up.Request == nil {
		return st.SendMsg(&genDown{Error: llm.Errorf(llm.CodeInvalid, "", "the stream did not start with a request")})
	}
	req := up.Request
	log := slog.With("id", req.ID, "model", req.Model)
	if req.TraceParent != "" {
		log = log.With("traceparent", req.TraceParent)
	}
	log.Debug("replica: generate")
	ls, e := s.backend.Generate(ctx, req)
	if e != nil {
		log.Warn("replica: request refused", "code", e.Code, "error", e.Message)
		return st.SendMsg(&genDown{Error: e})
	}
	defer ls.Close()
	h := ls.Header()
	if err := st.SendMsg(&genDown{Header: &h}); err != nil {
		return err
	}
	// The client sends nothing after the request; a receive that ends
	// means it has gone, which cancels the request.
	go func() {
		defer cancel()
		var m genUp
		for st.RecvMsg(&m) == nil {
		}
	}()
	for {
		ev, ok := ls.Recv(ctx)
		if !ok {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		if err := st.SendMsg(&genDown{Event: &ev}); err != nil {
			return err
		}
		if ev.Final {
			if ev.Error != nil {
				log.Warn("replica: request failed", "code", ev.Error.Code, "error", ev.Error.Message)
			}
			return nil
		}
	}
}

// watch holds the serving process's watch stream open; when it ends the
// parent is gone.
func (s *service) watch(st grpc.ServerStream) error {
	var m empty
	for st.RecvMsg(&m) == nil {
	}
	if s.parentGone != nil {
		s.parentGone()
	}
	return nil
}

// ServeProcess is the body of a replica process: it serves backend on a
// Unix socket at path until ctx ends or the serving process goes away
// (its watch stream ends), then removes the socket.
func ServeProcess(ctx context.Context, path string, backend llm.Backend) error {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("replica: listen on %s: %w", path, err)
	}
	defer os.Remove(path)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return Serve(ctx, ln, backend, cancel)
}
