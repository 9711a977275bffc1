// Package chat decides, once per model, how its chat is written and read —
// the template that renders messages, tools and reasoning into a prompt,
// and the parser that splits the model's output back into content,
// reasoning and tool calls — and applies that decision to each request.
//
// It sits behind the llm boundary (the runner uses it) and is pure Go: the
// templates, family renderers and parsers are the ollama module's own
// (template, tools, thinking, model/renderers, model/parsers); llama.cpp's
// template heuristics are reached through a function the runner passes
// in, so this package does not link the engine. The generic tool form
// (llmux's JSON form under a grammar) is here too, as the fallback for
// models with no native one.
package chat

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/model/parsers"
	"github.com/ollama/ollama/model/renderers"
	"github.com/ollama/ollama/template"
	"github.com/ollama/ollama/thinking"

	"github.com/llmux/llmux/llm"
)

// Facts are what a model's chat format is chosen from: its config, its
// ollama store entry and its GGUF metadata. All plain data, so Choose is a
// pure function.
type Facts struct {
	// Override is the config's chat_template: a family renderer's name,
	// "gguf" (the GGUF's own template, even for a model from ollama's
	// store), "llama.cpp" (llama.cpp's heuristics) or, with
	// OverrideText, a file's path.
	Override string
	// OverrideText is the text of the file Override names, in ollama's
	// template syntax (Go text/template).
	OverrideText string
	// ToolFormat is the config's tool_format: "" (native where the
	// format has one) or "generic".
	ToolFormat string
	// Ollama is the model's entry in ollama's store; nil for a GGUF file.
	Ollama *Ollama
	// Architecture is general.architecture; GGUFTemplate is
	// tokenizer.chat_template (Jinja).
	Architecture string
	GGUFTemplate string
}

// Ollama is what an ollama manifest says about chat.
type Ollama struct {
	// Template is the template layer (Go text/template syntax).
	Template string
	// Renderer and Parser are the config layer's names.
	Renderer, Parser string
	// Stop is the params layer's stop words.
	Stop []string
}

type kind int

const (
	kindNone     kind = iota // message contents joined with blank lines
	kindEngine               // llama.cpp's heuristics over the GGUF template
	kindTemplate             // an ollama (Go) template
	kindRenderer             // a family renderer of the ollama module
)

// Format is one model's chat format: Info is what it shows; the rest is
// how requests are rendered and parsed.
type Format struct {
	Info llm.ChatFormat

	kind     kind
	tmpl     *template.Template
	renderer string
	parser   string
	// thinks says the format can reason; thinkDefault whether it does
	// when the request does not say.
	thinks bool
	// open and close are the reasoning tags (kindTemplate).
	open, close string
	// nativeTools says the format has a native tool-call syntax.
	nativeTools bool
	// offSuffix closes an empty reasoning block after the generation
	// prompt when reasoning is off, and offParser reads the output then
	// (a family whose renderer and parser cannot turn it off by
	// themselves).
	offSuffix, offParser string
}

// family is a model family the ollama module has a renderer and parser
// for, recognized by its GGUF architecture (and, where one architecture
// has several templates, by a marker in the GGUF template).
type family struct {
	arch     []string
	marker   string // the GGUF template contains it; "" matches any
	renderer string
	parser   string
	// offSuffix is what the family's own template writes after the
	// generation prompt when reasoning is off; offParser reads the output
	// then.
	offSuffix, offParser string
}

// families are tried in order; the first match wins.
var families = []family{
	// Qwen3 (hybrid and thinking): Hermes tool calls and <think>, as the
	// Qwen3-VL renderer writes them; with reasoning off, the empty block
	// Qwen3's own template writes for enable_thinking=false.
	{arch: []string{"qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"}, marker: "<think>", renderer: "qwen3-vl-thinking", parser: "qwen3-vl-thinking", offSuffix: "<think>\n\n</think>\n\n", offParser: "qwen3-vl-instruct"},
	{arch: []string{"qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"}, renderer: "qwen3-vl-instruct", parser: "qwen3-vl-instruct"},
	{arch: []string{"qwen35", "qwen35moe"}, renderer: "qwen3.5", parser: "qwen3.5"},
	{arch: []string{"gemma4"}, renderer: "gemma4", parser: "gemma4"},
	{arch: []string{"glm4moe"}, marker: "<tool_call>", renderer: "glm-4.7", parser: "glm-4.7"},
	{arch: []string{"lfm2"}, marker: "<think>", renderer: "lfm2-thinking", parser: "lfm2-thinking"},
	{arch: []string{"lfm2"}, renderer: "lfm2", parser: "lfm2"},
	{arch: []string{"olmo3"}, marker: "<think>", renderer: "olmo3-think", parser: "olmo3-think"},
	{arch: []string{"olmo3"}, renderer: "olmo3", parser: "olmo3"},
	{arch: []string{"nemotron_h", "nemotron_h_moe"}, marker: "<think>", renderer: "nemotron-3-nano", parser: "nemotron-3-nano"},
}

// Families lists the family table (architectures, template marker,
// renderer and parser), for documentation and `models inspect`.
func Families() []struct{ Arch, Marker, Renderer, Parser string } {
	out := make([]struct{ Arch, Marker, Renderer, Parser string }, 0, len(families))
	for _, f := range families {
		out = append(out, struct{ Arch, Marker, Renderer, Parser string }{strings.Join(f.arch, ","), f.marker, f.renderer, f.parser})
	}
	return out
}

// KnownRenderer reports whether name is a family renderer of the ollama
// module.
func KnownRenderer(name string) (known bool) {
	if name == "" {
		return false
	}
	defer func() {
		if recover() != nil {
			known = true // it exists; it only disliked the probe
		}
	}()
	_, err := renderers.RenderWithRenderer(name, []api.Message{{Role: "user", Content: "x"}}, nil, nil)
	return err == nil || !strings.Contains(err.Error(), "unknown renderer")
}

// Choose decides a model's chat format. In order: the config's
// chat_template; the ollama store's config (renderer, parser) and
// template layer, unless the config says "gguf"; a family renderer by
// architecture; the GGUF's Jinja template matched to one of the ollama
// module's templates (template.Named); llama.cpp's heuristics over the
// GGUF template; and, with no template at all, the contents joined.
func Choose(f Facts) (Format, error) {
	fm, err := choose(f)
	if err != nil {
		return Format{}, err
	}
	fm.describe(f.ToolFormat)
	return fm, nil
}

func choose(f Facts) (Format, error) {
	switch {
	case f.OverrideText != "":
		t, err := template.Parse(f.OverrideText)
		if err != nil {
			return Format{}, fmt.Errorf("chat_template %s: %w", f.Override, err)
		}
		return templated(t, f.Override, "config", nil), nil
	case f.Override == "llama.cpp":
		return engineFormat(f, "config"), nil
	case f.Override != "" && f.Override != "gguf":
		if !KnownRenderer(f.Override) {
			return Format{}, fmt.Errorf("chat_template %q is not a renderer the ollama module knows, nor a template file", f.Override)
		}
		return rendered(f.Override, f.Override, "config"), nil
	}
	if o := f.Ollama; o != nil && f.Override != "gguf" {
		if o.Renderer != "" && KnownRenderer(o.Renderer) {
			p := o.Parser
			if p == "" {
				p = o.Renderer
			}
			fm := rendered(o.Renderer, p, "ollama")
			fm.Info.Stop = o.Stop
			return fm, nil
		}
		if o.Template != "" {
			t, err := template.Parse(o.Template)
			if err != nil {
				return Format{}, fmt.Errorf("the ollama template layer: %w", err)
			}
			fm := templated(t, "ollama", "ollama", o.Stop)
			if o.Parser != "" && parsers.ParserForName(o.Parser) != nil {
				fm.parser = o.Parser
				fm.thinks, fm.nativeTools = parserCaps(o.Parser)
			}
			return fm, nil
		}
	}
	for _, fam := range families {
		if slices.Contains(fam.arch, f.Architecture) && strings.Contains(f.GGUFTemplate, fam.marker) {
			fm := rendered(fam.renderer, fam.parser, "family")
			fm.offSuffix, fm.offParser = fam.offSuffix, fam.offParser
			return fm, nil
		}
	}
	if f.GGUFTemplate == "" {
		return Format{Info: llm.ChatFormat{Template: "none", Source: "none"}}, nil
	}
	if n, err := template.Named(f.GGUFTemplate); err == nil {
		if t, err := template.Parse(string(n.Bytes)); err == nil {
			var stop []string
			if n.Parameters != nil {
				stop = n.Parameters.Stop
			}
			return templated(t, n.Name, "gguf", stop), nil
		}
	}
	return engineFormat(f, "llama.cpp"), nil
}

func engineFormat(f Facts, source string) Format {
	return Format{kind: kindEngine, Info: llm.ChatFormat{Template: "llama.cpp", Source: source}}
}

func templated(t *template.Template, name, source string, stop []string) Format {
	fm := Format{kind: kindTemplate, tmpl: t, Info: llm.ChatFormat{Template: name, Source: source, Stop: stop}}
	fm.open, fm.close = thinking.InferTags(t.Template)
	fm.thinks = fm.open != "" && fm.close != ""
	fm.nativeTools = t.Contains(".ToolCalls")
	return fm
}

func rendered(renderer, parser, source string) Format {
	fm := Format{kind: kindRenderer, renderer: renderer, parser: parser, Info: llm.ChatFormat{Template: renderer, Source: source}}
	if parsers.ParserForName(parser) == nil {
		fm.parser = ""
	}
	fm.thinks, fm.nativeTools = parserCaps(fm.parser)
	return fm
}

// parserCaps asks a family parser what it can read.
func parserCaps(name string) (thinks, tools bool) {
	p := parsers.ParserForName(name)
	if p == nil {
		return false, false
	}
	return p.HasThinkingSupport(), p.HasToolSupport()
}

// describe fills Info's tool and reasoning fields.
func (fm *Format) describe(toolFormat string) {
	if toolFormat == "generic" || !fm.nativeTools {
		fm.nativeTools = false
		fm.Info.Tools = "generic"
	} else {
		fm.Info.Tools = "native"
	}
	fm.Info.Parser = fm.parser
	switch {
	case !fm.thinks:
	case fm.parser != "":
		fm.Info.Reasoning = "parser"
	default:
		fm.Info.Reasoning = "tags"
		fm.Info.Tags = []string{fm.open, fm.close}
	}
}

// Native reports whether the format renders messages itself (a template
// or a renderer); otherwise the runner renders them with llama.cpp's
// heuristics or joins their contents.
func (fm *Format) Native() bool { return fm.kind == kindTemplate || fm.kind == kindRenderer }

// Heuristic reports whether messages go through llama.cpp's template
// heuristics.
func (fm *Format) Heuristic() bool { return fm.kind == kindEngine }
