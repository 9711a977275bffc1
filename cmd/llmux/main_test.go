package main

import (
	"log/slog"
	"os"
	"testing"
)

// TestMain keeps llama.cpp's warnings (routed through slog) out of test and
// benchmark output; tests report through t.Log.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	os.Exit(m.Run())
}
