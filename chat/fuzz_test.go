package chat

import (
	"strings"
	"testing"
)

// FuzztoolStream feeds a model's answer to the streaming tool-call parser
// in pieces cut at every '|' (which is removed) and parses the whole
// answer at once: neither may panic, and a streamed answer that parses to
// calls parses to as many as the whole.
func FuzzToolStream(f *testing.F) {
	for _, seed := range []string{
		`{"tool_calls":[{"name":"f","arguments":{"a":1}}]}`,
		`{"resp|onse": "hel|lo \u00e9|\ud83d|\ude00"}`,
		`{"response":"a\\"b\\\\c\n"}`,
		`{"tool_calls":[{"name":"f","arguments":{}},{"name":"g","arguments":{"x":"y"}}]}`,
		`{"response": "unterminated`,
		`not json at all`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, answer string) {
		var ts toolStream
		for _, piece := range strings.Split(answer, "|") {
			_ = ts.Add(piece)
		}
		_, streamed := ts.Finish()
		_, whole := parseGeneric(strings.ReplaceAll(answer, "|", ""))
		if len(streamed) > 0 && len(streamed) != len(whole) {
			t.Fatalf("streamed %d calls, whole %d: %q", len(streamed), len(whole), answer)
		}
	})
}
