package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/llmux/llmux/app"
)

// checker collects the problems of one file.
type checker struct {
	file     string
	problems Problems
	// typed are the paths of values of the wrong type: decoding leaves
	// them zero, so what holds them is not checked further.
	typed []string
}

// wrongType adds a problem with a value's type at n.
func (c *checker) wrongType(n *yaml.Node, path, msg, fix string) {
	c.typed = append(c.typed, path)
	c.at(n, path, msg, fix)
}

// decodedWrong reports whether a problem at path may come from a value
// of the wrong type, which decoding left zero: it lies at or under that
// value, or, for a name (which others refer to) or a list of
// deployments, in its application.
func (c *checker) decodedWrong(path string) bool {
	under := func(p, q string) bool {
		return p == q || strings.HasPrefix(p, q+".") || strings.HasPrefix(p, q+"[")
	}
	for _, t := range c.typed {
		if under(path, t) {
			return true
		}
		if strings.HasSuffix(t, ".name") || strings.HasSuffix(t, ".deployments") {
			app, _, _ := strings.Cut(t, ".")
			if under(path, app) {
				return true
			}
		}
	}
	return false
}

// at adds a problem at node n.
func (c *checker) at(n *yaml.Node, path, msg, fix string) {
	p := Problem{File: c.file, Path: path, Message: msg, Fix: fix}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	c.problems = append(c.problems, p)
}

// atPath adds a problem at path below root (or the nearest node above it
// that the file writes).
func (c *checker) atPath(root *yaml.Node, path, msg, fix string) {
	c.at(locate(root, path), path, msg, fix)
}

// nouns name the parts of a file in messages.
var nouns = map[reflect.Type]string{
	reflect.TypeFor[app.Spec]():           "an application",
	reflect.TypeFor[app.DeploymentSpec](): "a deployment",
	reflect.TypeFor[app.MiddlewareSpec](): "a middleware entry",
}

func noun(t reflect.Type, path string) string {
	if n, ok := nouns[t]; ok {
		return n
	}
	if i := strings.LastIndex(path, "["); i > 0 {
		path = path[:i]
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		path = path[i+1:]
	}
	return "an entry of " + path
}

// shape checks that node n can be decoded into a value of type t: the
// keys of its mappings are t's yaml keys, its lists are lists, its
// numbers numbers. It reports whether n had no problem, so that decoding
// it gives what the file says.
func (c *checker) shape(n *yaml.Node, t reflect.Type, path string) bool {
	n = resolveAlias(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	before := len(c.problems)
	if t == reflect.TypeFor[time.Duration]() {
		if _, err := time.ParseDuration(n.Value); n.Kind != yaml.ScalarNode || err != nil {
			c.wrongType(n, path, fmt.Sprintf("wants a duration, not %s", describe(n)), "write a number with a unit: 30s, 5m, 1h30m")
		}
		return len(c.problems) == before
	}
	switch t.Kind() {
	case reflect.Interface:
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.wrongType(n, path, fmt.Sprintf("%s is a mapping of keys, not %s", noun(t, path), describe(n)), "write its keys indented below it")
			break
		}
		fields := yamlFields(t)
		names := make([]string, 0, len(fields))
		for k := range fields {
			names = append(names, k)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				fix := "use one of: " + strings.Join(sortedStrings(names), ", ")
				if s := nearest(k.Value, names); s != "" {
					fix = "did you mean " + s + "?"
				}
				c.at(k, join(path, k.Value), fmt.Sprintf("unknown key %q in %s", k.Value, noun(t, path)), fix)
				continue
			}
			c.shape(v, ft, join(path, k.Value))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.wrongType(n, path, fmt.Sprintf("wants a mapping of keys, not %s", describe(n)), "write its keys indented below it")
			break
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.shape(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.wrongType(n, path, fmt.Sprintf("wants a list, not %s", describe(n)), "write each item on its own line starting with '- '")
			break
		}
		for i, x := range n.Content {
			c.shape(x, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			c.wrongType(n, path, fmt.Sprintf("wants a string, not %s", describe(n)), "write a single value")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			c.wrongType(n, path, fmt.Sprintf("wants a whole number, not %s", describe(n)), "write a number without quotes")
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
			c.wrongType(n, path, fmt.Sprintf("wants a number, not %s", describe(n)), "write a number without quotes")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			c.wrongType(n, path, fmt.Sprintf("wants true or false, not %s", describe(n)), "write true or false")
		}
	}
	return len(c.problems) == before
}

// describe names what a node holds, for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!str":
		return strconv.Quote(n.Value)
	case "!!bool":
		return "the boolean " + n.Value
	}
	return n.Value
}

// yamlFields maps a struct's yaml keys to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name) // yaml.v3's default
		}
		out[name] = sf.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// locate finds the node at path below root: keys joined by dots, list
// items as [i] ("applications[0].deployments[2].calls[1]"). When the
// file does not write the whole path it returns the deepest node it does
// write; nil without a root.
func locate(root *yaml.Node, path string) *yaml.Node {
	n := resolveAlias(root)
	if n == nil || path == "" {
		return n
	}
	for _, seg := range strings.Split(path, ".") {
		key, rest, _ := strings.Cut(seg, "[")
		if key != "" {
			v := lookup(n, key)
			if v == nil {
				return n
			}
			n = v
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			i, err := strconv.Atoi(idx)
			if !ok || err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return n
			}
			n = resolveAlias(n.Content[i])
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return n
}

// lookup returns the value of key in mapping n ('-' and '_' alike), or
// nil.
func lookup(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	norm := func(s string) string { return strings.ReplaceAll(s, "_", "-") }
	for i := 0; i+1 < len(n.Content); i += 2 {
		if norm(n.Content[i].Value) == norm(key) {
			return resolveAlias(n.Content[i+1])
		}
	}
	return nil
}
