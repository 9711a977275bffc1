// Package chattest gives tests the chat templates of the pinned ollama
// module, read from the module's own files at test time (never copied into
// this repository): the Jinja templates of its index, which GGUF files
// carry as tokenizer.chat_template, and the Go templates ollama renders
// them with.
package chattest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error
)

// ModuleDir is the pinned github.com/ollama/ollama module's directory in
// the module cache.
func ModuleDir(tb testing.TB) string {
	tb.Helper()
	dirOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ollama/ollama").Output()
		if err != nil {
			dirErr = err
			return
		}
		dir = strings.TrimSpace(string(out))
	})
	if dirErr != nil || dir == "" {
		tb.Fatalf("cannot find the ollama module's directory: %v", dirErr)
	}
	return dir
}

// Jinja returns the Jinja chat template that the ollama module's template
// index lists under name (the first entry of that name).
func Jinja(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(ModuleDir(tb), "template", "index.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var index []struct {
		Template string `json:"template"`
		Name     string `json:"name"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		tb.Fatal(err)
	}
	for _, e := range index {
		if e.Name == name {
			return e.Template
		}
	}
	tb.Fatalf("the ollama template index has no %q", name)
	return ""
}

// GoTemplate returns the ollama module's Go template of that name.
func GoTemplate(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(ModuleDir(tb), "template", name+".gotmpl"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Qwen3Jinja is a Jinja template with Qwen3's markers (the family table
// recognizes Qwen3's thinking variant by "<think>" in the template); the
// family renderer, not this text, renders the prompt.
const Qwen3Jinja = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
