package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestPrintBackends: llmux version lists the CPU backend that is linked in
// and says what NVML found (on a machine without a driver: none, and why).
func TestPrintBackends(t *testing.T) {
	var out bytes.Buffer
	printBackends(&out)
	s := out.String()
	if !strings.Contains(s, "ggml backends: CPU") || !strings.Contains(s, "gpus: ") {
		t.Errorf("printBackends wrote:\n%s\nwant the CPU backend and a gpus line", s)
	}
	if strings.Contains(s, "gpus: none") && !strings.Contains(s, "NVML: ") {
		t.Errorf("no GPUs and no reason:\n%s", s)
	}
	t.Log("\n" + s)
}
