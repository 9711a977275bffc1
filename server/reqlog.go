package server

import (
	"context"
	"log/slog"
	"regexp"
	"sync"

	"github.com/gin-gonic/gin"
)

// requestLog gathers what the request log line says about a generation:
// the handlers fill it in through the request's context as they learn it.
type requestLog struct {
	mu      sync.Mutex // a stream's consumer and the access log may meet
	model   string
	adapter bool // model names an adapter (of base)
	base    string
	gen     *generation
}

type requestLogKey struct{}

func requestLogOf(ctx context.Context) *requestLog {
	rl, _ := ctx.Value(requestLogKey{}).(*requestLog)
	return rl
}

func (rl *requestLog) setModel(model, parent string) {
	if rl == nil {
		return
	}
	rl.mu.Lock()
	rl.model, rl.base, rl.adapter = model, parent, parent != ""
	rl.mu.Unlock()
}

func (rl *requestLog) setGeneration(g generation) {
	if rl == nil {
		return
	}
	rl.mu.Lock()
	rl.gen = &g
	rl.mu.Unlock()
}

// attrs are the log attributes of what the request generated.
func (rl *requestLog) attrs() []any {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.model == "" {
		return nil
	}
	out := []any{"model", rl.model}
	if rl.adapter {
		out = append(out, "base", rl.base)
	}
	if g := rl.gen; g != nil {
		t := g.timings
		ms := func(d interface{ Microseconds() int64 }) float64 { return float64(d.Microseconds()) / 1000 }
		out = append(out, slog.Group("tokens", "prompt", g.usage.PromptTokens, "cached", g.cached(), "completion", g.usage.CompletionTokens),
			slog.Group("ms", "start", ms(t.Start), "load", ms(t.Load), "queue", ms(t.Queued), "prefill", ms(t.Prefill), "decode", ms(t.Decode), "ttft", ms(t.TTFT)))
	}
	return out
}

// traceParent matches a W3C traceparent of version 00 (or a later version,
// whose first four fields keep their form); an all-zero trace or parent id
// is invalid.
var traceParent = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$`)

// traceParentOf is the request's traceparent when it is valid, else "".
func traceParentOf(c *gin.Context) string {
	v := c.GetHeader("traceparent")
	if !traceParent.MatchString(v) || v[:2] == "ff" || (v[:2] == "00" && len(v) != 55) ||
		v[3:35] == "00000000000000000000000000000000" || v[36:52] == "0000000000000000" {
		return ""
	}
	return v
}
