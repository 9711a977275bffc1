package engine

import (
	"errors"
	"strings"
	"testing"
)

func TestALoadFailureSaysWhatLlamaCppLogged(t *testing.T) {
	mark := errorMark()
	logFragment(ggmlLogInfo, "llama_model_loader: loaded meta data\n")
	logFragment(ggmlLogError, "llama_model_load: error loading model: ")
	logFragment(ggmlLogCont, "mmap failed: Cannot allocate memory\n")
	logFragment(ggmlLogError, "llama_model_load_from_file_impl: failed to load model\n")
	err := loadFailure("load model m.gguf (llama)", mark, ErrUnsupported)
	if !errors.Is(err, ErrOutOfMemory) || errors.Is(err, ErrUnsupported) {
		t.Fatalf("%v: want ErrOutOfMemory", err)
	}
	if want := "load model m.gguf (llama): out of memory: llama.cpp: mmap failed: Cannot allocate memory"; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}

	mark = errorMark()
	logFragment(ggmlLogError, "llama_model_load: error loading model: unknown model architecture: 'mamba9'\n")
	if err := loadFailure("load model", mark, ErrUnsupported); errors.Is(err, ErrOutOfMemory) || !strings.HasSuffix(err.Error(), "unknown model architecture: 'mamba9'") {
		t.Fatalf("got %v", err)
	}

	// Nothing logged since the mark: the fallback; errors logged before the
	// mark are not this call's.
	if err := loadFailure("load model", errorMark(), ErrUnsupported); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("got %v, want the fallback", err)
	}

	// More errors than are kept: the oldest kept one with the marker wins.
	mark = errorMark()
	logFragment(ggmlLogError, "x: error loading model: lost\n")
	for range 10 {
		logFragment(ggmlLogError, "noise\n")
	}
	if got := failureReason(mark); got != "noise" {
		t.Fatalf("got %q after the ring wrapped", got)
	}
}
