package server

import (
	"fmt"
	"testing"
)

// TestExtremeSamplingValues sends valid but extreme sampling settings; each
// must end in a response or an OpenAI error, never a crash.
func TestExtremeSamplingValues(t *testing.T) {
	ts := tinyServer(t, Options{})
	url := ts.URL + "/v1/completions"
	bodies := []string{
		`"temperature":1e-30`, `"temperature":2,"top_p":1e-9`, `"min_p":1`, `"min_p":0.999999,"temperature":2`,
		`"top_k":1000000000`, `"top_k":1,"temperature":2`, `"repeat_penalty":10,"presence_penalty":2,"frequency_penalty":2`,
		`"repeat_penalty":1e-6`, `"seed":-1`, `"seed":9223372036854775807`, `"logit_bias":{"5":100,"6":100}`,
		`"response_format":{"type":"json_object"},"ignore_eos":true`, `"n":4,"temperature":1e-20`,
		`"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p"]`,
	}
	for _, extra := range bodies {
		body := fmt.Sprintf(`{"model":%q,"prompt":"the cat","max_tokens":8,%s}`, ts.model, extra)
		status, _, e := post(t, url, "application/json", []byte(body), nil)
		if status != 200 && (status != 400 || e == nil) {
			t.Errorf("%s: status %d, %+v", extra, status, e)
		}
	}
}

func TestHostileSchemas(t *testing.T) {
	ts := tinyServer(t, Options{})
	url := ts.URL + "/v1/chat/completions"
	schemas := []string{
		`{"type":"string","pattern":"(((("}`,
		`{"$ref":"#/definitions/missing"}`,
		`{"type":"array","items":{"type":"integer"},"minItems":100000}`,
		`{"type":"string","minLength":100000}`,
		`{"type":"object","properties":{"a":{"$ref":"#"}}}`,
		`{"type":"integer","minimum":5,"maximum":1}`,
		`{"enum":[]}`,
		`{"type":"nonsense"}`,
	}
	for _, sc := range schemas {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"x"}],"max_tokens":4,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":%s}}}`, ts.model, sc)
		status, _, e := post(t, url, "application/json", []byte(body), nil)
		t.Logf("%s -> %d %v", sc, status, e)
		if status != 200 && (status != 400 || e == nil) {
			t.Errorf("%s: status %d, %+v", sc, status, e)
		}
	}
}
