package llm

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// roundTrip encodes v as JSON, decodes it into a fresh value of the same
// type and reports whether the two are deep-equal.
func roundTrip[T any](t *testing.T, name string, v T) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: marshal: %v", name, err)
	}
	var got T
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: unmarshal %s: %v", name, b, err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Errorf("%s did not round-trip through JSON:\n got %#v\nwant %#v\nwire %s", name, got, v, b)
	}
}

func TestBoundaryTypesRoundTripThroughJSON(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	roundTrip(t, "chat request", Request{
		ID: "req-1", Model: "base:adapter", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Messages: []Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "naïve café ✓"}},
		Params: Params{
			MaxTokens: 64, Temperature: 0.7, TopP: 0.9, TopK: 40, MinP: 0.05, RepeatPenalty: 1.1,
			PresencePenalty: -0.5, FrequencyPenalty: 0.25, Seed: 42,
			LogitBias:  []Bias{{Token: 7, Bias: 2.5}, {Token: 9, Ban: true}},
			Constraint: &Constraint{Kind: JSONSchema, Schema: json.RawMessage(`{"type":"object"}`), Param: "tools"},
			Stop:       []string{"\n\n", "END"}, IgnoreEOS: true, Logprobs: true, TopLogprobs: 3, N: 2, Priority: -1,
			Deadline: at,
		},
	})
	roundTrip(t, "completions request", Request{
		ID: "req-2", Model: "m", Echo: true,
		Prompts: []Prompt{{Text: "once"}, {Tokens: []int32{1, 2, 3}, Tokenized: true}},
		Params:  Params{Constraint: &Constraint{Kind: JSONObject}},
	})
	roundTrip(t, "event", Event{
		Index: 3, Text: "caf\u00e9",
		Tokens: []Token{{ID: 5, Bytes: []byte{0xc3}, Logprob: -0.25, Top: []Alternative{{ID: 5, Bytes: []byte{0xc3}, Logprob: -0.25}, {ID: 6, Bytes: []byte("x"), Logprob: -2}}}},
		Finish: FinishLength, At: at,
	})
	roundTrip(t, "final event", Event{
		Final: true, Error: &Error{Code: CodeOverloaded, Message: "queue full", RetryAfter: 1500 * time.Millisecond},
		Usage: &Usage{PromptTokens: 10, CompletionTokens: 5, CachedTokens: 4, Timings: Timings{Load: time.Second, Queued: 2, Prefill: 3, Decode: 4, TTFT: 5}},
	})
	roundTrip(t, "header", Header{PromptTokens: []int{4, 7}, Echo: []string{"a", "b"}})
	roundTrip(t, "model info", ModelInfo{ID: "a", Parent: "base", State: StateLoading, VocabSize: 512, Context: 2048, Parallel: 4, Embedding: 64})
	roundTrip(t, "load", LoadInfo{Running: 3, Waiting: 1, KVCellsActive: 40, KVCells: 512, Active: []string{"a", "a:lora"}, Loading: []string{"b"}, MaxActive: 3, Unready: "pinned model a is loading"})
	roundTrip(t, "tokenize", TokenizeRequest{Model: "m", Text: "hi", AddSpecial: true})
	roundTrip(t, "tokenized", TokenizeResult{Tokens: []int32{1, 2}, Context: 256})
	roundTrip(t, "detokenize", DetokenizeRequest{Model: "m", Tokens: []int32{1}})
	roundTrip(t, "detokenized", DetokenizeResult{Text: "x"})
	roundTrip(t, "embed", EmbedRequest{Model: "m", Inputs: []Prompt{{Text: "a"}}, Dimensions: 8})
	roundTrip(t, "embedded", EmbedResult{Vectors: [][]float32{{0.5, -0.5}}, PromptTokens: 2})
	roundTrip(t, "error", Error{Code: CodeContextLength, Param: "messages", Message: "too long"})
}

func TestErrorIsAnErrorWithItsMessage(t *testing.T) {
	var err error = Errorf(CodeInvalid, "n", "n must be at most %d", 4)
	if err.Error() != "n must be at most 4" {
		t.Fatalf("got %q", err.Error())
	}
}
