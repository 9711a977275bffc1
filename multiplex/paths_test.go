package multiplex

import (
	"path/filepath"
	"testing"
)

func TestWithin(t *testing.T) {
	base := realDir(t, t.TempDir())
	root := filepath.Join(base, "a", "b")
	inside := writeFile(t, filepath.Join(root, "in.gguf"), "x")
	writeFile(t, filepath.Join(root, "sub", "deep.gguf"), "x")
	outside := writeFile(t, filepath.Join(base, "a", "out.gguf"), "x")
	prefix := writeFile(t, filepath.Join(base, "a", "bc", "trick.gguf"), "x")
	symlink(t, outside, filepath.Join(root, "escape.gguf"))
	symlink(t, inside, filepath.Join(root, "alias.gguf"))
	symlink(t, root, filepath.Join(base, "rootlink"))

	tests := []struct {
		name, root, path string
		want             string // "" means an error is wanted
	}{
		{"relative file inside", root, "in.gguf", inside},
		{"relative file in a subdirectory", root, "sub/deep.gguf", filepath.Join(root, "sub", "deep.gguf")},
		{"absolute file inside", root, inside, inside},
		{"traversal with ..", root, "../out.gguf", ""},
		{"traversal that comes back in", root, "sub/../in.gguf", inside},
		{"absolute path elsewhere", root, outside, ""},
		{"symlink escaping root", root, "escape.gguf", ""},
		{"symlink inside root", root, "alias.gguf", inside},
		{"prefix trick /a/bc vs /a/b", root, prefix, ""},
		{"root itself", root, root, ""},
		{"missing file", root, "nope.gguf", ""},
		{"root given through a symlink", filepath.Join(base, "rootlink"), "in.gguf", inside},
		{"missing root", filepath.Join(base, "nope"), "in.gguf", ""},
		{"empty path", root, "", ""},
		{"empty root", "", inside, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Within(tc.root, tc.path)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("Within(%q, %q) = %q, want an error", tc.root, tc.path, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Within(%q, %q) = %q, %v; want %q, nil", tc.root, tc.path, got, err, tc.want)
			}
		})
	}
}
