package openai

import (
	"testing"

	"github.com/llmux/llmux/llm"
)

// TestApplyDefaultsFillsOnlyWhatTheRequestLeftOut: a model's defaults
// fill unset fields; set ones stay; a chat's max_completion_tokens keeps
// the default max_tokens out.
func TestApplyDefaultsFillsOnlyWhatTheRequestLeftOut(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	i := func(v int) *int { return &v }
	d := &llm.SamplingDefaults{Temperature: f(0.2), TopP: f(0.9), TopK: i(40), MinP: f(0.05), MaxTokens: i(64)}

	var s Sampling
	s.Temperature = f(1.5)
	s.ApplyDefaults(d)
	if *s.Temperature != 1.5 || *s.TopP != 0.9 || *s.TopK != 40 || *s.MinP != 0.05 || *s.MaxTokens != 64 {
		t.Fatalf("completion: %+v", s)
	}
	*d.TopP = 0.1
	if *s.TopP != 0.9 {
		t.Fatal("the request shares memory with the model's defaults")
	}

	var chat ChatRequest
	chat.MaxCompletionTokens = i(8)
	chat.ApplyDefaults(d)
	if chat.MaxTokens != nil || *chat.Temperature != 0.2 {
		t.Fatalf("chat with max_completion_tokens: max_tokens %v, temperature %v", chat.MaxTokens, *chat.Temperature)
	}
	var none Sampling
	none.ApplyDefaults(nil)
	if none.Temperature != nil {
		t.Fatal("nil defaults changed the request")
	}
}
