package scheduler

import (
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain keeps llama.cpp's warnings (routed through slog) out of test and
// benchmark output (tests report through t.Log), and fails the package if a
// goroutine outlives its tests.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	goleak.VerifyTestMain(m)
}
