package chat

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/model/parsers"
	"github.com/ollama/ollama/thinking"
	"github.com/ollama/ollama/tools"

	"github.com/llmux/llmux/llm"
)

// Parsed is what a piece of a choice's output turned out to be.
type Parsed struct {
	Content   string
	Reasoning string
	Calls     []llm.ToolCall
}

// Empty reports whether p carries nothing.
func (p Parsed) Empty() bool { return p.Content == "" && p.Reasoning == "" && len(p.Calls) == 0 }

// Output reads one choice's generated text as it streams, splitting it
// into content, reasoning and tool calls the way the model's format
// writes them. A format's parser that fails (a malformed native call)
// gives up and passes the rest through as content: a bad call comes back
// as text, never as an error.
type Output struct {
	family  parsers.Parser
	think   *thinking.Parser
	tools   *tools.Parser
	generic *toolStream
	calls   int
	broken  bool
}

// Output returns a reader for one choice of the plan's request.
func (p *Plan) Output() *Output {
	o := &Output{}
	fm := p.fm
	switch {
	case p.generic:
		o.generic = &toolStream{}
	case fm.parser != "":
		name := fm.parser
		if !p.think && fm.offParser != "" {
			name = fm.offParser
		}
		o.family = parsers.ParserForName(name)
		o.family.Init(p.tools, p.last, fm.thinkValue(p.think, p.level))
	case fm.kind == kindTemplate:
		if p.think && fm.thinks {
			o.think = &thinking.Parser{OpeningTag: fm.open, ClosingTag: fm.close}
			// A template that opens the reasoning itself (the prompt
			// ends with the opening tag): the output starts inside it.
			if strings.HasSuffix(strings.TrimSpace(p.Prompt), fm.open) {
				o.think.AddContent(fm.open)
			}
		}
		if len(p.tools) > 0 {
			o.tools = tools.NewParser(fm.tmpl.Template, p.tools)
		}
	}
	return o
}

// Add reads the next piece of text; done says it is the last (the choice
// finished), so whatever is held back comes out.
func (o *Output) Add(text string, done bool) Parsed {
	var p Parsed
	switch {
	case o.broken:
		p.Content = text
	case o.generic != nil:
		p.Content = o.generic.Add(text)
		if done {
			rest, calls := o.generic.Finish()
			p.Content += rest
			p.Calls = o.number(calls)
		}
	case o.family != nil:
		content, reasoning, calls, err := o.family.Add(text, done)
		if err != nil {
			o.broken = true
			return Parsed{Content: text}
		}
		p = Parsed{Content: content, Reasoning: reasoning, Calls: o.number(fromAPI(calls))}
	default:
		if o.think != nil {
			p.Reasoning, text = o.think.AddContent(text)
		}
		if o.tools == nil {
			p.Content = text
			break
		}
		calls, content := o.tools.Add(text)
		p.Content = content
		if done {
			p.Content += o.tools.Content()
		}
		p.Calls = o.number(fromAPI(calls))
	}
	return p
}

// number gives calls their index within the choice and an id where the
// model gave none.
func (o *Output) number(calls []llm.ToolCall) []llm.ToolCall {
	for i := range calls {
		calls[i].Index = o.calls
		o.calls++
		if calls[i].ID == "" {
			calls[i].ID = CallID()
		}
	}
	return calls
}

// CallID is a new tool call id ("call_" and 24 hex digits).
func CallID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "call_" + hex.EncodeToString(b[:])
}

func fromAPI(calls []api.ToolCall) []llm.ToolCall {
	if len(calls) == 0 {
		return nil
	}
	out := make([]llm.ToolCall, len(calls))
	for i, c := range calls {
		args, err := json.Marshal(c.Function.Arguments)
		if err != nil || string(args) == "null" {
			args = []byte("{}")
		}
		out[i] = llm.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: string(args)}
	}
	return out
}
