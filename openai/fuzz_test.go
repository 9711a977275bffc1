package openai

import (
	"encoding/json"
	"testing"
)

// FuzzRequests decodes arbitrary bodies as chat and completions requests
// and runs every check and conversion the server runs before a request
// reaches a model: none may panic, whatever the body.
func FuzzRequests(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"n":2,"logprobs":true,"top_logprobs":3,"stop":["x","y"]}`,
		`{"model":"m","messages":[{"role":"user","content":"w"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}}],"tool_choice":"required"}`,
		`{"model":"m","messages":[{"role":"user","content":"j"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"array","items":{"type":"integer"},"minItems":2}}}}`,
		`{"model":"m","prompt":["a","b"],"logprobs":2,"echo":true,"logit_bias":{"5":-100,"7":3.5}}`,
		`{"model":"m","prompt":[[1,2,3],[4]],"temperature":1e309}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
		`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"ok"}]}`,
	} {
		f.Add([]byte(seed))
	}
	mi := ModelInfo{VocabSize: 512, Context: 2048, Parallel: 4}
	f.Fuzz(func(t *testing.T, body []byte) {
		l := DefaultLimits()
		if CheckJSONDepth(body, 64) != nil {
			return
		}
		var chat ChatRequest
		if json.Unmarshal(body, &chat) == nil && chat.Validate(l, mi) == nil {
			_ = chat.LLMMessages()
			_, _ = chat.LLMTools()
			_ = chat.ThinkMode()
			_ = chat.Params(2, 1)
		}
		var comp CompletionRequest
		if json.Unmarshal(body, &comp) == nil && comp.Validate(l, mi) == nil {
			_ = comp.Sampling.Params(comp.MaxTokens, 0, 1)
		}
	})
}
