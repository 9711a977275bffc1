package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// errorFor maps any error to an API error: its status and OpenAI body.
// This is the one place that decides statuses.
func errorFor(err error) *openai.Error {
	var (
		ae *openai.Error
		le *llm.Error
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &le):
		return apiError(le)
	case errors.Is(err, context.DeadlineExceeded):
		return &openai.Error{Status: http.StatusGatewayTimeout, Type: openai.TypeServer, Message: "request timed out"}
	}
	return internal()
}

// internal is the body of every 500 whose cause is not meant for clients:
// the cause (which may name files or internal state) goes to the log.
func internal() *openai.Error { return openai.Internal("internal error") }

// apiError maps a backend error's code to its status and OpenAI body.
func apiError(e *llm.Error) *openai.Error {
	switch e.Code {
	case llm.CodeInvalid:
		return openai.Invalid(e.Param, "%s", e.Message)
	case llm.CodeContextLength:
		return openai.InvalidCode(e.Param, string(e.Code), "%s", e.Message)
	case llm.CodeModelNotFound:
		return openai.NotFound(e.Param, string(e.Code), "%s", e.Message)
	case llm.CodeOverloaded:
		return openai.Overloaded(e.Message, e.RetryAfter)
	case llm.CodeUnavailable:
		return openai.Unavailable(e.Message)
	case llm.CodeTimeout:
		return &openai.Error{Status: http.StatusGatewayTimeout, Type: openai.TypeServer, Message: e.Message}
	case llm.CodeLoadFailed:
		ae := openai.Internal(e.Message) // written for clients, paths redacted
		code := string(e.Code)
		ae.Code = &code
		return ae
	case llm.CodeCancelled:
		// The client left; whatever is written goes nowhere.
		return &openai.Error{Status: 499, Type: openai.TypeInvalidRequest, Message: e.Message}
	}
	return internal()
}

// fail writes err as an OpenAI error response and aborts the chain.
func (s *Server) fail(c *gin.Context, err error) {
	e := errorFor(err)
	if cause := endedByServer(c.Request.Context()); cause != nil {
		e = cause // a timeout or the end of a drain, not whatever it interrupted
	}
	if e.Status >= 500 && e.Status != http.StatusServiceUnavailable {
		s.log.Error("request failed", "id", requestIDOf(c), "err", err)
	}
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if anthropicPath(c) {
		c.AbortWithStatusJSON(e.Status, anthropicError(e))
		return
	}
	c.AbortWithStatusJSON(e.Status, openai.ErrorBody{Error: e})
}

// decode reads the JSON body into v, mapping every failure to a 4xx. The
// nesting depth is checked on the bytes before decoding.
func (s *Server) decode(c *gin.Context, v any) *openai.Error {
	body, err := io.ReadAll(c.Request.Body)
	if err == nil && c.GetBool(bodyDeadlineKey) {
		// The body is in. (After a failed read the deadline stays, so
		// net/http's discard of the rest cannot block.)
		_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mb *http.MaxBytesError
		switch {
		case errors.As(err, &mb):
			return openai.TooLarge(mb.Limit)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &openai.Error{Status: http.StatusRequestTimeout, Type: openai.TypeInvalidRequest, Code: ptrTo("request_timeout"), Message: "the request body did not arrive in time"}
		}
		return openai.Invalid("", "could not read the request body")
	}
	if len(body) == 0 {
		return openai.Invalid("", "the request body is empty; expected a JSON object")
	}
	if !utf8.Valid(body) {
		return openai.Invalid("", "the request body is not valid UTF-8")
	}
	if e := openai.CheckJSONDepth(body, s.limits.MaxJSONDepth); e != nil {
		return e
	}
	if err := json.Unmarshal(body, v); err != nil {
		var (
			se *json.SyntaxError
			te *json.UnmarshalTypeError
		)
		switch {
		case errors.As(err, &se):
			return openai.Invalid("", "malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			if te.Field == "" {
				return openai.Invalid("", "the request body must be a JSON object")
			}
			field := jsonField(te.Field)
			return openai.Invalid(field, "%s: expected %s, got JSON %s", field, jsonKind(te.Type), te.Value)
		}
		return openai.Invalid("", "invalid request: %v", err)
	}
	return nil
}

// jsonKind names a Go type by the JSON it decodes from, so errors speak
// of the API rather than of llmux's types.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a value"
}

// jsonField drops embedded Go struct names (which start upper-case) from a
// decoder's field path, leaving the JSON names: "Sampling.max_tokens" ->
// "max_tokens".
func jsonField(path string) string {
	parts := strings.Split(path, ".")
	out := parts[:0]
	for _, p := range parts {
		if p != "" && !(p[0] >= 'A' && p[0] <= 'Z') {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}
