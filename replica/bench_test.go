package replica

import (
	"context"
	"testing"

	"github.com/llmux/llmux/llm"
)

// instant is a backend whose streams produce n events at once: what is
// left of a Generate call is the transport.
type instant struct{ llm.Backend }

type instantStream struct{ left int }

func (instant) Generate(context.Context, *llm.Request) (llm.Stream, *llm.Error) {
	return &instantStream{left: 1000}, nil
}
func (s *instantStream) Header() llm.Header { return llm.Header{PromptTokens: []int{1}} }
func (s *instantStream) Recv(context.Context) (llm.Event, bool) {
	if s.left < 0 {
		return llm.Event{}, false
	}
	s.left--
	if s.left < 0 {
		return llm.Event{Final: true, Usage: &llm.Usage{CompletionTokens: 1000}}, true
	}
	return llm.Event{Text: "tok", Tokens: []llm.Token{{ID: 7, Bytes: []byte("tok")}}}, true
}
func (s *instantStream) Close() {}

// BenchmarkEventOverTheSocket measures one event's trip from a replica to
// the serving process (1,000 events a call).
func BenchmarkEventOverTheSocket(b *testing.B) {
	c := overSocket(b, instant{})
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		st, e := c.Generate(ctx, &llm.Request{Model: "x", Prompts: []llm.Prompt{{Text: "x"}}})
		if e != nil {
			b.Fatal(e)
		}
		n := 0
		for {
			ev, ok := st.Recv(ctx)
			if !ok || ev.Final {
				break
			}
			n++
		}
		st.Close()
		if n != 1000 {
			b.Fatalf("%d events", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/event")
}
