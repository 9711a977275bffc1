// Package openai holds the OpenAI API's wire types, their validation and
// their conversion to scheduler requests. It does no I/O: decoding HTTP
// bodies into these types and encoding responses happens in server.
package openai

import (
	"fmt"
	"net/http"
	"time"
)

// Error is an API error: the HTTP status and OpenAI's error object.
type Error struct {
	Status     int           `json:"-"`
	Message    string        `json:"message"`
	Type       string        `json:"type"`
	Param      *string       `json:"param"`
	Code       *string       `json:"code"`
	RetryAfter time.Duration `json:"-"` // for 429 and 503
}

// ErrorBody is the JSON body of an error response.
type ErrorBody struct {
	Error *Error `json:"error"`
}

func (e *Error) Error() string { return e.Message }

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Error types, as OpenAI names them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	TypeUnavailable    = "service_unavailable_error"
)

// Invalid is a 400 for a bad field.
func Invalid(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: strp(param), Message: fmt.Sprintf(format, args...)}
}

// InvalidCode is a 400 with an error code.
func InvalidCode(param, code, format string, args ...any) *Error {
	e := Invalid(param, format, args...)
	e.Code = strp(code)
	return e
}

// NotFound is a 404 (unknown model, unknown route).
func NotFound(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeNotFound, Param: strp(param), Code: strp(code), Message: fmt.Sprintf(format, args...)}
}

// Unauthorized is a 401.
func Unauthorized(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: strp("invalid_api_key"), Message: msg}
}

// Forbidden is a 403: the request may not be made here, whoever sends it.
func Forbidden(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusForbidden, Type: TypePermission, Code: strp(code), Message: fmt.Sprintf(format, args...)}
}

// TooLarge is a 413.
func TooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: strp("request_too_large"), Message: fmt.Sprintf("request body exceeds %d bytes", limit)}
}

// Overloaded is a 429 with Retry-After.
func Overloaded(msg string, retry time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Type: TypeRateLimit, Code: strp("server_overloaded"), Message: msg, RetryAfter: retry}
}

// RateLimited is a 429 for a caller over its own rate limit (OpenAI's
// rate_limit_exceeded).
func RateLimited(msg string, retry time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Type: TypeRateLimit, Code: strp("rate_limit_exceeded"), Message: msg, RetryAfter: retry}
}

// Unavailable is a 503 (draining or not ready).
func Unavailable(msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Message: msg, RetryAfter: 5 * time.Second}
}

// Internal is a 500: a bug.
func Internal(msg string) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Message: msg}
}
