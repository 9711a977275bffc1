package openai

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/llmux/llmux/llm"
)

// present reports whether an optional raw field was sent with a value.
func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// ModelInfo is what validation needs to know of the target model.
type ModelInfo struct {
	VocabSize int
	Context   int
	Parallel  int // the scheduler's slots; n may not exceed it
}

var chatRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

// Validate checks a chat request's own fields.
func (r *ChatRequest) Validate(l Limits, mi ModelInfo) *Error {
	if r.Model == "" {
		return Invalid("model", "you must provide a model parameter")
	}
	if len(r.Messages) == 0 {
		return Invalid("messages", "messages must contain at least one message")
	}
	if len(r.Messages) > l.MaxMessages {
		return Invalid("messages", "at most %d messages are allowed, got %d", l.MaxMessages, len(r.Messages))
	}
	if present(r.ChatTemplate) {
		return Invalid("chat_template", "client-supplied chat templates are not accepted: the model's own template is used")
	}
	if _, e := r.think(); e != nil {
		return e
	}
	size := 0
	for _, t := range r.Tools {
		size += len(t.Function.Description)
	}
	for i, m := range r.Messages {
		size += len(m.Content.Text)
		for _, c := range m.ToolCalls {
			size += len(c.Function.Name) + len(c.Function.Arguments)
		}
		p := "messages[" + strconv.Itoa(i) + "]"
		if !chatRoles[m.Role] {
			return Invalid(p+".role", "unknown role %q: want system, developer, user, assistant or tool", m.Role)
		}
		if m.Content.Null && !(m.Role == "assistant" && len(m.ToolCalls) > 0) {
			return Invalid(p+".content", "message content must not be null")
		}
	}
	if e := CheckPromptBytes("messages", size, l); e != nil {
		return e
	}
	if e := r.validateTools(l); e != nil {
		return e
	}
	if r.MaxCompletionTokens != nil {
		if e := checkMaxTokens("max_completion_tokens", *r.MaxCompletionTokens, l); e != nil {
			return e
		}
	}
	if r.TopLogprobs != nil {
		if !r.Logprobs {
			return Invalid("top_logprobs", "top_logprobs requires logprobs to be true")
		}
		if *r.TopLogprobs < 0 || *r.TopLogprobs > l.MaxTopLogprobs {
			return Invalid("top_logprobs", "top_logprobs must be between 0 and %d, got %d", l.MaxTopLogprobs, *r.TopLogprobs)
		}
	}
	return r.Sampling.validate(l, mi)
}

// Validate checks a completions request's own fields.
func (r *CompletionRequest) Validate(l Limits, mi ModelInfo) *Error {
	if r.Model == "" {
		return Invalid("model", "you must provide a model parameter")
	}
	if !r.Prompt.Set || r.Prompt.Count() == 0 {
		return Invalid("prompt", "prompt must be a non-empty string, array of strings, or array of token ids")
	}
	if r.Prompt.Count() > l.MaxPrompts {
		return Invalid("prompt", "at most %d prompts per request, got %d", l.MaxPrompts, r.Prompt.Count())
	}
	size := 0
	for _, t := range r.Prompt.Texts {
		size += len(t)
	}
	if e := CheckPromptBytes("prompt", size, l); e != nil {
		return e
	}
	for i, toks := range r.Prompt.Tokens {
		if len(toks) == 0 {
			return Invalid("prompt", "prompt %d is an empty token array", i)
		}
		if mi.Context > 0 && len(toks) >= mi.Context {
			return InvalidCode("prompt", "context_length_exceeded", "prompt %d is %d tokens long, but this model's context holds %d", i, len(toks), mi.Context)
		}
		if e := CheckTokens("prompt", toks, mi.VocabSize); e != nil {
			return e
		}
	}
	if r.Logprobs != nil && (*r.Logprobs < 0 || *r.Logprobs > l.MaxTopLogprobs) {
		return Invalid("logprobs", "logprobs must be between 0 and %d, got %d", l.MaxTopLogprobs, *r.Logprobs)
	}
	if r.Suffix != "" {
		return Invalid("suffix", "suffix is not supported")
	}
	return r.Sampling.validate(l, mi)
}

func checkMaxTokens(param string, v int, l Limits) *Error {
	if v < 1 || v > l.MaxTokens {
		return Invalid(param, "%s must be between 1 and %d, got %d", param, l.MaxTokens, v)
	}
	return nil
}

func checkRange(param string, v *float64, lo, hi float64) *Error {
	if v == nil {
		return nil
	}
	return checkNumber(param, *v, lo, hi)
}

func (s *Sampling) validate(l Limits, mi ModelInfo) *Error {
	if s.MaxTokens != nil {
		if e := checkMaxTokens("max_tokens", *s.MaxTokens, l); e != nil {
			return e
		}
	}
	if s.N != nil && (*s.N < 1 || *s.N > min(l.MaxN, max(mi.Parallel, 1))) {
		return Invalid("n", "n must be between 1 and %d, got %d", min(l.MaxN, max(mi.Parallel, 1)), *s.N)
	}
	for _, c := range []struct {
		p      string
		v      *float64
		lo, hi float64
	}{
		{"temperature", s.Temperature, 0, 2},
		{"top_p", s.TopP, 0, 1},
		{"presence_penalty", s.PresencePenalty, -2, 2},
		{"frequency_penalty", s.FrequencyPenalty, -2, 2},
		{"min_p", s.MinP, 0, 1},
		{"repeat_penalty", s.RepeatPenalty, 0, 10},
	} {
		if e := checkRange(c.p, c.v, c.lo, c.hi); e != nil {
			return e
		}
	}
	if s.TopP != nil && *s.TopP == 0 {
		return Invalid("top_p", "top_p must be greater than 0")
	}
	if s.RepeatPenalty != nil && *s.RepeatPenalty == 0 {
		return Invalid("repeat_penalty", "repeat_penalty must be greater than 0")
	}
	if s.TopK != nil && *s.TopK < -1 {
		return Invalid("top_k", "top_k must be -1 (off), 0 (off) or positive, got %d", *s.TopK)
	}
	if len(s.Stop) > l.MaxStop {
		return Invalid("stop", "at most %d stop sequences are allowed, got %d", l.MaxStop, len(s.Stop))
	}
	for _, st := range s.Stop {
		if st == "" || len(st) > l.MaxStopLength {
			return Invalid("stop", "stop sequences must be 1 to %d bytes long", l.MaxStopLength)
		}
	}
	if len(s.LogitBias) > l.MaxLogitBias {
		return Invalid("logit_bias", "at most %d logit_bias entries are allowed, got %d", l.MaxLogitBias, len(s.LogitBias))
	}
	for k, v := range s.LogitBias {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 || id >= mi.VocabSize {
			return Invalid("logit_bias", "logit_bias key %q is not a token id in [0, %d)", k, mi.VocabSize)
		}
		if e := checkNumber("logit_bias", v, -100, 100); e != nil {
			return Invalid("logit_bias", "logit_bias values must be between -100 and 100, got %g", v)
		}
	}
	if s.StreamOptions != nil && !s.Stream {
		return Invalid("stream_options", "stream_options requires stream to be true")
	}
	if rf := s.ResponseFormat; rf != nil {
		switch rf.Type {
		case "text", "json_object":
		case "json_schema":
			if rf.JSONSchema == nil || len(rf.JSONSchema.Schema) == 0 {
				return Invalid("response_format.json_schema", "json_schema.schema is required")
			}
			if len(rf.JSONSchema.Schema) > l.MaxSchemaBytes {
				return Invalid("response_format.json_schema", "json_schema.schema exceeds %d bytes", l.MaxSchemaBytes)
			}
			if e := checkSchema("response_format.json_schema", rf.JSONSchema.Schema, l); e != nil {
				return e
			}
		default:
			return Invalid("response_format.type", "response_format.type must be text, json_object or json_schema, got %q", rf.Type)
		}
	}
	return nil
}

// constraint returns the JSON form response_format asks for, or nil.
func (s *Sampling) constraint() *llm.Constraint {
	rf := s.ResponseFormat
	if rf == nil {
		return nil
	}
	switch rf.Type {
	case "json_object":
		return &llm.Constraint{Kind: llm.JSONObject, Param: "response_format"}
	case "json_schema":
		return &llm.Constraint{Kind: llm.JSONSchema, Schema: rf.JSONSchema.Schema, Param: "response_format.json_schema"}
	}
	return nil
}

// Params converts a validated chat request's sampling fields:
// max_completion_tokens wins over max_tokens, and active tools constrain
// the answer to their JSON form. topLogprobs < 0 means no
// log-probabilities.
func (r *ChatRequest) Params(topLogprobs int, seed uint32) llm.Params {
	maxTokens := r.MaxTokens
	if r.MaxCompletionTokens != nil {
		maxTokens = r.MaxCompletionTokens
	}
	return r.Sampling.Params(maxTokens, topLogprobs, seed)
}

// Think is the request's reasoning switch, from think, reasoning_effort
// or chat_template_kwargs.enable_thinking (validated).
func (r *ChatRequest) ThinkMode() llm.Think {
	t, _ := r.think()
	return t
}

func (r *ChatRequest) think() (llm.Think, *Error) {
	var t llm.Think
	if present(r.ThinkValue) {
		var b bool
		var level string
		switch {
		case json.Unmarshal(r.ThinkValue, &b) == nil:
			t = llm.ThinkOff
			if b {
				t = llm.ThinkOn
			}
		case json.Unmarshal(r.ThinkValue, &level) == nil && (level == "low" || level == "medium" || level == "high"):
			t = llm.Think(level)
		default:
			return "", Invalid("think", `think must be true, false, "low", "medium" or "high"`)
		}
	}
	switch r.ReasoningEffort {
	case "":
	case "none", "minimal":
		t = llm.ThinkOff
	case "low", "medium", "high":
		t = llm.Think(r.ReasoningEffort)
	default:
		return "", Invalid("reasoning_effort", `reasoning_effort must be "none", "minimal", "low", "medium" or "high", got %q`, r.ReasoningEffort)
	}
	if present(r.ChatTemplateKwargs) {
		var kw map[string]json.RawMessage
		if err := json.Unmarshal(r.ChatTemplateKwargs, &kw); err != nil {
			return "", Invalid("chat_template_kwargs", "chat_template_kwargs must be an object")
		}
		for k, v := range kw {
			var b bool
			if k != "enable_thinking" || json.Unmarshal(v, &b) != nil {
				return "", Invalid("chat_template_kwargs", `chat_template_kwargs takes only "enable_thinking" (true or false); the model's own template is used`)
			}
			t = llm.ThinkOff
			if b {
				t = llm.ThinkOn
			}
		}
	}
	return t, nil
}

// Params converts the validated fields. maxTokens is the max_tokens in
// effect (nil: until the context is full); topLogprobs < 0 means no
// log-probabilities.
func (s *Sampling) Params(maxTokens *int, topLogprobs int, seed uint32) llm.Params {
	p := llm.Params{Temperature: 1, Seed: seed, Constraint: s.constraint(), Stop: s.Stop, IgnoreEOS: s.IgnoreEOS, Priority: s.Priority, N: 1}
	if s.Temperature != nil {
		p.Temperature = float32(*s.Temperature)
	}
	if s.TopP != nil {
		p.TopP = float32(*s.TopP)
	}
	if s.TopK != nil && *s.TopK > 0 {
		p.TopK = *s.TopK
	}
	if s.MinP != nil {
		p.MinP = float32(*s.MinP)
	}
	if s.RepeatPenalty != nil {
		p.RepeatPenalty = float32(*s.RepeatPenalty)
	}
	if s.PresencePenalty != nil {
		p.PresencePenalty = float32(*s.PresencePenalty)
	}
	if s.FrequencyPenalty != nil {
		p.FrequencyPenalty = float32(*s.FrequencyPenalty)
	}
	for k, v := range s.LogitBias {
		id, _ := strconv.Atoi(k)
		// OpenAI: -100 bans the token.
		p.LogitBias = append(p.LogitBias, llm.Bias{Token: int32(id), Bias: float32(v), Ban: v <= -100})
	}
	slices.SortFunc(p.LogitBias, func(a, b llm.Bias) int { return int(a.Token) - int(b.Token) })
	if s.N != nil {
		p.N = *s.N
	}
	if maxTokens != nil {
		p.MaxTokens = *maxTokens
	}
	if topLogprobs >= 0 {
		p.Logprobs, p.TopLogprobs = true, topLogprobs
	}
	return p
}

// ApplyDefaults fills the sampling fields the request left unset from a
// model's own defaults (its sampling: settings); what the request set
// wins.
func (s *Sampling) ApplyDefaults(d *llm.SamplingDefaults) {
	if d == nil {
		return
	}
	fill := func(dst **float64, src *float64) {
		if *dst == nil && src != nil {
			v := *src
			*dst = &v
		}
	}
	fill(&s.Temperature, d.Temperature)
	fill(&s.TopP, d.TopP)
	fill(&s.MinP, d.MinP)
	if s.TopK == nil && d.TopK != nil {
		v := *d.TopK
		s.TopK = &v
	}
	if s.MaxTokens == nil && d.MaxTokens != nil {
		v := *d.MaxTokens
		s.MaxTokens = &v
	}
}

// ApplyDefaults fills unset sampling fields from a model's defaults;
// max_completion_tokens, when set, stands for max_tokens.
func (r *ChatRequest) ApplyDefaults(d *llm.SamplingDefaults) {
	if d != nil && r.MaxCompletionTokens != nil && d.MaxTokens != nil {
		c := *d
		c.MaxTokens = nil
		d = &c
	}
	r.Sampling.ApplyDefaults(d)
}
