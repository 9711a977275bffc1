package openai

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/llmux/llmux/llm"
)

// Sampling holds the fields chat and completion requests share, with the
// llama.cpp / vLLM extensions under their names there.
type Sampling struct {
	MaxTokens        *int               `json:"max_tokens"`
	Temperature      *float64           `json:"temperature"`
	TopP             *float64           `json:"top_p"`
	N                *int               `json:"n"`
	Stream           bool               `json:"stream"`
	StreamOptions    *StreamOptions     `json:"stream_options"`
	Stop             StringList         `json:"stop"`
	Seed             *int64             `json:"seed"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	User             string             `json:"user"`
	ResponseFormat   *ResponseFormat    `json:"response_format"`
	// Extensions.
	TopK          *int     `json:"top_k"`
	MinP          *float64 `json:"min_p"`
	RepeatPenalty *float64 `json:"repeat_penalty"`
	IgnoreEOS     bool     `json:"ignore_eos"`
	Priority      int      `json:"priority"`
}

// StreamOptions are the options of a streamed response.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// ResponseFormat constrains the output: text, json_object or json_schema.
type ResponseFormat struct {
	Type       string      `json:"type"`
	JSONSchema *JSONSchema `json:"json_schema"`
}

// JSONSchema is response_format.json_schema.
type JSONSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	Strict bool            `json:"strict"`
}

// ChatRequest is POST /v1/chat/completions.
type ChatRequest struct {
	Model               string          `json:"model"`
	Messages            []Message       `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            bool            `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               []Tool          `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	// ReasoningEffort ("none", "minimal", "low", "medium", "high")
	// and Think (ollama's: true, false, "low", "medium", "high") turn a
	// reasoning model's reasoning on or off where its template allows.
	ReasoningEffort string          `json:"reasoning_effort"`
	ThinkValue      json.RawMessage `json:"think"`
	// ChatTemplate (vLLM's and llama.cpp's extension) is refused: a
	// template is code the server runs. ChatTemplateKwargs is accepted
	// with enable_thinking only.
	ChatTemplate       json.RawMessage `json:"chat_template"`
	ChatTemplateKwargs json.RawMessage `json:"chat_template_kwargs"`
	Sampling
}

// Message is one chat message. Content is a string or an array of parts;
// only text parts are supported.
type Message struct {
	Role       string     `json:"role"`
	Content    Content    `json:"content"`
	Name       string     `json:"name,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	// ReasoningContent (vLLM's, llama.cpp's) or Reasoning (OpenRouter's)
	// is an earlier assistant turn's reasoning, sent back.
	ReasoningContent string `json:"reasoning_content,omitempty"`
	Reasoning        string `json:"reasoning,omitempty"`
}

// Content is a message's text, from a string or from text parts.
type Content struct {
	Text string
	Null bool
}

// UnmarshalJSON accepts a string, null, or [{"type":"text","text":...}].
func (c *Content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = Content{Null: true}
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.Text)
	case len(b) > 0 && b[0] == '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return fmt.Errorf("content parts: %w", err)
		}
		var sb bytes.Buffer
		for i, p := range parts {
			if p.Type != "text" || p.Text == nil {
				return fmt.Errorf("content part %d has type %q: only text parts are supported", i, p.Type)
			}
			if i > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString(*p.Text)
		}
		c.Text = sb.String()
		return nil
	}
	return fmt.Errorf("content must be a string or an array of text parts")
}

// MarshalJSON writes the text.
func (c Content) MarshalJSON() ([]byte, error) {
	if c.Null {
		return []byte("null"), nil
	}
	return json.Marshal(c.Text)
}

// StringList is a string or a list of strings (stop).
type StringList []string

// UnmarshalJSON accepts "s", ["a","b"] or null.
func (s *StringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*s = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = StringList{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("must be a string or an array of strings")
	}
	*s = list
	return nil
}

// CompletionRequest is POST /v1/completions.
type CompletionRequest struct {
	Model    string `json:"model"`
	Prompt   Prompt `json:"prompt"`
	Echo     bool   `json:"echo"`
	Logprobs *int   `json:"logprobs"`
	Suffix   string `json:"suffix"`
	Sampling
}

// Prompt is a string, an array of strings, an array of token ids, or an
// array of token-id arrays. Each element is one prompt.
type Prompt struct {
	Texts  []string
	Tokens [][]int32
	Set    bool
}

// UnmarshalJSON accepts the four prompt shapes.
func (p *Prompt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*p = Prompt{Set: true}
	if bytes.Equal(b, []byte("null")) {
		p.Set = false
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		p.Texts = []string{one}
		return nil
	}
	var texts []string
	if json.Unmarshal(b, &texts) == nil {
		p.Texts = texts
		return nil
	}
	var toks []int32
	if json.Unmarshal(b, &toks) == nil {
		p.Tokens = [][]int32{toks}
		return nil
	}
	var many [][]int32
	if json.Unmarshal(b, &many) == nil {
		p.Tokens = many
		return nil
	}
	return fmt.Errorf("prompt must be a string, an array of strings, an array of token ids, or an array of token-id arrays")
}

// Count is the number of prompts.
func (p Prompt) Count() int { return len(p.Texts) + len(p.Tokens) }

// Usage is a response's token accounting.
type Usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
	// CompletionTokensDetails reports reasoning tokens (reasoning models).
	CompletionTokensDetails *CompletionTokensDetails `json:"completion_tokens_details,omitempty"`
}

// CompletionTokensDetails splits the completion tokens.
type CompletionTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// PromptTokensDetails reports cached prompt tokens.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// ChatCompletion is a non-streamed chat response.
type ChatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []ChatChoice `json:"choices"`
	Usage             *Usage       `json:"usage,omitempty"`
}

// Timings says where a request's time went, in milliseconds: an llmux
// extension on a stream's final chunk. The prompt_* / predicted_* / cache_n
// fields mean what llama.cpp's server means by them; the phases before
// them (queue, load, start) are llmux's.
type Timings struct {
	QueueMs            float64 `json:"queue_ms"`           // arrival to first scheduled
	LoadMs             float64 `json:"load_ms,omitempty"`  // waiting for the model or adapter to load
	StartMs            float64 `json:"start_ms,omitempty"` // waiting for a replica to start
	TTFTMs             float64 `json:"ttft_ms"`            // arrival to first token
	CacheN             int     `json:"cache_n"`            // prompt tokens reused from the prefix cache
	PromptN            int     `json:"prompt_n"`           // prompt tokens evaluated
	PromptMs           float64 `json:"prompt_ms"`          // first scheduled to first token
	PromptPerSecond    float64 `json:"prompt_per_second"`
	PredictedN         int     `json:"predicted_n"` // tokens generated
	PredictedMs        float64 `json:"predicted_ms"`
	PredictedPerSecond float64 `json:"predicted_per_second"`
}

// ChatChoice is one choice of a chat response.
type ChatChoice struct {
	Index        int           `json:"index"`
	Message      AssistantMsg  `json:"message"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// AssistantMsg is the generated message: content, or (content null) tool
// calls.
type AssistantMsg struct {
	Role    string  `json:"role"`
	Content *string `json:"content"`
	// ReasoningContent is a reasoning model's reasoning (vLLM's and
	// llama.cpp's field).
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
}

// ChatChunk is one streamed chat event.
type ChatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []ChatChunkChoice `json:"choices"`
	Usage             *Usage            `json:"usage,omitempty"`
	// Timings is on the final (usage) chunk of a stream.
	Timings *Timings `json:"timings,omitempty"`
}

// ChatChunkChoice is one choice's delta in a chunk.
type ChatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        ChatDelta     `json:"delta"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// ChatDelta is new content of a streamed choice.
type ChatDelta struct {
	Role             string     `json:"role,omitempty"`
	Content          *string    `json:"content,omitempty"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
}

// ChatLogprobs are chat log-probabilities.
type ChatLogprobs struct {
	Content []TokenLogprob `json:"content"`
}

// TokenLogprob is one token's log-probability with alternatives.
type TokenLogprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

// TopLogprob is an alternative token.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// Completion is a completions response (also each streamed chunk, with
// Object "text_completion").
type Completion struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint"`
	Choices           []CompletionChoice `json:"choices"`
	Usage             *Usage             `json:"usage,omitempty"`
	// Timings is on the final (usage) chunk of a stream.
	Timings *Timings `json:"timings,omitempty"`
}

// CompletionChoice is one completion choice.
type CompletionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *CompletionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// CompletionLogprobs are the legacy completions log-probabilities.
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// Model is an entry of GET /v1/models.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Extensions.
	MaxModelLen int `json:"max_model_len,omitempty"`
	// Parent is an adapter's base model (vLLM's field).
	Parent string `json:"parent,omitempty"`
	// State is loaded, loading or available.
	State string `json:"state,omitempty"`
	// LLMux holds llmux's own facts about the model: its chat format.
	LLMux *ModelExt `json:"llmux,omitempty"`
}

// ModelExt is the llmux extension object of /v1/models.
type ModelExt struct {
	Chat *llm.ChatFormat `json:"chat,omitempty"`
}

// ModelList is GET /v1/models.
type ModelList struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}
