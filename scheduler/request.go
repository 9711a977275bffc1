package scheduler

import (
	"errors"
	"fmt"
	"time"

	"github.com/llmux/llmux/engine"
)

// Request is one generation request: a tokenized prompt and how to
// continue it. The zero value of each optional field means "default".
type Request struct {
	// ID names the request in logs and errors.
	ID string
	// Model and Adapter select what runs the request. A scheduler serves
	// one model; they are carried so that a multiplexing layer above can
	// route on them. Empty means "whatever this scheduler serves".
	Model   string
	Adapter string

	Prompt   []int32
	Sampling engine.SamplingParams
	// MaxTokens bounds the generated tokens per choice (0: until the
	// context is full).
	MaxTokens int
	// Stop strings end a choice; they are never part of its text.
	Stop []string
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// TopLogprobs > 0 asks for that many alternatives per token; Logprobs
	// asks for the chosen token's log-probability.
	Logprobs    bool
	TopLogprobs int
	// N is the number of independent choices sharing the prompt (default 1).
	N int
	// Priority: lower runs first (default 0), as in vLLM.
	Priority int
	// Deadline for the first token. A request predicted to miss it is
	// rejected at once; one still queued at the deadline fails. Zero: the
	// scheduler's default queue timeout.
	Deadline time.Time
}

// FinishReason says why a choice ended.
type FinishReason string

const (
	FinishStop      FinishReason = "stop"      // EOS or a stop string
	FinishLength    FinishReason = "length"    // max tokens or context full
	FinishCancelled FinishReason = "cancelled" // the request's context ended
	FinishError     FinishReason = "error"     // see Event.Err
)

// TokenInfo is one generated token with its log-probabilities (when asked).
type TokenInfo struct {
	ID      int32
	Piece   []byte // the token's own bytes (may be part of a UTF-8 rune)
	Logprob float32
	Top     []engine.TokenLogprob
}

// Event is one piece of a request's output. Events of a choice arrive in
// order; the last event of a request has Final set and carries Usage.
type Event struct {
	Index  int         // choice index, 0..N-1
	Text   string      // new text (valid UTF-8; may be empty while held back)
	Tokens []TokenInfo // tokens this event accounts for
	Finish FinishReason
	Err    error // set when Finish is FinishError, or on a Final error
	Final  bool
	Usage  *Usage
	At     time.Time // when the scheduler emitted it
}

// Usage counts a finished request's tokens and time.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int // prompt tokens reused from the prefix cache
	// WastedTokens are tokens computed for a request that was cancelled
	// or failed, and tokens recomputed after preemption.
	WastedTokens int
	Preemptions  int
	Timings      Timings
}

// Timings split a request's life into phases.
type Timings struct {
	Queued  time.Duration // arrival to first scheduled
	Prefill time.Duration // first scheduled to first token
	Decode  time.Duration // first token to finish
	TTFT    time.Duration // arrival to first token
}

// OverloadError is returned when a request cannot be admitted: the queue
// is full, or it would wait longer than its deadline. RetryAfter is the
// scheduler's estimate of when trying again would succeed.
type OverloadError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *OverloadError) Error() string {
	return fmt.Sprintf("overloaded: %s (retry after %v)", e.Reason, e.RetryAfter.Round(time.Millisecond))
}

// InvalidRequestError is returned for a request that can never run here;
// Param names the offending field.
type InvalidRequestError struct {
	Param   string
	Code    string // e.g. "context_length_exceeded"
	Message string
}

func (e *InvalidRequestError) Error() string { return e.Message }

// ErrClosed is returned by Submit after the scheduler has stopped.
var ErrClosed = errors.New("scheduler is shut down")

func invalid(param, format string, args ...any) error {
	return &InvalidRequestError{Param: param, Message: fmt.Sprintf(format, args...)}
}
