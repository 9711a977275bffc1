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
	mu    sync.Mutex // guards the fields below
	buf   strings.Builder
	level slog.Level
	// The last error lines, kept because llama.cpp reports why a load or
	// a context failed only in its log: errs[n%len(errs)] is line n.
	errs [8]string
	nErr uint64
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
	logFragment(int(level), C.GoString(text))
}

// logFragment takes one piece of llama.cpp's log at its ggml level.
func logFragment(level int, s string) {
	logSink.mu.Lock()
	defer logSink.mu.Unlock()
	if level != ggmlLogCont {
		switch level {
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
	if line != "" && logSink.level == slog.LevelError {
		logSink.errs[logSink.nErr%uint64(len(logSink.errs))] = line
		logSink.nErr++
	}
	if line != "" && slog.Default().Enabled(context.Background(), logSink.level) {
		slog.Log(context.Background(), logSink.level, line, "src", "llama.cpp")
	}
}

// errorMark numbers the next error line llama.cpp will log; a caller
// takes it before a call and asks failureReason after a failed one.
func errorMark() uint64 {
	logSink.mu.Lock()
	defer logSink.mu.Unlock()
	return logSink.nErr
}

// failureReason is why llama.cpp says a call failed, from the error lines
// it logged since mark: the text after "error loading model: " when a
// line has it, else the first line; "" when it logged none. Two calls
// failing at the same time may read each other's reason.
func failureReason(mark uint64) string {
	logSink.mu.Lock()
	defer logSink.mu.Unlock()
	if n := uint64(len(logSink.errs)); logSink.nErr-mark > n {
		mark = logSink.nErr - n
	}
	first := ""
	for i := mark; i < logSink.nErr; i++ {
		line := logSink.errs[i%uint64(len(logSink.errs))]
		if _, why, ok := strings.Cut(line, "error loading model: "); ok {
			return why
		}
		if first == "" {
			first = line
		}
	}
	return first
}
