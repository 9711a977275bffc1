package server

import (
	"context"
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/middleware"
	"github.com/llmux/llmux/openai"
)

// The network edge: what a request must satisfy before any handler reads
// it. Every check here is cheap and answers in OpenAI's error shape.

// access says who may call a route. Routes are classified when they are
// registered, and the access middleware decides on the route gin matched
// (c.FullPath()), never on a path prefix: "//v1", "/V1", "%2F" or ".." in
// a path either match a route, and get its class, or match none and get
// 404 from a handler that serves nothing.
type access int

const (
	accessAdmin   access = iota // an admin key; the zero value, so an unclassified route fails closed
	accessAPI                   // an API key, when keys are configured
	accessPublic                // anyone: /health, /ready, and /metrics unless MetricsAuth
	accessMetrics               // /metrics: public, or an API or admin key with MetricsAuth
)

// Authenticator admits a request to the API routes or says why not (a
// 401, or a 429 for a key over its rate limit); middleware.Auth is one.
type Authenticator interface {
	Check(r *http.Request) *openai.Error
}

// handle registers a route with its access class.
func (s *Server) handle(g gin.IRoutes, method, path string, a access, h ...gin.HandlerFunc) {
	s.access[method+" "+path] = a
	g.Handle(method, path, h...)
}

// authorize enforces the matched route's access class.
func (s *Server) authorize(c *gin.Context) {
	route := c.FullPath()
	if route == "" {
		c.Next() // no route: the 404/405 handlers serve nothing
		return
	}
	switch s.access[c.Request.Method+" "+route] {
	case accessPublic:
	case accessMetrics:
		if s.opts.MetricsAuth && !keyMatches(c, s.opts.APIKeys) && !keyMatches(c, s.opts.AdminKeys) {
			s.fail(c, openai.Unauthorized("/metrics needs an API key: send Authorization: Bearer <key>"))
			return
		}
	case accessAPI:
		if s.opts.Auth == nil {
			break
		}
		if e := s.opts.Auth.Check(c.Request); e != nil {
			s.fail(c, e)
			return
		}
	default: // accessAdmin
		if len(s.opts.AdminKeys) == 0 {
			s.fail(c, openai.Forbidden("admin_disabled", "admin routes are disabled: start llmux with --admin-key"))
			return
		}
		if !keyMatches(c, s.opts.AdminKeys) {
			s.fail(c, openai.Unauthorized("this route needs an admin key: send Authorization: Bearer <admin key>"))
			return
		}
	}
	c.Next()
}

func bearer(c *gin.Context) (string, bool) {
	return middleware.RequestKey(c.Request)
}

// keyMatches compares the request's bearer token with every key in
// constant time: neither which key matched nor how much of one did shows
// in the timing.
func keyMatches(c *gin.Context, keys []string) bool {
	key, ok := bearer(c)
	if !ok || len(keys) == 0 {
		return false
	}
	valid := 0
	for _, k := range keys {
		valid |= subtle.ConstantTimeCompare([]byte(key), []byte(k))
	}
	return valid == 1
}

// boundKey carries, per connection, whether the listener that accepted it
// is bound to a loopback address (set by Serve).
type boundKey struct{}

// loopbackBound reports whether the request came through a listener bound
// to a loopback address. Without Serve (a handler mounted elsewhere, or
// httptest), the connection's local address decides.
func loopbackBound(r *http.Request) bool {
	if v, ok := r.Context().Value(boundKey{}).(bool); ok {
		return v
	}
	a, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return isLoopback(a)
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// hostAllowed reports whether a Host header names this machine's loopback
// (localhost, *.localhost, 127.0.0.0/8, ::1, with or without a port) or one
// of the extra names ("*": any).
func hostAllowed(host string, extra []string) bool {
	if host == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, e := range extra {
		if e == "*" || strings.EqualFold(e, h) || strings.EqualFold(e, host) {
			return true
		}
	}
	return false
}

// edge refuses, before anything reads the request: a Host that is not a
// loopback name on a loopback listener (DNS rebinding: a web page whose
// name resolves to 127.0.0.1 must not reach the API), and header sections
// over MaxHeaders fields or MaxHeaderBytes (431; net/http itself cuts
// connections whose headers exceed MaxHeaderBytes by more than 4 KiB).
func (s *Server) edge(c *gin.Context) {
	r := c.Request
	if loopbackBound(r) && !hostAllowed(r.Host, s.opts.AllowedHosts) {
		s.fail(c, openai.Forbidden("host_not_allowed", "the Host header %q is not allowed: this server listens on a loopback address (start llmux with --allowed-hosts to add names)", clip(r.Host)))
		return
	}
	count, size := 1, len(r.Host)+len("Host: \r\n")
	for k, vs := range r.Header {
		count += len(vs)
		for _, v := range vs {
			size += len(k) + len(v) + len(": \r\n")
		}
	}
	if count > s.opts.MaxHeaders || size > s.opts.MaxHeaderBytes {
		s.fail(c, &openai.Error{Status: http.StatusRequestHeaderFieldsTooLarge, Type: openai.TypeInvalidRequest, Code: ptrTo("request_header_fields_too_large"),
			Message: "the request's headers exceed the limits: at most " + strconv.Itoa(s.opts.MaxHeaders) + " fields and " + strconv.Itoa(s.opts.MaxHeaderBytes) + " bytes"})
		return
	}
	c.Next()
}

// requireJSON answers 415 to a request body whose Content-Type is present
// and not JSON (application/json, with or without parameters, or any
// +json type). A missing Content-Type is accepted, since many clients
// omit it; the body must still parse as JSON. Refusing form and text
// bodies also refuses the "simple" cross-origin requests a web page can
// send without a CORS preflight.
func (s *Server) requireJSON(c *gin.Context) {
	if c.Request.Method != http.MethodPost {
		c.Next()
		return
	}
	ct := c.GetHeader("Content-Type")
	if ct == "" {
		c.Next()
		return
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		s.fail(c, &openai.Error{Status: http.StatusUnsupportedMediaType, Type: openai.TypeInvalidRequest, Code: ptrTo("unsupported_media_type"),
			Message: "the request body must be JSON: send Content-Type: application/json"})
		return
	}
	c.Next()
}

// errRequestTimeout is the cause of a request's context ending at
// RequestTimeout.
var errRequestTimeout = &openai.Error{Status: http.StatusGatewayTimeout, Type: openai.TypeServer, Code: ptrTo("timeout"), Message: "the request ran past the server's request timeout"}

// deadline bounds each API request's whole run by RequestTimeout: a
// stream still going then ends with a timeout error.
func (s *Server) deadline(c *gin.Context) {
	if s.opts.RequestTimeout <= 0 {
		c.Next()
		return
	}
	ctx, cancel := context.WithTimeoutCause(c.Request.Context(), s.opts.RequestTimeout, errRequestTimeout)
	defer cancel()
	c.Request = c.Request.WithContext(ctx)
	c.Next()
}

// errShuttingDown is the cause of a request's context ending when the
// server stops after its drain timeout.
var errShuttingDown = openai.Unavailable("the server is shutting down")

// endedByServer is why the server ended ctx — the request timeout or the
// end of a drain — or nil when it has not ended or the client left.
func endedByServer(ctx context.Context) *openai.Error {
	if ctx.Err() == nil {
		return nil
	}
	switch cause := context.Cause(ctx); cause {
	case error(errRequestTimeout), error(errShuttingDown):
		return cause.(*openai.Error)
	}
	return nil
}

func ptrTo(s string) *string { return &s }

// clip shortens client-supplied text echoed in an error.
func clip(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}
