package server

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/openai"
)

// FuzzSSEEncoder writes a chunk with fuzzed text (any bytes: newlines,
// "data:", "[DONE]", invalid UTF-8) and an error event: each must come out
// as exactly one "data: " line ended by a blank line, so no content can
// forge or split an event, and the chunk must decode back to its text
// (invalid UTF-8 replaced, as encoding/json does).
func FuzzSSEEncoder(f *testing.F) {
	for _, s := range []string{"hello", "a\n\ndata: [DONE]\n\n", "\r\n\r\n", "\xff\xfe", "data: {\"error\":1}", "\u2028\u2029", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		gin.SetMode(gin.ReleaseMode)
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		chunk := openai.ChatChunk{ID: "x", Object: "chat.completion.chunk", Choices: []openai.ChatChunkChoice{{Delta: openai.ChatDelta{Content: &text}}}}
		if err := writeSSE(c, chunk); err != nil {
			t.Fatal(err)
		}
		writeSSEError(c, openai.Invalid("", "%s", text))
		out := w.Body.String()
		events := strings.Split(strings.TrimSuffix(out, "\n\n"), "\n\n")
		if len(events) != 3 || events[2] != "data: [DONE]" {
			t.Fatalf("want 3 events (chunk, error, [DONE]), got %d in %q", len(events), out)
		}
		for _, ev := range events {
			if strings.ContainsAny(ev, "\r\n") || !strings.HasPrefix(ev, "data: ") {
				t.Fatalf("event %q is not one data line", ev)
			}
		}
		var back openai.ChatChunk
		if err := json.Unmarshal([]byte(strings.TrimPrefix(events[0], "data: ")), &back); err != nil {
			t.Fatal(err)
		}
		var want strings.Builder // each invalid byte becomes U+FFFD, as encoding/json does
		for i := 0; i < len(text); {
			r, n := utf8.DecodeRuneInString(text[i:])
			want.WriteRune(r)
			i += n
		}
		if got := *back.Choices[0].Delta.Content; got != want.String() {
			t.Fatalf("text %q came back as %q", want.String(), got)
		}
	})
}
