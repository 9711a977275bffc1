package server

import (
	"encoding/json"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/openai"
)

// startSSE opens an event stream (once: a stream opened while its model
// loaded is not opened again).
func startSSE(c *gin.Context) {
	if c.Writer.Written() {
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Trailer", "Server-Timing") // the phases, known at the end
	c.Status(200)
}

// writeSSE sends one "data: {json}" event and flushes it.
func writeSSE(c *gin.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, '\n', '\n')
	if _, err := c.Writer.Write(buf); err != nil {
		return err
	}
	c.Writer.Flush()
	return nil
}

func writeSSEDone(c *gin.Context) {
	c.Writer.Write([]byte("data: [DONE]\n\n"))
	c.Writer.Flush()
}

// writeSSEError ends a stream that already started with an error event in
// OpenAI's error shape, then [DONE]: never a silent cut.
func writeSSEError(c *gin.Context, e *openai.Error) {
	_ = writeSSE(c, openai.ErrorBody{Error: e})
	writeSSEDone(c)
}
