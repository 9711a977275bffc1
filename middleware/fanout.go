package middleware

import (
	"context"
	"fmt"
	"sync"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
)

// FanOut modes.
const (
	// FanOutBoth asks every deployment and returns each answer as its own
	// choice: the client asks for n equal to the number of deployments.
	FanOutBoth = "both"
	// FanOutFastest asks every deployment and returns the answer whose
	// first token came first, cancelling the others (a hedged request).
	FanOutFastest = "fastest"
)

// FanOutConfig configures FanOut.
type FanOutConfig struct {
	Mode string `json:"mode" yaml:"mode"`
	// Models, when set, is the model to ask each called deployment for,
	// in the order of calls (empty entries: the request's own model).
	Models []string `json:"models,omitempty" yaml:"models,omitempty"`
}

// Validate checks the mode.
func (c *FanOutConfig) Validate() error {
	if c.Mode != FanOutBoth && c.Mode != FanOutFastest {
		return fmt.Errorf("mode: %q is neither %q nor %q", c.Mode, FanOutBoth, FanOutFastest)
	}
	return nil
}

// FanOut asks several deployments the same question at once.
type FanOut struct {
	cfg   FanOutConfig
	calls []*deploy.Handle
}

// NewFanOut fans out over calls (two or more).
func NewFanOut(cfg FanOutConfig, calls []*deploy.Handle) (*FanOut, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(calls) < 2 {
		return nil, fmt.Errorf("a fan-out calls two deployments or more, not %d", len(calls))
	}
	if len(cfg.Models) > 0 && len(cfg.Models) != len(calls) {
		return nil, fmt.Errorf("models: %d given for %d deployments", len(cfg.Models), len(calls))
	}
	return &FanOut{cfg: cfg, calls: calls}, nil
}

func (f *FanOut) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	n := max(req.Params.N, 1)
	if f.cfg.Mode == FanOutBoth {
		if n != len(f.calls) || len(req.Prompts) > 1 {
			return nil, llm.Errorf(llm.CodeInvalid, "n", "this endpoint answers with one choice from each of %d models: ask for n=%d (and one prompt)", len(f.calls), len(f.calls))
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	m := &merged{cancel: cancel, ch: make(chan tagged, 16), n: len(f.calls), winner: -1, mode: f.cfg.Mode}
	for i, h := range f.calls {
		r := *req
		if f.cfg.Mode == FanOutBoth {
			r.Params.N = 1
		}
		var opts []deploy.CallOption
		if len(f.cfg.Models) > 0 && f.cfg.Models[i] != "" {
			opts = append(opts, deploy.WithModel(f.cfg.Models[i]))
		}
		st, e := h.Stream(ctx, &r, opts...)
		if e != nil {
			m.Close()
			return nil, e
		}
		if i == 0 {
			m.header = st.Header()
		}
		m.wg.Add(1)
		go m.pump(ctx, i, st)
	}
	return m, nil
}

type tagged struct {
	from int
	ev   llm.Event
	ok   bool
}

// merged is the fan-out's stream: one goroutine per call forwards its
// events; Recv re-indexes them (both) or keeps the winner's (fastest),
// and ends with one final event carrying the summed usage.
type merged struct {
	header llm.Header
	cancel context.CancelFunc
	ch     chan tagged
	wg     sync.WaitGroup
	n      int
	mode   string

	// Recv's own state (one consumer).
	ended  int
	winner int
	usage  llm.Usage
	err    *llm.Error
	done   bool
	once   sync.Once
}

func (m *merged) pump(ctx context.Context, from int, st llm.Stream) {
	defer m.wg.Done()
	defer st.Close()
	for {
		ev, ok := st.Recv(ctx)
		select {
		case m.ch <- tagged{from: from, ev: ev, ok: ok}:
		case <-ctx.Done():
			return
		}
		if !ok || ev.Final {
			return
		}
	}
}

func (m *merged) Header() llm.Header { return m.header }

func (m *merged) Recv(ctx context.Context) (llm.Event, bool) {
	for !m.done {
		var t tagged
		select {
		case t = <-m.ch:
		case <-ctx.Done():
			m.Close()
			return llm.Event{Final: true, Error: llm.Errorf(llm.CodeCancelled, "", "cancelled")}, false
		}
		if m.mode == FanOutFastest && m.winner >= 0 && t.from != m.winner {
			continue // a loser's late events
		}
		if !t.ok || t.ev.Final {
			if !t.ok && t.ev.Error == nil {
				t.ev.Error = llm.Errorf(llm.CodeCancelled, "", "cancelled")
			}
			m.finish(t)
			if m.mode == FanOutFastest && t.from == m.winner || m.ended == m.n {
				m.done = true
				m.Close()
				return llm.Event{Final: true, Usage: &m.usage, Error: m.err, At: t.ev.At}, true
			}
			continue
		}
		ev := t.ev
		switch m.mode {
		case FanOutBoth:
			ev.Index = t.from
		case FanOutFastest:
			if m.winner < 0 && (ev.Text != "" || len(ev.Tokens) > 0) {
				m.winner = t.from
			}
			if m.winner != t.from {
				continue // not yet decided, or a loser: hold nothing back, drop it
			}
		}
		return ev, true
	}
	return llm.Event{}, false
}

// finish folds one call's end into the totals.
func (m *merged) finish(t tagged) {
	m.ended++
	if u := t.ev.Usage; u != nil && (m.mode == FanOutBoth || t.from == m.winner) {
		if m.usage.PromptTokens == 0 {
			m.usage.Timings = u.Timings
		}
		m.usage.PromptTokens += u.PromptTokens
		m.usage.CompletionTokens += u.CompletionTokens
		m.usage.CachedTokens += u.CachedTokens
	}
	if t.ev.Error != nil && m.err == nil && (m.mode == FanOutBoth || t.from == m.winner || m.ended == m.n) {
		m.err = t.ev.Error
	}
}

// Close cancels every call and waits for their goroutines.
func (m *merged) Close() {
	m.once.Do(func() {
		m.cancel()
		m.wg.Wait()
	})
}
