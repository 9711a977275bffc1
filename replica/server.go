package replica

import (
	"context"
	"fmt"
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
	// A connection that is not gRPC's fails its handshake at once; one
	// that sends too little of it waits no longer than the demux's sniff.
	srv := grpc.NewServer(grpc.ForceServerCodec(codec{}), grpc.ConnectionTimeout(sniffTimeout))
	svc := &service{backend: backend, parentGone: parentGone}
	if c, ok := backend.(prometheus.Collector); ok {
		reg := prometheus.NewRegistry()
		if err := reg.Register(c); err == nil {
			svc.gatherer = reg
		}
	}
	srv.RegisterService(&serviceDesc, svc)
	mux := newDemux(ln, svc.generate)
	stop := context.AfterFunc(ctx, srv.Stop)
	defer stop()
	err := srv.Serve(mux)
	mux.shutdown()
	if ctx.Err() != nil {
		return nil
	}
	return err
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
