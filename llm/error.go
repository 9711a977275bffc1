package llm

import (
	"fmt"
	"time"
)

// Code classifies an Error. Codes are stable: they cross process
// boundaries and the serving side maps each to an HTTP status.
type Code string

const (
	// CodeInvalid: the request can never run as asked (400).
	CodeInvalid Code = "invalid_request"
	// CodeContextLength: a prompt does not fit the model's context (400).
	CodeContextLength Code = "context_length_exceeded"
	// CodeModelNotFound: no such name in the catalog (404).
	CodeModelNotFound Code = "model_not_found"
	// CodeOverloaded: not admitted now; try again after RetryAfter (429).
	CodeOverloaded Code = "overloaded"
	// CodeUnavailable: shutting down, or the model cannot serve now (503).
	CodeUnavailable Code = "unavailable"
	// CodeLoadFailed: the model or adapter could not be loaded (500).
	CodeLoadFailed Code = "load_failed"
	// CodeTimeout: a deadline passed (504).
	CodeTimeout Code = "timeout"
	// CodeCancelled: the caller abandoned the request.
	CodeCancelled Code = "cancelled"
	// CodeInternal: anything else (500).
	CodeInternal Code = "internal_error"
)

// Error is a failure as data.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Param names the request field at fault, when one is.
	Param string `json:"param,omitempty"`
	// RetryAfter is the backend's estimate of when trying again would
	// succeed (CodeOverloaded).
	RetryAfter time.Duration `json:"retry_after,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error.
func Errorf(code Code, param, format string, args ...any) *Error {
	return &Error{Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}
