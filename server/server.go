// Package server is llmux's HTTP surface: OpenAI-compatible routes over an
// llm.Backend, with request ids, API keys, CORS, body limits, Prometheus
// metrics and graceful draining. It is the only package that imports gin.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// Options configure a Server. The zero value works.
type Options struct {
	// APIKeys, when set, are required as "Authorization: Bearer KEY".
	APIKeys []string
	// CORSOrigins allowed to call the API from a browser ("*" for any);
	// empty disables CORS.
	CORSOrigins []string
	// MaxBodyBytes bounds request bodies (default 8 MiB).
	MaxBodyBytes int64
	// Limits on request fields (default openai.DefaultLimits()).
	Limits *openai.Limits
	// ShutdownTimeout is how long running streams may finish after a
	// shutdown starts (default 30s).
	ShutdownTimeout time.Duration
	// Version is reported in system_fingerprint.
	Version string
	Logger  *slog.Logger
	// Registerer receives the metrics (default: a fresh registry, served
	// on /metrics).
	Registry *prometheus.Registry
}

// Server serves a backend's models over HTTP. It never touches a model
// itself: everything model-specific happens behind the llm boundary.
type Server struct {
	backend llm.Backend
	opts    Options
	limits  openai.Limits
	created int64
	log     *slog.Logger
	metrics *metrics
	router  *gin.Engine

	// traceWrite, when set (benchmarks), is told each streamed event's
	// request id and scheduler emission time right after it is flushed.
	traceWrite func(requestID string, emitted time.Time)

	draining atomic.Bool
	inflight sync.WaitGroup
}

// New builds a server over a backend. When the backend is also a
// prometheus.Collector (the models' own series), it is registered too.
func New(backend llm.Backend, opts Options) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	limits := openai.DefaultLimits()
	if opts.Limits != nil {
		limits = *opts.Limits
	}
	s := &Server{backend: backend, opts: opts, limits: limits, created: time.Now().Unix(), log: opts.Logger}
	s.metrics = newMetrics(opts.Registry)
	if c, ok := backend.(prometheus.Collector); ok {
		opts.Registry.MustRegister(c)
	}
	s.router = s.routes()
	return s
}

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.router }

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(s.recovery, s.requestID, s.accessLog, s.cors)
	r.GET("/health", s.handleHealth)
	r.GET("/ready", s.handleReady)
	r.GET("/metrics", s.handleMetrics)
	api := r.Group("", s.auth, s.limitBody)
	api.GET("/v1/models", s.handleModels)
	api.GET("/v1/models/:id", s.handleModel)
	api.POST("/v1/chat/completions", s.admit, s.handleChat)
	api.POST("/v1/completions", s.admit, s.handleCompletions)
	api.POST("/v1/embeddings", s.handleEmbeddings)
	api.POST("/tokenize", s.handleTokenize)
	api.POST("/detokenize", s.handleDetokenize)
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, openai.NotFound("", "unknown_url", "unknown endpoint %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, &openai.Error{Status: http.StatusMethodNotAllowed, Type: openai.TypeInvalidRequest, Message: "method " + c.Request.Method + " is not allowed on " + c.Request.URL.Path})
	})
	return r
}

// Serve serves on ln until ctx ends, then drains: new generation requests
// get 503, running ones have ShutdownTimeout to finish, and after that the
// connections are closed. It returns once everything has stopped.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.router, ReadHeaderTimeout: 30 * time.Second, BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("draining", "timeout", s.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown deadline passed; closing open streams")
		err = hs.Close()
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Draining reports whether a shutdown has started.
func (s *Server) Draining() bool { return s.draining.Load() }
