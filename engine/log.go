package engine

/*
#include <stdlib.h>
*/
import "C"

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// llama.cpp logs in fragments (a line may arrive in several calls, the later
// ones with level CONT). logSink joins them into lines and hands each line to
// slog: llama.cpp's INFO and DEBUG become slog Debug, so a server is quiet
// unless asked.
var logSink struct {
	mu    sync.Mutex // guards buf and level
	buf   strings.Builder
	level slog.Level
}

const (
	ggmlLogDebug = 1
	ggmlLogInfo  = 2
	ggmlLogWarn  = 3
	ggmlLogError = 4
	ggmlLogCont  = 5
)

//export llmuxGoLog
func llmuxGoLog(level C.int, text *C.char) {
	s := C.GoString(text)
	logSink.mu.Lock()
	defer logSink.mu.Unlock()
	if int(level) != ggmlLogCont {
		switch int(level) {
		case ggmlLogError:
			logSink.level = slog.LevelError
		case ggmlLogWarn:
			logSink.level = slog.LevelWarn
		default:
			logSink.level = slog.LevelDebug
		}
	}
	logSink.buf.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		return
	}
	line := strings.TrimRight(logSink.buf.String(), "\n")
	logSink.buf.Reset()
	if line != "" && slog.Default().Enabled(context.Background(), logSink.level) {
		slog.Log(context.Background(), logSink.level, line, "src", "llama.cpp")
	}
}
