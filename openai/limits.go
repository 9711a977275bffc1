package openai

import (
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/llmux/llmux/llm"
)

// Limits bound what a request may ask for. They live in one place so every
// check happens before any work is done: llama.cpp treats denial of
// service as out of scope, so nothing unbounded may reach an engine.
type Limits struct {
	MaxN           int // choices per request
	MaxTokens      int // largest max_tokens accepted, and the default when a request names none
	MaxStop        int // stop strings
	MaxStopLength  int // bytes per stop string
	MaxLogitBias   int // logit_bias entries
	MaxMessages    int // chat messages
	MaxPrompts     int // prompts in one completions request; inputs in one embeddings request
	MaxTopLogprobs int
	MaxTools       int
	// MaxJSONDepth bounds the nesting of arrays and objects in a request
	// body, checked on the raw bytes before decoding.
	MaxJSONDepth int
	// MaxPromptBytes bounds the text a request asks to tokenize: all chat
	// messages (and tool descriptions) together, or all prompts together.
	MaxPromptBytes int
	// JSON schemas (response_format.json_schema, tool parameters) are
	// compiled to grammars behind the model boundary; these bounds keep
	// that compilation small and quick.
	MaxSchemaBytes  int // response_format's schema; all tools' parameters together
	MaxSchemaDepth  int // nesting of objects and arrays in one schema
	MaxSchemaNodes  int // objects, arrays and values in one schema
	MaxSchemaRepeat int // minItems, maxItems, minLength, maxLength, min/maxProperties, and {m,n} in patterns
	MaxPatternBytes int // one "pattern" or "patternProperties" key
}

// DefaultLimits are the server's defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxN: 8, MaxTokens: 32768, MaxStop: 16, MaxStopLength: 256, MaxLogitBias: 1024,
		MaxMessages: 1024, MaxPrompts: 64, MaxTopLogprobs: 20, MaxTools: 128,
		MaxJSONDepth: 64, MaxPromptBytes: 2 << 20,
		MaxSchemaBytes: 64 << 10, MaxSchemaDepth: 32, MaxSchemaNodes: 4096, MaxSchemaRepeat: 1024, MaxPatternBytes: 1024,
	}
}

// CheckJSONDepth scans a JSON text and fails when arrays and objects nest
// deeper than max. It runs on the raw bytes before any decoding, in
// constant memory, so a body of a million '[' costs one pass and no
// recursion. It does not validate the JSON otherwise.
func CheckJSONDepth(b []byte, max int) *Error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > max {
				return Invalid("", "the request nests JSON arrays and objects deeper than %d levels", max)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

// checkNumber rejects NaN and infinities and values outside [lo, hi].
func checkNumber(param string, v, lo, hi float64) *Error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || v > hi {
		return Invalid(param, "%s must be between %g and %g, got %g", param, lo, hi, v)
	}
	return nil
}

// CheckTokens checks that token ids lie in the model's vocabulary (its
// size crosses the model boundary as data, in ModelInfo).
func CheckTokens(param string, toks []int32, vocab int) *Error {
	for _, t := range toks {
		if t < 0 || int(t) >= vocab {
			return Invalid(param, "token id %d is out of range [0, %d)", t, vocab)
		}
	}
	return nil
}

// repeatKeywords are the schema keywords that become repetitions in a
// grammar: llama.cpp expands x{m,n} into copies of x, so their size is
// the grammar's size.
var repeatKeywords = []string{"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minContains", "maxContains"}

// checkSchema bounds a JSON schema before it crosses the model boundary to
// be compiled: it must be an object, nest at most MaxSchemaDepth levels,
// hold at most MaxSchemaNodes values, and ask for no repetition or
// pattern beyond MaxSchemaRepeat and MaxPatternBytes. Together these bound
// the grammar's size and the time to build it, so a hostile schema gets a
// 400 at once instead of occupying (or aborting) the engine.
func checkSchema(param string, raw json.RawMessage, l Limits) *Error {
	if e := CheckJSONDepth(raw, l.MaxSchemaDepth); e != nil {
		return Invalid(param, "the schema nests deeper than %d levels", l.MaxSchemaDepth)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return Invalid(param, "the schema is not valid JSON")
	}
	if _, ok := v.(map[string]any); !ok {
		return Invalid(param, "the schema must be a JSON object")
	}
	nodes := 0
	var walk func(v any) *Error
	walk = func(v any) *Error {
		nodes++
		if nodes > l.MaxSchemaNodes {
			return Invalid(param, "the schema has more than %d values", l.MaxSchemaNodes)
		}
		switch x := v.(type) {
		case []any:
			for _, y := range x {
				if e := walk(y); e != nil {
					return e
				}
			}
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys) // the same schema always fails on the same keyword
			for _, k := range keys {
				if e := checkSchemaKeyword(param, k, x[k], l); e != nil {
					return e
				}
				if e := walk(x[k]); e != nil {
					return e
				}
			}
		}
		return nil
	}
	return walk(v)
}

func checkSchemaKeyword(param, k string, v any, l Limits) *Error {
	switch k {
	case "pattern":
		s, ok := v.(string)
		if !ok {
			return nil // a property named "pattern", or a bad schema the compiler reports
		}
		return checkPattern(param, s, l)
	case "patternProperties":
		if m, ok := v.(map[string]any); ok {
			for p := range m {
				if e := checkPattern(param, p, l); e != nil {
					return e
				}
			}
		}
		return nil
	}
	for _, r := range repeatKeywords {
		if k != r {
			continue
		}
		n, ok := v.(float64)
		if !ok {
			return nil // a property of that name
		}
		if math.IsNaN(n) || n < 0 || n > float64(l.MaxSchemaRepeat) {
			return Invalid(param, "the schema's %s is %g; at most %d is allowed", k, n, l.MaxSchemaRepeat)
		}
	}
	return nil
}

// checkPattern bounds a regular expression's length and the counts of its
// {m}, {m,} and {m,n} quantifiers.
func checkPattern(param, p string, l Limits) *Error {
	if len(p) > l.MaxPatternBytes {
		return Invalid(param, "a schema pattern is %d bytes long; at most %d are allowed", len(p), l.MaxPatternBytes)
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' {
			i++
			continue
		}
		if p[i] != '{' {
			continue
		}
		end := strings.IndexByte(p[i:], '}')
		if end < 0 {
			break
		}
		for _, part := range strings.Split(p[i+1:i+end], ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			n, err := strconv.Atoi(part)
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				n = math.MaxInt
			} else if err != nil {
				break // not a quantifier: a literal brace
			}
			if n > l.MaxSchemaRepeat {
				return Invalid(param, "a schema pattern repeats %d times; at most %d is allowed", n, l.MaxSchemaRepeat)
			}
		}
		i += end
	}
	return nil
}

// CheckPromptBytes fails when the texts of a request together exceed
// MaxPromptBytes: they are tokenized behind the model boundary.
func CheckPromptBytes(param string, total int, l Limits) *Error {
	if total > l.MaxPromptBytes {
		return Invalid(param, "the %s text is %d bytes long; at most %d bytes are allowed", param, total, l.MaxPromptBytes)
	}
	return nil
}

// BoundParams applies the limits every generation runs under, whatever it
// asked: one without max_tokens gets MaxTokens. The backend ends a choice
// earlier when its context is full (finish "length"); it never shifts the
// context to go on, so a request cannot turn into an endless generation.
func (l Limits) BoundParams(p *llm.Params) {
	if l.MaxTokens > 0 && (p.MaxTokens <= 0 || p.MaxTokens > l.MaxTokens) {
		p.MaxTokens = l.MaxTokens
	}
}

// CheckSchema bounds a JSON schema from another API's request (Anthropic
// tools, Responses text formats) as this package bounds its own.
func CheckSchema(param string, raw json.RawMessage, l Limits) *Error {
	return checkSchema(param, raw, l)
}
