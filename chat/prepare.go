package chat

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/model/renderers"
	"github.com/ollama/ollama/template"

	"github.com/llmux/llmux/llm"
)

// EngineRender renders role/content messages with llama.cpp's template
// heuristics; ok is false when llama.cpp does not recognize the template.
type EngineRender func(msgs []llm.Message) (prompt string, ok bool)

// Plan is one chat request made ready for the engine: its prompt, the
// grammar and stop words its output follows, and what reads the output.
type Plan struct {
	Prompt string
	// Special says the prompt holds control tokens as text (a template's
	// markers), to be tokenized as such.
	Special bool
	// Constraint is the generic tool form's grammar, or nil.
	Constraint *llm.Constraint
	// Stop is the format's own stop words.
	Stop []string

	fm      *Format
	generic bool
	think   bool
	level   string
	tools   []api.Tool
	choice  llm.ToolChoice
	reqTool []llm.Tool
	last    *api.Message
}

// Prepare renders req's messages (and tools, and whether to reason) the
// way the format writes them. Tools are written natively when the format
// has a native syntax and the call is not forced; otherwise (no native
// syntax, tool_format: generic, or tool_choice required or a named
// function) in the generic form, whose grammar guarantees a valid call.
// engine renders for formats that leave it to llama.cpp.
func (fm *Format) Prepare(req *llm.Request, engine EngineRender) (*Plan, *llm.Error) {
	active := len(req.Tools) > 0 && req.ToolChoice.Mode != llm.ToolsNone
	p := &Plan{fm: fm, Stop: fm.Info.Stop, choice: req.ToolChoice, reqTool: req.Tools}
	p.generic = active && (!fm.nativeTools || req.ToolChoice.Forced())
	on, level, set := fm.thinking(req.Think)
	if p.generic || !active && req.Params.Constraint != nil {
		on, level = false, "" // the grammar holds the output from its first token
	}
	p.think, p.level = on, level
	msgs := systemRoles(req.Messages)
	if p.generic {
		msgs = genericMessages(msgs, req.Tools, req.ToolChoice)
		p.Constraint = &llm.Constraint{Kind: llm.JSONSchema, Schema: genericSchema(req.Tools, req.ToolChoice), Param: "tools"}
	} else if !fm.nativeTools {
		msgs = callsAsText(msgs)
	}
	if !fm.Native() {
		if fm.kind == kindEngine && engine != nil {
			if text, ok := engine(msgs); ok {
				p.Prompt, p.Special = text, true
				return p, nil
			}
		}
		p.Prompt = joined(msgs)
		return p, nil
	}
	am, err := apiMessages(msgs)
	if err != nil {
		return nil, err
	}
	if active && !p.generic {
		if p.tools, err = apiTools(req.Tools); err != nil {
			return nil, err
		}
	}
	if n := len(am); n > 0 && am[n-1].Role == "assistant" {
		p.last = &am[n-1]
	}
	var b strings.Builder
	switch fm.kind {
	case kindTemplate:
		e := fm.tmpl.Execute(&b, template.Values{Messages: am, Tools: p.tools, Think: on, ThinkLevel: level, IsThinkSet: set})
		if e != nil {
			return nil, llm.Errorf(llm.CodeInvalid, "messages", "the chat template %s could not render the messages: %v", fm.Info.Template, e)
		}
		p.Prompt = b.String()
	case kindRenderer:
		out, e := renderers.RenderWithRenderer(fm.renderer, am, p.tools, fm.thinkValue(on, level))
		if e != nil {
			return nil, llm.Errorf(llm.CodeInvalid, "messages", "the %s renderer could not render the messages: %v", fm.renderer, e)
		}
		p.Prompt = out
		if !on && fm.thinks && fm.offSuffix != "" && p.last == nil {
			p.Prompt += fm.offSuffix
		}
	}
	p.Special = true
	return p, nil
}

// thinking resolves a request's Think against what the format can do:
// whether to reason, at which level, and whether the request said so.
// Reasoning is on by default where the format can reason (as ollama does
// for thinking-capable models).
func (fm *Format) thinking(t llm.Think) (on bool, level string, set bool) {
	if !fm.thinks {
		return false, "", false
	}
	switch t {
	case llm.ThinkOff:
		return false, "", true
	case llm.ThinkOn:
		return true, "", true
	case llm.ThinkLow, llm.ThinkMedium, llm.ThinkHigh:
		return true, string(t), true
	}
	return true, "", false
}

// thinkValue is the think argument of renderers and parsers (nil when
// the format cannot reason).
func (fm *Format) thinkValue(on bool, level string) *api.ThinkValue {
	if !fm.thinks {
		return nil
	}
	if level != "" {
		return &api.ThinkValue{Value: level}
	}
	return &api.ThinkValue{Value: on}
}

// systemRoles renames OpenAI's "developer" role to "system", the role
// templates know.
func systemRoles(msgs []llm.Message) []llm.Message {
	out := make([]llm.Message, len(msgs))
	for i, m := range msgs {
		if m.Role == "developer" {
			m.Role = "system"
		}
		out[i] = m
	}
	return out
}

// callsAsText writes earlier tool calls as generic-form JSON content, for
// formats that render only roles and contents.
func callsAsText(msgs []llm.Message) []llm.Message {
	out := make([]llm.Message, len(msgs))
	for i, m := range msgs {
		if len(m.ToolCalls) > 0 {
			m.Content, m.ToolCalls = renderCalls(m.ToolCalls), nil
		}
		out[i] = m
	}
	return out
}

// joined is the prompt of a model with no template: the message contents
// joined by blank lines, with no role markers (so a plain language model
// continues the user's text).
func joined(msgs []llm.Message) string {
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Content != "" {
			parts = append(parts, m.Content)
		}
	}
	return strings.Join(parts, "\n\n")
}

// apiMessages converts boundary messages to the ollama module's.
func apiMessages(msgs []llm.Message) ([]api.Message, *llm.Error) {
	out := make([]api.Message, len(msgs))
	for i, m := range msgs {
		am := api.Message{Role: m.Role, Content: m.Content, Thinking: m.Reasoning, ToolCallID: m.ToolCallID, ToolName: m.ToolName}
		for j, c := range m.ToolCalls {
			args := api.NewToolCallFunctionArguments()
			if c.Arguments != "" {
				if err := json.Unmarshal([]byte(c.Arguments), &args); err != nil {
					return nil, llm.Errorf(llm.CodeInvalid, "messages", "message %d's tool call %d has arguments that are not a JSON object: %v", i, j, err)
				}
			}
			am.ToolCalls = append(am.ToolCalls, api.ToolCall{ID: c.ID, Function: api.ToolCallFunction{Index: j, Name: c.Name, Arguments: args}})
		}
		out[i] = am
	}
	return out, nil
}

// apiTools converts boundary tools to the ollama module's.
func apiTools(tools []llm.Tool) ([]api.Tool, *llm.Error) {
	out := make([]api.Tool, len(tools))
	for i, t := range tools {
		out[i] = api.Tool{Type: "function", Function: api.ToolFunction{Name: t.Name, Description: t.Description}}
		params := bytes.TrimSpace(t.Parameters)
		if len(params) == 0 {
			params = []byte(`{"type":"object"}`)
		}
		if err := json.Unmarshal(params, &out[i].Function.Parameters); err != nil {
			return nil, llm.Errorf(llm.CodeInvalid, "tools", "tool %q: the parameters schema cannot be rendered by the chat template: %v", t.Name, err)
		}
	}
	return out, nil
}
