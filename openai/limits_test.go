package openai

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/llmux/llmux/llm"
)

func TestCheckJSONDepth(t *testing.T) {
	cases := []struct {
		in   string
		max  int
		fail bool
	}{
		{`{"a":[1,{"b":2}]}`, 3, false},
		{`{"a":[1,{"b":2}]}`, 2, true},
		{`{"a":"[[[[[[[[[[[["}`, 1, false},      // brackets in strings do not count
		{`{"a":"\"[[[[[["}`, 1, false},          // nor after an escaped quote
		{`{"a":"\\"}`, 1, false},                // an escaped backslash ends the escape
		{strings.Repeat("[", 100000), 64, true}, // a flood fails fast, no recursion
		{`[[[]]]`, 3, false},
	}
	for _, c := range cases {
		e := CheckJSONDepth([]byte(c.in), c.max)
		if (e != nil) != c.fail {
			t.Errorf("%.40s (max %d): got %v, want fail=%v", c.in, c.max, e, c.fail)
		}
	}
}

func TestCheckSchema(t *testing.T) {
	l := DefaultLimits()
	deep := strings.Repeat(`{"type":"array","items":`, 40) + `{"type":"string"}` + strings.Repeat("}", 40)
	var wide strings.Builder
	wide.WriteString(`{"type":"object","properties":{`)
	for i := range 3000 {
		if i > 0 {
			wide.WriteByte(',')
		}
		wide.WriteString(`"p` + strconv.Itoa(i) + `":{"type":"integer"}`)
	}
	wide.WriteString(`}}`)
	cases := []struct {
		schema string
		fail   string // a word of the error, or "" for valid
	}{
		{`{"type":"object","properties":{"a":{"type":"string","maxLength":20,"pattern":"^[a-z]{1,8}$"}}}`, ""},
		{`{"type":"object","properties":{"minItems":{"type":"integer"},"pattern":{"type":"string"}}}`, ""}, // properties with keyword names
		{`{"type":"string","pattern":"\\{100000\\}"}`, ""},                                                 // escaped braces are literal
		{`{"type":"string","pattern":"a{x}"}`, ""},
		{deep, "deeper"},
		{wide.String(), "values"},
		{`{"type":"array","minItems":100000}`, "minItems"},
		{`{"type":"array","maxItems":1e300}`, "maxItems"},
		{`{"type":"string","maxLength":-1}`, "maxLength"},
		{`{"type":"object","minProperties":5000}`, "minProperties"},
		{`{"type":"string","pattern":"a{1000000}"}`, "repeats"},
		{`{"type":"string","pattern":"a{2,99999999999999999999999}"}`, "repeats"},
		{`{"type":"string","pattern":"` + strings.Repeat("a", 2000) + `"}`, "pattern"},
		{`{"type":"object","patternProperties":{"^x{5000}$":{"type":"string"}}}`, "repeats"},
		{`[1]`, "object"},
	}
	for _, c := range cases {
		e := checkSchema("p", json.RawMessage(c.schema), l)
		switch {
		case c.fail == "" && e != nil:
			t.Errorf("%.60s: unexpected %v", c.schema, e)
		case c.fail != "" && (e == nil || !strings.Contains(e.Message, c.fail) || e.Param == nil || *e.Param != "p"):
			t.Errorf("%.60s: got %+v, want an error about %q", c.schema, e, c.fail)
		}
	}
}

func TestNumbersAndTemplates(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), 2.5} {
		if checkNumber("temperature", v, 0, 2) == nil {
			t.Errorf("%v accepted", v)
		}
	}
	mi := ModelInfo{VocabSize: 100, Context: 64, Parallel: 4}
	l := DefaultLimits()
	var r ChatRequest
	if err := json.Unmarshal([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"chat_template":"{{ 7*7 }}"}`), &r); err != nil {
		t.Fatal(err)
	}
	if e := r.Validate(l, mi); e == nil || *e.Param != "chat_template" {
		t.Fatalf("chat_template: %+v", e)
	}
	r.ChatTemplate = nil
	r.ChatTemplateKwargs = json.RawMessage(`null`)
	if e := r.Validate(l, mi); e != nil {
		t.Fatalf("null chat_template_kwargs: %+v", e)
	}
	l.MaxPromptBytes = 10
	r.Messages[0].Content.Text = strings.Repeat("x", 11)
	if e := r.Validate(l, mi); e == nil || *e.Param != "messages" {
		t.Fatalf("prompt bytes: %+v", e)
	}
	var cr CompletionRequest
	json.Unmarshal([]byte(`{"model":"m","prompt":[`+strings.TrimSuffix(strings.Repeat("1,", 64), ",")+`]}`), &cr)
	if e := cr.Validate(DefaultLimits(), mi); e == nil || e.Code == nil || *e.Code != "context_length_exceeded" {
		t.Fatalf("token prompt over the context: %+v", e)
	}
}

func TestBoundParams(t *testing.T) {
	l := DefaultLimits()
	for _, c := range []struct{ in, want int }{{0, l.MaxTokens}, {10, 10}, {l.MaxTokens + 1, l.MaxTokens}} {
		p := llm.Params{MaxTokens: c.in}
		l.BoundParams(&p)
		if p.MaxTokens != c.want {
			t.Errorf("max_tokens %d: got %d, want %d", c.in, p.MaxTokens, c.want)
		}
	}
}
