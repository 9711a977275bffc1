package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

// choiceEvent is a scheduler event with its choice index across all the
// prompts of one HTTP request.
type choiceEvent struct {
	scheduler.Event
	Index int
}

// generation is the outcome of submitting one HTTP request's prompts.
type generation struct {
	usage   openai.Usage
	timings scheduler.Timings
}

// generate submits every request (one per prompt, each with n choices),
// then hands their events to onEvent in the calling goroutine, in arrival
// order. It returns after every stream has ended, or when onEvent fails
// (the client went away), abandoning the rest.
func (s *Server) generate(ctx context.Context, reqs []scheduler.Request, onEvent func(choiceEvent) error) (generation, error) {
	var g generation
	streams := make([]*scheduler.Stream, 0, len(reqs))
	closeAll := func() {
		for _, st := range streams {
			st.Close()
		}
	}
	for _, r := range reqs {
		st, err := s.sched.Submit(ctx, r)
		if err != nil {
			closeAll()
			return g, err
		}
		streams = append(streams, st)
	}
	defer closeAll()
	final := func(u *scheduler.Usage) {
		if u == nil {
			return
		}
		g.usage.PromptTokens += u.PromptTokens
		g.usage.CompletionTokens += u.CompletionTokens
		if u.CachedTokens > 0 {
			if g.usage.PromptTokensDetails == nil {
				g.usage.PromptTokensDetails = &openai.PromptTokensDetails{}
			}
			g.usage.PromptTokensDetails.CachedTokens += u.CachedTokens
		}
		if g.timings.TTFT == 0 {
			g.timings = u.Timings
		}
	}
	var firstErr error
	if len(streams) == 1 {
		// One prompt: read in this goroutine, with no hop in between.
		for {
			ev, err := streams[0].Recv(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				firstErr = err
				break
			}
			if ev.Final {
				final(ev.Usage)
				continue
			}
			if err := onEvent(choiceEvent{Event: ev, Index: ev.Index}); err != nil {
				firstErr = err
				break
			}
		}
	} else {
		firstErr = s.fanIn(ctx, streams, reqs, onEvent, final, closeAll)
	}
	g.usage.TotalTokens = g.usage.PromptTokens + g.usage.CompletionTokens
	s.metrics.observe(g)
	return g, firstErr
}

// fanIn merges several prompts' streams, offsetting each one's choice
// indices, and hands their events to onEvent in the calling goroutine.
func (s *Server) fanIn(ctx context.Context, streams []*scheduler.Stream, reqs []scheduler.Request, onEvent func(choiceEvent) error, final func(*scheduler.Usage), closeAll func()) error {
	type tagged struct {
		ev   scheduler.Event
		base int
		err  error
		end  bool
	}
	ch := make(chan tagged, 64)
	base := 0
	for i, st := range streams {
		b := base
		base += max(reqs[i].N, 1)
		go func() {
			for {
				ev, err := st.Recv(ctx)
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					ch <- tagged{err: err, end: true}
					return
				}
				ch <- tagged{ev: ev, base: b}
			}
		}()
	}
	var firstErr error
	for open := len(streams); open > 0; {
		t := <-ch
		switch {
		case t.end:
			open--
			if t.err != nil && firstErr == nil {
				firstErr = t.err
			}
		case t.ev.Final:
			final(t.ev.Usage)
		case firstErr != nil:
			// Draining after a failure.
		default:
			if err := onEvent(choiceEvent{Event: t.ev, Index: t.base + t.ev.Index}); err != nil {
				firstErr = err
				closeAll()
			}
		}
	}
	return firstErr
}

// collected is the whole output of a non-streamed request.
type collected struct {
	texts  []strings.Builder
	finish []*string
	gen    generation
}

// collect runs a non-streamed request: it gathers each choice's text and
// finish reason (texts start with prefix(i), for echo), hands every event to
// each (for log-probabilities), and turns the first choice error into the
// request's error.
func (s *Server) collect(ctx context.Context, reqs []scheduler.Request, choices int, prefix func(int) string, each func(choiceEvent)) (*collected, error) {
	out := &collected{texts: make([]strings.Builder, choices), finish: make([]*string, choices)}
	if prefix != nil {
		for i := range out.texts {
			out.texts[i].WriteString(prefix(i))
		}
	}
	var choiceErr error
	g, err := s.generate(ctx, reqs, func(ev choiceEvent) error {
		out.texts[ev.Index].WriteString(ev.Text)
		if each != nil {
			each(ev)
		}
		if ev.Finish != "" {
			out.finish[ev.Index] = finishString(ev.Finish)
		}
		if ev.Err != nil && choiceErr == nil {
			choiceErr = ev.Err
		}
		return nil
	})
	out.gen = g
	if err == nil {
		err = choiceErr
	}
	return out, err
}

// seedFor returns the request's seed, or a random one.
func seedFor(seed *int64) uint32 {
	if seed != nil {
		return uint32(*seed)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func finishString(f scheduler.FinishReason) *string {
	var s string
	switch f {
	case scheduler.FinishStop:
		s = "stop"
	case scheduler.FinishLength:
		s = "length"
	default:
		return nil
	}
	return &s
}

// serverTiming renders the phases of a request for the Server-Timing header.
func serverTiming(t scheduler.Timings) string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	return strings.Join([]string{"queue;dur=" + ms(t.Queued), "prefill;dur=" + ms(t.Prefill), "decode;dur=" + ms(t.Decode)}, ", ")
}

// parseGeneration decodes and validates a chat or completions request and
// checks its model, answering the client itself on failure.
func (s *Server) parseGeneration(c *gin.Context, req interface {
	Validate(openai.Limits, openai.ModelInfo) *openai.Error
}, model *string) (openai.ModelInfo, bool) {
	mi := s.modelInfo()
	if e := decode(c, req); e != nil {
		s.fail(c, e)
		return mi, false
	}
	if e := req.Validate(s.limits, mi); e != nil {
		s.fail(c, e)
		return mi, false
	}
	if e := s.resolveModel(c, *model); e != nil {
		s.fail(c, e)
		return mi, false
	}
	return mi, true
}

// resolveModel checks the requested model (the multiplex header wins over
// the body's field) against what this server serves.
func (s *Server) resolveModel(c *gin.Context, model string) *openai.Error {
	if h := c.GetHeader("llmux-multiplexed-model-id"); h != "" {
		model = h
	}
	if !s.names[model] {
		return openai.NotFound("model", "model_not_found", "the model %q does not exist; this server serves %q", model, s.opts.ModelName)
	}
	return nil
}

func (s *Server) modelInfo() openai.ModelInfo {
	o := s.sched.Options()
	return openai.ModelInfo{VocabSize: s.model.VocabSize(), Context: s.sched.SeqContext(), Parallel: o.Parallel}
}

func bytesOf(b []byte) []int {
	out := make([]int, len(b))
	for i, x := range b {
		out[i] = int(x)
	}
	return out
}
