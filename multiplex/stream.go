package multiplex

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/llmux/llmux/chat"
	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/scheduler"
)

// stream merges the scheduler streams of one request's prompts into one
// llm.Stream. With one prompt it reads the scheduler stream in the
// caller's goroutine, with no hop in between (the scheduler's step
// handoff relies on the consumer coming back to Recv); with several, one
// goroutine per prompt forwards into a channel.
type stream struct {
	model  *engine.Model
	header llm.Header
	subs   []*scheduler.Stream

	merged chan tagged // several prompts only
	// stop ends the forwarders (several prompts only).
	stop context.CancelFunc
	once sync.Once
	open int // forwarders still running (several prompts)

	// outputs read each choice's text in the model's chat format (chat
	// requests only).
	outputs []*chat.Output

	usage    llm.Usage
	timed    bool
	firstErr *llm.Error
	ended    bool
	// onEnd, when set, runs once when the stream ends or is closed
	// (releases the model lease).
	onEnd   func()
	endOnce sync.Once
}

type tagged struct {
	ev   scheduler.Event
	base int
	err  error
	end  bool
}

var _ llm.Stream = (*stream)(nil)

func newStream(m *engine.Model, h llm.Header, subs []*scheduler.Stream, n int) *stream {
	s := &stream{model: m, header: h, subs: subs}
	if len(subs) > 1 {
		var ctx context.Context
		ctx, s.stop = context.WithCancel(context.Background())
		s.merged = make(chan tagged, 64)
		s.open = len(subs)
		for i, st := range subs {
			go s.forward(ctx, st, i*n)
		}
	}
	return s
}

// forward moves one prompt's events into the merged channel until that
// prompt ends or the stream is closed.
func (s *stream) forward(ctx context.Context, st *scheduler.Stream, base int) {
	for {
		ev, err := st.Recv(ctx)
		t := tagged{ev: ev, base: base}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			t = tagged{err: err, end: true}
		}
		select {
		case s.merged <- t:
		case <-ctx.Done():
			return
		}
		if t.end {
			return
		}
	}
}

func (s *stream) Header() llm.Header { return s.header }

// Recv returns the next event of any prompt, and the final event (summed
// usage) once every prompt has ended.
func (s *stream) Recv(ctx context.Context) (llm.Event, bool) {
	for !s.ended {
		var (
			ev   scheduler.Event
			base int
			err  error
			end  bool
		)
		if s.merged == nil {
			ev, err = s.subs[0].Recv(ctx)
			if errors.Is(err, io.EOF) {
				err, end = nil, true
			}
		} else if s.open == 0 {
			end = true
		} else {
			select {
			case t := <-s.merged:
				ev, base, err, end = t.ev, t.base, t.err, t.end
				if end {
					s.open--
					end = s.open == 0
					if !end && err == nil {
						continue
					}
				}
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				s.finish()
				return llm.Event{Final: true, Error: llm.Errorf(llm.CodeCancelled, "", "request cancelled")}, false
			}
			if s.firstErr == nil {
				s.firstErr = ErrorOf(err)
			}
			if s.merged == nil || s.open == 0 {
				end = true
			} else {
				continue
			}
		}
		if end {
			s.finish()
			fin := llm.Event{Final: true, Usage: &s.usage, Error: s.firstErr}
			return fin, true
		}
		if ev.Final {
			s.add(ev.Usage)
			if ev.Err != nil && s.firstErr == nil {
				s.firstErr = ErrorOf(ev.Err)
			}
			continue
		}
		return s.convert(ev, base), true
	}
	return llm.Event{}, false
}

// finish marks the stream over and releases what it holds.
func (s *stream) finish() {
	s.ended = true
	s.Close()
}

func (s *stream) add(u *scheduler.Usage) {
	if u == nil {
		return
	}
	s.usage.PromptTokens += u.PromptTokens
	s.usage.CompletionTokens += u.CompletionTokens
	s.usage.CachedTokens += u.CachedTokens
	if !s.timed && u.Timings.TTFT > 0 {
		s.timed = true
		t := u.Timings
		s.usage.Timings = llm.Timings{Load: s.usage.Timings.Load, Queued: t.Queued, Prefill: t.Prefill, Decode: t.Decode, TTFT: t.TTFT}
	}
}

func (s *stream) convert(ev scheduler.Event, base int) llm.Event {
	out := llm.Event{Index: base + ev.Index, Text: ev.Text, Finish: llm.Finish(ev.Finish), At: ev.At}
	if s.outputs != nil && out.Index < len(s.outputs) {
		p := s.outputs[out.Index].Add(ev.Text, ev.Finish != "")
		out.Text, out.Reasoning, out.ToolCalls = p.Content, p.Reasoning, p.Calls
		if p.Reasoning != "" && p.Content == "" && len(p.Calls) == 0 {
			s.usage.ReasoningTokens += len(ev.Tokens)
		}
	}
	if ev.Err != nil {
		out.Error = ErrorOf(ev.Err)
	}
	if len(ev.Tokens) > 0 {
		out.Tokens = make([]llm.Token, len(ev.Tokens))
		for i, t := range ev.Tokens {
			tok := llm.Token{ID: t.ID, Bytes: t.Piece, Logprob: t.Logprob}
			for _, alt := range t.Top {
				tok.Top = append(tok.Top, llm.Alternative{ID: alt.Token, Bytes: s.model.Piece(alt.Token), Logprob: alt.Logprob})
			}
			out.Tokens[i] = tok
		}
	}
	return out
}

// Close abandons every prompt of the request.
func (s *stream) Close() {
	s.once.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		for _, st := range s.subs {
			st.Close()
		}
	})
	s.endOnce.Do(func() {
		if s.onEnd != nil {
			s.onEnd()
		}
	})
}
