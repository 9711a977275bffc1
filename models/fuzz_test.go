package models

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzInspect reads arbitrary bytes as a GGUF file: Inspect must return
// an error or an answer, never panic (model files are untrusted input).
func FuzzInspect(f *testing.F) {
	dir := f.TempDir()
	tiny := filepath.Join(dir, "tiny.gguf")
	if err := Synthesize(tiny, Presets["tiny"], nil); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(tiny)
	if err != nil {
		f.Fatal(err)
	}
	// The header and metadata, whole and cut at a few places.
	head := data[:min(len(data), 4096)]
	for _, n := range []int{4, 8, 24, 100, 1000, len(head)} {
		f.Add(head[:min(n, len(head))])
	}
	f.Add([]byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "m.gguf")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = Inspect(p)
	})
}
