// Package server is llmux's HTTP surface: OpenAI-compatible routes over an
// llm.Backend, with request ids, API keys, CORS, body limits, Prometheus
// metrics and graceful draining. It is the only package that imports gin.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/middleware"
	"github.com/llmux/llmux/openai"
)

// Options configure a Server. The zero value works.
type Options struct {
	// APIKeys, when set, are required as "Authorization: Bearer KEY" on
	// every route but /health, /ready and /metrics.
	APIKeys []string
	// Application marks a server that is one application's routes under
	// a prefix: its /metrics has its own request series only (the
	// pod-wide and model series are the root server's).
	Application bool
	// Applications are served beside this server's routes, each under
	// its route prefix (stripped before it sees the request); they do
	// their own auth and limits. SetApplications replaces them.
	Applications []Mounted
	// Auth, when set, admits requests to the API routes instead of
	// APIKeys: the application's auth middleware (per-key rate limits).
	Auth Authenticator
	// AdminKeys are required on admin routes (/admin/...); without them
	// the admin routes answer 403.
	AdminKeys []string
	// MetricsAuth requires an API or admin key on /metrics too.
	MetricsAuth bool
	// AllowedHosts are Host names accepted, besides loopback names, when
	// the server listens on a loopback address ("*": any). Other Hosts
	// get 403: a page on a rebound DNS name must not reach the API.
	AllowedHosts []string
	// MaxHeaders and MaxHeaderBytes bound a request's header section
	// (defaults 100 fields and 32 KiB; over them: 431).
	MaxHeaders     int
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds how long a client may take to send its
	// headers (default 10s), and IdleTimeout how long a keep-alive
	// connection may wait for its next request (default 2m): slow clients
	// cannot hold connections open.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// BodyTimeout bounds how long a client may take to send a request
	// body once its headers are in (default 1m; 408 past it).
	BodyTimeout time.Duration
	// RequestTimeout bounds each API request's whole run, streams
	// included (0: no bound); past it the request ends with a 504 or a
	// timeout error event.
	RequestTimeout time.Duration
	// Deployments, when set, describes the deployments and their
	// replicas for GET /-/status.
	Deployments func() any
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
	// StoredResponses, StoredResponseBytes and StoredResponseTTL bound
	// the Responses API's store (defaults 10000, 256 MiB, 24h).
	StoredResponses     int
	StoredResponseBytes int64
	StoredResponseTTL   time.Duration
	// KeepAliveInterval is how often a stream still waiting for its first
	// token's model (a cold load) gets a keep-alive (default 5s).
	KeepAliveInterval time.Duration
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
	handler http.Handler // a dispatcher in front of router and the mounted applications
	apps    atomic.Pointer[[]Mounted]
	apply   atomic.Pointer[func([]byte) (any, error)]

	// traceWrite, when set (benchmarks), is told each streamed event's
	// request id and scheduler emission time right after it is flushed.
	traceWrite func(requestID string, emitted time.Time)

	// access classifies each route ("METHOD /path") for authorize;
	// written only while routes are built.
	access map[string]access

	// responses is the Responses API's store of responses.
	responses *responseStore

	draining atomic.Bool
	inflight atomic.Int64 // generation requests running (a drain waits for them)
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
	if opts.MaxHeaders <= 0 {
		opts.MaxHeaders = 100
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 32 << 10
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = time.Minute
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.KeepAliveInterval <= 0 {
		opts.KeepAliveInterval = 5 * time.Second
	}
	if opts.StoredResponses == 0 {
		opts.StoredResponses = 10000
	}
	if opts.StoredResponseBytes <= 0 {
		opts.StoredResponseBytes = 256 << 20
	}
	if opts.StoredResponseTTL <= 0 {
		opts.StoredResponseTTL = 24 * time.Hour
	}
	limits := openai.DefaultLimits()
	if opts.Limits != nil {
		limits = *opts.Limits
	}
	if opts.Auth == nil && len(opts.APIKeys) > 0 {
		if a, err := middleware.KeysAuth(opts.APIKeys); err == nil {
			opts.Auth = a
		}
	}
	s := &Server{backend: backend, opts: opts, limits: limits, created: time.Now().Unix(), log: opts.Logger, access: map[string]access{},
		responses: newResponseStore(opts.StoredResponses, opts.StoredResponseBytes, opts.StoredResponseTTL)}
	s.metrics = newMetrics(opts.Registry)
	if !opts.Application {
		opts.Registry.MustRegister(newPodCollector(backend))
		if c, ok := backend.(prometheus.Collector); ok {
			opts.Registry.MustRegister(c)
		}
	}
	s.router = s.routes()
	s.SetApplications(opts.Applications)
	s.handler = http.HandlerFunc(s.dispatch)
	return s
}

// Mounted is an application's handler and where it is mounted.
type Mounted struct {
	Prefix  string // "/name", no trailing slash
	Handler http.Handler
}

// Handler is the server's http.Handler: its own routes, and the mounted
// applications under their prefixes.
func (s *Server) Handler() http.Handler { return s.handler }

// SetApply sets what POST /-/apply calls with a config file's contents:
// it answers what changed, or why the file was not applied.
func (s *Server) SetApply(apply func(data []byte) (any, error)) { s.apply.Store(&apply) }

// SetApplications replaces the mounted applications (a config reload).
// Requests already in an application finish there; new ones find the new
// set.
func (s *Server) SetApplications(apps []Mounted) { s.apps.Store(&apps) }

// dispatch sends a request under a mounted prefix to its application.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	for _, m := range *s.apps.Load() {
		if strings.HasPrefix(r.URL.Path, m.Prefix+"/") {
			// An application's requests drain with the server's: refused
			// once draining, waited for while running.
			if s.draining.Load() {
				e := openai.Unavailable("server is shutting down")
				w.Header().Set("Retry-After", strconv.Itoa(int(e.RetryAfter.Seconds())))
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(e.Status)
				_ = json.NewEncoder(w).Encode(openai.ErrorBody{Error: e})
				return
			}
			s.inflight.Add(1)
			defer s.inflight.Add(-1)
			http.StripPrefix(m.Prefix, m.Handler).ServeHTTP(w, r)
			return
		}
	}
	s.router.ServeHTTP(w, r)
}

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// Paths are matched exactly as sent (after percent-decoding): no
	// redirects to a "fixed" path, no trailing-slash or extra-slash
	// rewriting. A path that matches no route is a 404 in OpenAI's shape.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.RemoveExtraSlash = false
	r.Use(s.recovery, s.requestID, s.accessLog, s.edge, s.cors, s.authorize)
	s.handle(r, http.MethodGet, "/health", accessPublic, s.handleHealth)
	s.handle(r, http.MethodGet, "/ready", accessPublic, s.handleReady)
	s.handle(r, http.MethodGet, "/metrics", accessMetrics, s.handleMetrics)
	api := r.Group("", s.requireJSON, s.limitBody, s.deadline)
	s.handle(api, http.MethodGet, "/v1/models", accessAPI, s.handleModels)
	s.handle(api, http.MethodGet, "/v1/models/:id", accessAPI, s.handleModel)
	s.handle(api, http.MethodPost, "/v1/chat/completions", accessAPI, s.admit, s.handleChat)
	s.handle(api, http.MethodPost, "/v1/completions", accessAPI, s.admit, s.handleCompletions)
	s.handle(api, http.MethodPost, "/v1/embeddings", accessAPI, s.handleEmbeddings)
	s.handle(api, http.MethodPost, "/v1/messages", accessAPI, s.admit, s.handleMessages)
	s.handle(api, http.MethodPost, "/v1/responses", accessAPI, s.admit, s.handleResponses)
	s.handle(api, http.MethodGet, "/v1/responses/:id", accessAPI, s.handleGetResponse)
	s.handle(api, http.MethodDelete, "/v1/responses/:id", accessAPI, s.handleDeleteResponse)
	s.handle(api, http.MethodPost, "/v1/messages/count_tokens", accessAPI, s.handleCountTokens)
	s.handle(api, http.MethodPost, "/tokenize", accessAPI, s.handleTokenize)
	s.handle(api, http.MethodPost, "/detokenize", accessAPI, s.handleDetokenize)
	s.handle(api, http.MethodGet, "/-/status", accessAdmin, s.handleAdminStatus)
	s.handle(r, http.MethodPost, "/-/apply", accessAdmin, s.limitBody, s.handleApply)
	s.handle(api, http.MethodPost, "/v1/load_lora_adapter", accessAdmin, s.handleLoadAdapter)
	s.handle(api, http.MethodPost, "/v1/unload_lora_adapter", accessAdmin, s.handleUnloadAdapter)
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, openai.NotFound("", "unknown_url", "unknown endpoint %s %s", c.Request.Method, clip(c.Request.URL.Path)))
	})
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, &openai.Error{Status: http.StatusMethodNotAllowed, Type: openai.TypeInvalidRequest, Message: "method " + clip(c.Request.Method) + " is not allowed on " + clip(c.Request.URL.Path)})
	})
	return r
}

// httpServer is the http.Server Serve runs: header limits and timeouts
// against slow or flooding clients, and each connection marked with
// whether its listener is bound to a loopback address (the Host check).
// No ReadTimeout: net/http cancels a request's context when a read
// deadline passes, which would cut long streams.
func (s *Server) httpServer(ctx context.Context, ln net.Listener) *http.Server {
	loopback := isLoopback(ln.Addr())
	return &http.Server{
		Handler:           s.handler,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       func(c context.Context, _ net.Conn) context.Context { return context.WithValue(c, boundKey{}, loopback) },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Serve serves on ln until ctx ends, then drains. The listener stays
// open while draining, so that readiness answers 503 at once and new
// generation requests get 503 rather than a refused connection (a load
// balancer that has not yet noticed keeps getting clear answers); running
// requests have ShutdownTimeout to finish; those still running then end
// with an error (an SSE error event on a stream) and the server closes.
// It returns once everything has stopped.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	base, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stop(nil)
	hs := s.httpServer(base, ln)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("draining", "timeout", s.opts.ShutdownTimeout)
	idle := make(chan struct{})
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for s.inflight.Load() > 0 {
			select {
			case <-t.C:
			case <-stopWatch:
				return
			}
		}
		close(idle)
	}()
	timer := time.NewTimer(s.opts.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-idle:
	case <-timer.C:
		s.log.Warn("shutdown deadline passed; ending the requests still running")
		stop(errShuttingDown)
		select {
		case <-idle:
		case <-time.After(2 * time.Second):
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Draining reports whether a shutdown has started.
func (s *Server) Draining() bool { return s.draining.Load() }
