package multiplex

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// Within resolves root and path with filepath.EvalSymlinks and returns the
// resolved absolute path when it lies strictly inside the resolved root.
// A relative path is taken relative to root. Both must exist. A path that
// resolves to root itself, to a sibling that merely shares a prefix
// (/a/bc against root /a/b), or anywhere outside root, through ".."
// elements or symlinks, is refused with an error.
func Within(root, path string) (string, error) {
	if root == "" {
		return "", errors.New("confine path: empty root directory")
	}
	if path == "" {
		return "", fmt.Errorf("confine path to %q: empty path", root)
	}
	rootAbs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("confine path: root %q: %w", root, err)
	}
	rootReal, err := filepath.EvalSymlinks(rootAbs)
	if err != nil {
		return "", fmt.Errorf("confine path: root %q: %w", root, err)
	}
	p := path
	if !filepath.IsAbs(p) {
		p = filepath.Join(rootReal, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("confine path %q to %q: %w", path, root, err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", fmt.Errorf("confine path %q to %q: %w", path, root, err)
	}
	if !isInside(rootReal, real) {
		return "", fmt.Errorf("path %q resolves to %q, which is not inside %q", path, real, rootReal)
	}
	return real, nil
}

// isInside reports whether the clean absolute path p lies strictly below the
// clean absolute directory root.
func isInside(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return false
	}
	if rel == "." || rel == ".." || filepath.IsAbs(rel) {
		return false
	}
	return !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// absPath matches an absolute file path inside a message.
var absPath = regexp.MustCompile(`/[^\s:"'()]+`)

// redactPaths replaces every absolute path in msg with its last element,
// so that errors shown to clients name files without saying where they
// live.
func redactPaths(msg string) string {
	return absPath.ReplaceAllStringFunc(msg, filepath.Base)
}
