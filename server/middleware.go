package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/openai"
)

const (
	requestIDHeader = "X-Request-Id"
	bodyDeadlineKey = "body_deadline"
)

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// requestID takes the client's X-Request-Id (if sane) or makes one, and
// echoes it in the response.
func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader(requestIDHeader)
	if id == "" || len(id) > 128 || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		id = newID("req_")
	}
	c.Set("request_id", id)
	c.Header(requestIDHeader, id)
	c.Next()
}

func requestIDOf(c *gin.Context) string { return c.GetString("request_id") }

// accessLog counts every request and logs one structured line for it:
// its id, route, status and duration, the W3C trace it belongs to, and for
// a generation the model (and base, for an adapter), its tokens and where
// its time went.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	rl := &requestLog{}
	c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), requestLogKey{}, rl))
	tp := traceParentOf(c)
	if tp != "" {
		c.Set(traceParentKey, tp)
	}
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.metrics.requests.WithLabelValues(route, strconv.Itoa(c.Writer.Status())).Inc()
	attrs := []any{"id", requestIDOf(c), "method", c.Request.Method, "path", c.Request.URL.Path,
		"status", c.Writer.Status(), "duration", time.Since(start).Round(time.Microsecond), "remote", c.ClientIP()}
	if tp != "" {
		attrs = append(attrs, "traceparent", tp)
	}
	s.log.Info("request", append(attrs, rl.attrs()...)...)
}

const traceParentKey = "traceparent"

// recovery turns a panic in a handler into a 500 (or, mid-stream, an
// error event), and logs it. It never takes the server down.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in handler", "id", requestIDOf(c), "panic", p, "stack", string(debug.Stack()))
			e := openai.Internal(fmt.Sprintf("internal error (request %s)", requestIDOf(c)))
			if c.Writer.Written() {
				writeSSEError(c, e)
				return
			}
			s.fail(c, e)
		}
	}()
	c.Next()
}

func (s *Server) cors(c *gin.Context) {
	origin := c.GetHeader("Origin")
	if origin == "" || len(s.opts.CORSOrigins) == 0 {
		c.Next()
		return
	}
	allowed := false
	for _, o := range s.opts.CORSOrigins {
		if o == "*" || o == origin {
			allowed = true
			break
		}
	}
	if allowed {
		c.Header("Access-Control-Allow-Origin", origin)
		c.Header("Vary", "Origin")
		c.Header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id, llmux-multiplexed-model-id, serve_multiplexed_model_id")
		c.Header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		c.Header("Access-Control-Expose-Headers", "X-Request-Id, Retry-After, Server-Timing")
	}
	if c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != "" {
		if allowed {
			c.AbortWithStatus(http.StatusNoContent)
		} else {
			s.fail(c, openai.Forbidden("origin_not_allowed", "the origin is not allowed by this server's CORS settings"))
		}
		return
	}
	c.Next()
}

func (s *Server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > s.opts.MaxBodyBytes {
		s.fail(c, openai.TooLarge(s.opts.MaxBodyBytes))
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.opts.MaxBodyBytes)
	if c.Request.Method == http.MethodPost {
		// A body trickled in byte by byte must not hold the connection:
		// decode clears the deadline once the body is in. (Not
		// http.Server.ReadTimeout, which would cancel long streams.)
		if err := http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(s.opts.BodyTimeout)); err == nil {
			c.Set(bodyDeadlineKey, true)
		}
	}
	c.Next()
}

// admit refuses new generation work while draining, and counts what runs.
func (s *Server) admit(c *gin.Context) {
	if s.draining.Load() {
		s.fail(c, openai.Unavailable("server is shutting down"))
		return
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	c.Next()
}
