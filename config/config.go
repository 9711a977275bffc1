// Package config reads llmux's config file: the flat server keys (the
// flag names of llmux serve), the models: list and the applications:
// list of app.Spec. It finds every mistake it can without running
// anything and says where each one is (line and column) and how to fix
// it; the same parse serves `llmux serve -f`, its SIGHUP reload and
// `llmux config validate`.
package config

import (
	"flag"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/llmux/llmux/app"
)

// Problem is one mistake in a config file.
type Problem struct {
	File string
	// Line and Column are 1-based; 0 when not known.
	Line, Column int
	// Path is the key's path in the file: "port",
	// "applications[0].deployments[2].calls[1]".
	Path    string
	Message string
	Fix     string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ":%d", p.Column)
		}
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Message)
	if p.Fix != "" {
		b.WriteString(" (fix: " + p.Fix + ")")
	}
	return b.String()
}

// Problems is every mistake of a file, in file order; as an error it
// lists them one a line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sort() {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
}

// File is a parsed config file.
type File[M any] struct {
	Name string
	// Flat are the server keys by flag name ('_' in a key read as '-'),
	// each value as the flag takes it (a list joined with commas).
	Flat map[string]string
	// Keys are the flat keys as the file writes them, by flag name.
	Keys map[string]string
	// Models is the models: list.
	Models []M
	// Applications is the applications: list, resolved (app.Spec.Resolve).
	Applications []app.Spec

	root *yaml.Node
}

// Options says what a file may hold.
type Options[M any] struct {
	// Flags is a fresh flag set of llmux serve: each flat key must name
	// one of its flags and its value must parse as that flag's does (the
	// values are set on it). Nil: the file may hold no flat key.
	Flags *flag.FlagSet
	// NotKeys are flags that cannot be set from the file ("config").
	NotKeys []string
	// Registry holds the deployment and middleware kinds applications
	// may name (nil: none but llm).
	Registry *app.Registry
	// ModelNames, when set, returns the names (and aliases) a models:
	// entry is served under; the models of llm deployments must then be
	// among the file's entries. Nil: that check is left to the server,
	// whose catalog also has --model, --models-dir and ollama's store.
	ModelNames func(M) []string
}

// Keys of the file that are not flags.
const (
	KeyModels       = "models"
	KeyApplications = "applications"
)

// Parse reads a config file named name (for messages) and finds its
// mistakes. The file it returns holds what could be read even when there
// are problems.
func Parse[M any](name string, data []byte, opts Options[M]) (*File[M], Problems) {
	f := &File[M]{Name: name, Flat: map[string]string{}, Keys: map[string]string{}}
	reg := opts.Registry
	if reg == nil {
		reg = app.NewRegistry()
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return f, Problems{syntaxProblem(name, err)}
	}
	if len(doc.Content) == 0 {
		return f, nil // an empty file
	}
	f.root = doc.Content[0]
	if f.root.Kind == yaml.ScalarNode && f.root.ShortTag() == "!!null" {
		return f, nil
	}
	c := &checker{file: name}
	if f.root.Kind != yaml.MappingNode {
		c.at(f.root, "", "the file is not a mapping of keys to values", "write one key: value a line (port: 8080)")
		return f, c.problems
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(f.root.Content); i += 2 {
		k, v := f.root.Content[i], resolveAlias(f.root.Content[i+1])
		name := strings.ReplaceAll(k.Value, "_", "-")
		if prev, dup := seen[name]; dup {
			c.at(k, k.Value, fmt.Sprintf("%s is given twice (also line %d)", k.Value, prev.Line), "keep one of them")
			continue
		}
		seen[name] = k
		switch k.Value {
		case KeyModels:
			// Decoding goes on past values of the wrong type (left
			// zero), so that the rest is checked too.
			if err := v.Decode(&f.Models); c.shape(v, reflect.TypeFor[[]M](), KeyModels) && err != nil {
				c.at(v, KeyModels, err.Error(), "")
			}
			continue
		case KeyApplications:
			var apps []app.Spec
			if err := v.Decode(&apps); c.shape(v, reflect.TypeFor[[]app.Spec](), KeyApplications) && err != nil {
				c.at(v, KeyApplications, err.Error(), "")
			}
			for _, a := range apps {
				f.Applications = append(f.Applications, a.Resolve())
			}
			continue
		}
		flatKey(c, f, k, v, name, opts)
	}
	if len(f.Applications) > 0 {
		for _, p := range app.Check(KeyApplications, f.Applications, reg, nil) {
			if !c.decodedWrong(p.Path) {
				c.atPath(f.root, p.Path, p.Message, p.Fix)
			}
		}
		if opts.ModelNames != nil {
			checkCatalog(c, f, opts.ModelNames)
		}
	}
	c.problems.sort()
	return f, c.problems
}

// flatKey checks and records one flat key: a flag name whose value
// parses as the flag's does.
func flatKey[M any](c *checker, f *File[M], k, v *yaml.Node, name string, opts Options[M]) {
	var fl *flag.Flag
	if opts.Flags != nil && !slices.Contains(opts.NotKeys, name) {
		fl = opts.Flags.Lookup(name)
	}
	if fl == nil {
		msg := fmt.Sprintf("unknown key %q", k.Value)
		fix := "remove it"
		if slices.Contains(opts.NotKeys, name) {
			msg = fmt.Sprintf("%s cannot be set in the config file", k.Value)
		} else if s := nearest(name, append(flagNames(opts), KeyModels, KeyApplications)); s != "" {
			fix = "did you mean " + s + "?"
		}
		c.at(k, k.Value, msg, fix)
		return
	}
	var val string
	switch v.Kind {
	case yaml.ScalarNode:
		if v.ShortTag() != "!!null" {
			val = v.Value
		}
	case yaml.SequenceNode:
		parts := make([]string, 0, len(v.Content))
		for _, x := range v.Content {
			x = resolveAlias(x)
			if x.Kind != yaml.ScalarNode {
				c.at(x, k.Value, "a list of "+k.Value+" holds only plain values", "write each as a string")
				return
			}
			parts = append(parts, x.Value)
		}
		val = strings.Join(parts, ",")
	default:
		c.at(v, k.Value, k.Value+" takes a value, not a mapping", "write "+k.Value+": VALUE")
		return
	}
	if err := fl.Value.Set(val); err != nil {
		msg, fix := flagError(fl, val, err)
		c.at(v, k.Value, msg, fix)
		return
	}
	f.Flat[name] = val
	f.Keys[name] = k.Value
}

// flagError says why a flag refused a value, by the flag's type (the flag
// package's own errors say only "parse error").
func flagError(fl *flag.Flag, val string, err error) (msg, fix string) {
	var kind any
	if g, ok := fl.Value.(flag.Getter); ok {
		kind = g.Get()
	}
	switch kind.(type) {
	case time.Duration:
		return fmt.Sprintf("%q is not a duration", val), "write a Go duration such as 90s, 5m or 1h30m (default " + fl.DefValue + ")"
	case int, int64, uint, uint64:
		return fmt.Sprintf("%q is not a whole number", val), "write a number (default " + fl.DefValue + ")"
	case float64:
		return fmt.Sprintf("%q is not a number", val), "write a number (default " + fl.DefValue + ")"
	case bool:
		return fmt.Sprintf("%q is not true or false", val), "write true or false"
	}
	return err.Error(), ""
}

func flagNames[M any](opts Options[M]) []string {
	var out []string
	if opts.Flags != nil {
		opts.Flags.VisitAll(func(fl *flag.Flag) {
			if !slices.Contains(opts.NotKeys, fl.Name) {
				out = append(out, fl.Name)
			}
		})
	}
	return out
}

// checkCatalog checks that the llm deployments name models of the file's
// models: list.
func checkCatalog[M any](c *checker, f *File[M], names func(M) []string) {
	known := map[string]bool{}
	var all []string
	for _, m := range f.Models {
		for _, n := range names(m) {
			known[n] = true
			all = append(all, n)
		}
	}
	for i, a := range f.Applications {
		for j, d := range a.Deployments {
			if d.Kind != app.KindLLM {
				continue
			}
			for k, m := range d.Models {
				if known[m] {
					continue
				}
				fix := "add it to the models: list"
				if s := nearest(m, all); s != "" {
					fix = "did you mean " + s + "? or add it to the models: list"
				}
				c.atPath(f.root, fmt.Sprintf("%s[%d].deployments[%d].models[%d]", KeyApplications, i, j, k),
					fmt.Sprintf("model %q is not in the models: list (validate sees only that list, not --model, --models-dir or ollama's store)", m), fix)
			}
		}
	}
}

// Locate returns the line and column of the value at path
// ("applications[0].deployments[1].calls[0]", "port"), or of the nearest
// enclosing one written in the file; 0, 0 without a file.
func (f *File[M]) Locate(path string) (line, col int) {
	n := locate(f.root, path)
	if n == nil {
		return 0, 0
	}
	return n.Line, n.Column
}

// Problem returns a problem at path in f.
func (f *File[M]) Problem(path, msg, fix string) Problem {
	line, col := f.Locate(path)
	return Problem{File: f.Name, Line: line, Column: col, Path: path, Message: msg, Fix: fix}
}

var syntaxLine = regexp.MustCompile(`line (\d+)`)

// syntaxProblem places a YAML syntax error at the line it names.
func syntaxProblem(name string, err error) Problem {
	p := Problem{File: name, Message: strings.TrimPrefix(err.Error(), "yaml: "), Fix: "fix the YAML syntax (indent with spaces; quote values holding ': ' or '#')"}
	if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Message = strings.TrimSpace(strings.TrimPrefix(p.Message, m[0]+":"))
	}
	return p
}
