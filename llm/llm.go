// Package llm is the boundary between llmux's serving side (HTTP, routing,
// handles) and the side that holds models (templates, tokenizers,
// grammars, schedulers, engines). Everything that crosses it is plain
// data: requests carry messages or text or token ids and sampling
// parameters; events carry text, token ids with their bytes and
// log-probabilities, finish reasons and usage; failures are an *Error
// with a stable code. No Go error values, engine types or pointers into
// model state cross it, so the same types can travel between processes
// (every type here round-trips through JSON; see llm_test.go).
//
// A Backend is what the serving side talks to. multiplex implements it in
// process over loaded models; a replica client implements it over a
// child process.
package llm

import (
	"context"
	"encoding/json"
	"slices"
	"time"
)

// Backend serves generation, tokenization and embeddings for the models of
// a catalog, named per request.
type Backend interface {
	// Info describes a servable model name without loading it: what
	// validation needs (vocabulary size, context, parallel sequences).
	// An unknown name is CodeModelNotFound.
	Info(ctx context.Context, model string) (ModelInfo, *Error)
	// Models lists every servable name with its state.
	Models(ctx context.Context) []ModelInfo
	// Generate starts a request. Errors found before any output (an
	// unknown model, a prompt too long, overload) come back here; later
	// ones arrive as events.
	Generate(ctx context.Context, req *Request) (Stream, *Error)
	Tokenize(ctx context.Context, req *TokenizeRequest) (*TokenizeResult, *Error)
	Detokenize(ctx context.Context, req *DetokenizeRequest) (*DetokenizeResult, *Error)
	Embed(ctx context.Context, req *EmbedRequest) (*EmbedResult, *Error)
	// Load reports the backend's load: running and waiting sequences
	// over all its models.
	Load() LoadInfo
}

// Stream is one request's output.
type Stream interface {
	// Header is known once Generate returns: the prompts' token counts
	// and, when Request.Echo was set, their text.
	Header() Header
	// Recv returns the next event. ok is false once the stream is over:
	// after the Final event, or when ctx ended (then ev.Error has
	// CodeCancelled).
	Recv(ctx context.Context) (ev Event, ok bool)
	// Close abandons the request; its work stops at the next engine
	// step. Safe to call more than once and after the end.
	Close()
}

// ModelState is where a servable name stands.
type ModelState string

const (
	StateLoaded    ModelState = "loaded"
	StateLoading   ModelState = "loading"
	StateAvailable ModelState = "available"
)

// ModelInfo describes one servable name.
type ModelInfo struct {
	ID string `json:"id"`
	// Parent is the base model of an adapter ("" for base models).
	Parent    string     `json:"parent,omitempty"`
	State     ModelState `json:"state"`
	VocabSize int        `json:"vocab_size"`
	// Context is the most tokens one sequence may hold (prompt and
	// output).
	Context int `json:"context"`
	// Parallel is the sequences decoded at once; n may not exceed it.
	Parallel int `json:"parallel"`
	// Embedding is the width of the model's embeddings.
	Embedding int `json:"embedding,omitempty"`
	// Defaults are the model's own sampling settings (the config's
	// sampling:), for requests that leave them unset; nil: none.
	Defaults *SamplingDefaults `json:"defaults,omitempty"`
	// Chat is the model's chat format (nil where unknown).
	Chat *ChatFormat `json:"chat,omitempty"`
}

// SamplingDefaults are a model's sampling settings (the config file's
// sampling: key); nil fields are unset.
type SamplingDefaults struct {
	Temperature *float64 `json:"temperature,omitempty" yaml:"temperature"`
	TopP        *float64 `json:"top_p,omitempty" yaml:"top_p"`
	TopK        *int     `json:"top_k,omitempty" yaml:"top_k"`
	MinP        *float64 `json:"min_p,omitempty" yaml:"min_p"`
	MaxTokens   *int     `json:"max_tokens,omitempty" yaml:"max_tokens"`
}

// Clone copies d (nil when d holds nothing).
func (d SamplingDefaults) Clone() *SamplingDefaults {
	if d == (SamplingDefaults{}) {
		return nil
	}
	c := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		v := *p
		return &v
	}
	i := func(p *int) *int {
		if p == nil {
			return nil
		}
		v := *p
		return &v
	}
	return &SamplingDefaults{Temperature: c(d.Temperature), TopP: c(d.TopP), TopK: i(d.TopK), MinP: c(d.MinP), MaxTokens: i(d.MaxTokens)}
}

// LoadInfo is a backend's current load, summed over its models (and
// replicas): what a router outside the process — the Gateway API Inference
// Extension's endpoint picker — needs to choose between servers.
type LoadInfo struct {
	// Running is the sequences holding a KV slot.
	Running int `json:"running"`
	// Waiting is the sequences queued for admission plus the requests
	// waiting for their model to load.
	Waiting int `json:"waiting"`
	// KVCellsActive is the KV cells held by running sequences (a prefix
	// shared by several counts once); KVCells is all cells of the loaded
	// models.
	KVCellsActive int `json:"kv_cells_active"`
	KVCells       int `json:"kv_cells"`
	// Active is the models and adapters that serve a request without a
	// load (resident base models and the adapters loaded on them), sorted;
	// Loading the ones requests are waiting to have loaded.
	Active  []string `json:"active,omitempty"`
	Loading []string `json:"loading,omitempty"`
	// MaxActive is how many models and adapters can be active at once:
	// the base-model bound (--max-models, else every catalog base) plus
	// the catalog's adapters, which load beside their base without
	// evicting anything. Zero when unknown.
	MaxActive int `json:"max_active,omitempty"`
	// Unready says why the backend cannot take work yet (a pinned model
	// still loading, no replica up); empty when ready.
	Unready string `json:"unready,omitempty"`
}

// Add adds another backend's load to l: counts and bounds add up, names
// join (Tidy sorts them and drops repeats), the first reason to be
// unready stays.
func (l *LoadInfo) Add(x LoadInfo) {
	l.Running += x.Running
	l.Waiting += x.Waiting
	l.KVCellsActive += x.KVCellsActive
	l.KVCells += x.KVCells
	l.Active = append(l.Active, x.Active...)
	l.Loading = append(l.Loading, x.Loading...)
	l.MaxActive += x.MaxActive
	if l.Unready == "" {
		l.Unready = x.Unready
	}
}

// Tidy sorts the names and drops repeats.
func (l *LoadInfo) Tidy() {
	slices.Sort(l.Active)
	l.Active = slices.Compact(l.Active)
	slices.Sort(l.Loading)
	l.Loading = slices.Compact(l.Loading)
}

// Message is one chat message. The model's chat format (behind the
// boundary) decides how its parts are written: a native template renders
// reasoning and tool calls in the model's own syntax; the generic tool
// form writes calls as JSON.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Reasoning is an earlier assistant turn's reasoning (most templates
	// drop it).
	Reasoning string `json:"reasoning,omitempty"`
	// ToolCalls are an assistant turn's calls.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID and ToolName say which call a "tool" message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	ToolName   string `json:"tool_name,omitempty"`
}

// Tool is a function the model may call.
type Tool struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Parameters is the JSON schema of the arguments (empty: any object).
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// ToolCall is one call of a function. Arguments is a JSON object as text.
// In events, Index counts the calls of a choice (0, 1, ...).
type ToolCall struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ToolChoiceMode says whether the model may, must or must not call tools.
type ToolChoiceMode string

const (
	ToolsAuto     ToolChoiceMode = "auto"     // the model chooses (the default with tools)
	ToolsNone     ToolChoiceMode = "none"     // tools are not offered
	ToolsRequired ToolChoiceMode = "required" // at least one call
	ToolsFunction ToolChoiceMode = "function" // a call of ToolChoice.Name
)

// ToolChoice is the request's tool_choice.
type ToolChoice struct {
	Mode ToolChoiceMode `json:"mode,omitempty"`
	Name string         `json:"name,omitempty"` // ToolsFunction
	// Single allows at most one call (parallel_tool_calls false).
	Single bool `json:"single,omitempty"`
}

// Forced reports whether the choice demands a call.
func (c ToolChoice) Forced() bool { return c.Mode == ToolsRequired || c.Mode == ToolsFunction }

// Think turns a reasoning model's reasoning on or off.
type Think string

const (
	ThinkDefault Think = ""    // as the model's format wants
	ThinkOn      Think = "on"  // reasoning on
	ThinkOff     Think = "off" // reasoning off, where the template allows
	ThinkLow     Think = "low" // on, at an effort level (templates that know levels)
	ThinkMedium  Think = "medium"
	ThinkHigh    Think = "high"
)

// ChatFormat is how a model's chat is written and read, decided once per
// model from its files and config.
type ChatFormat struct {
	// Template names what renders messages: a family renderer of the
	// ollama module ("qwen3-vl-thinking"), a template of its index
	// ("chatml", "llama3-instruct"), "ollama" (the store's template
	// layer), a config file's path, "llama.cpp" (llama.cpp's built-in
	// detection of the GGUF's template) or "none" (contents joined).
	Template string `json:"template"`
	// Source says where the choice came from: "config", "ollama",
	// "gguf", "family", "llama.cpp" or "none".
	Source string `json:"source"`
	// Tools is the tool-call format: "native" (the template's own,
	// parsed by Parser or by the template's tool-call tag) or "generic"
	// (llmux's JSON form under a grammar).
	Tools string `json:"tools"`
	// Reasoning is how reasoning is separated: "parser" (the family
	// parser), "tags" (the template's tags, as Tags shows) or "" (none).
	Reasoning string `json:"reasoning,omitempty"`
	// Parser is the ollama module's output parser, when one is used.
	Parser string `json:"parser,omitempty"`
	// Tags are the reasoning tags ("<think>", "</think>") for "tags".
	Tags []string `json:"tags,omitempty"`
	// Stop is the template's own stop words.
	Stop []string `json:"stop,omitempty"`
}

// Prompt is one completions prompt: text, or token ids when Tokenized.
type Prompt struct {
	Text      string  `json:"text,omitempty"`
	Tokens    []int32 `json:"tokens,omitempty"`
	Tokenized bool    `json:"tokenized,omitempty"`
}

// Request is one generation request. Exactly one of Messages (chat: the
// model's chat template renders them) and Prompts (completions: one
// independent generation per prompt, each with Params.N choices) is set.
type Request struct {
	ID string `json:"id"`
	// Model is the name the client asked for; the backend resolves it.
	Model    string    `json:"model"`
	Messages []Message `json:"messages,omitempty"`
	Prompts  []Prompt  `json:"prompts,omitempty"`
	Params   Params    `json:"params"`
	// Tools the model may call, and whether it may or must (chat only).
	Tools      []Tool     `json:"tools,omitempty"`
	ToolChoice ToolChoice `json:"tool_choice,omitzero"`
	// Think turns reasoning on or off (chat only).
	Think Think `json:"think,omitempty"`
	// Echo asks for the prompts' text in the Header.
	Echo bool `json:"echo,omitempty"`
	// TraceParent is the caller's W3C traceparent, carried to where the
	// request runs (handles, replica processes) for their logs.
	TraceParent string `json:"traceparent,omitempty"`
}

// Params say how to continue a prompt. The zero value of each optional
// field means "off" or "default".
type Params struct {
	// MaxTokens bounds each choice's output (0: until the context is
	// full).
	MaxTokens        int     `json:"max_tokens,omitempty"`
	Temperature      float32 `json:"temperature"` // <= 0: greedy
	TopP             float32 `json:"top_p,omitempty"`
	TopK             int     `json:"top_k,omitempty"`
	MinP             float32 `json:"min_p,omitempty"`
	RepeatPenalty    float32 `json:"repeat_penalty,omitempty"`
	PresencePenalty  float32 `json:"presence_penalty,omitempty"`
	FrequencyPenalty float32 `json:"frequency_penalty,omitempty"`
	Seed             uint32  `json:"seed"`
	// SeedGiven says the client chose Seed (rather than the server at
	// random): its output is reproducible, so a response cache may keep it.
	SeedGiven bool   `json:"seed_given,omitempty"`
	LogitBias []Bias `json:"logit_bias,omitempty"`
	// Constraint holds the output to a JSON form, compiled to a grammar
	// behind the boundary.
	Constraint  *Constraint `json:"constraint,omitempty"`
	Stop        []string    `json:"stop,omitempty"`
	IgnoreEOS   bool        `json:"ignore_eos,omitempty"`
	Logprobs    bool        `json:"logprobs,omitempty"`
	TopLogprobs int         `json:"top_logprobs,omitempty"`
	N           int         `json:"n,omitempty"` // choices per prompt (0: 1)
	Priority    int         `json:"priority,omitempty"`
	// Deadline for the first token (zero: the backend's default).
	Deadline time.Time `json:"deadline,omitzero"`
}

// Bias changes one token's logit; Ban forbids the token outright (OpenAI's
// -100), as data rather than an infinity.
type Bias struct {
	Token int32   `json:"token"`
	Bias  float32 `json:"bias,omitempty"`
	Ban   bool    `json:"ban,omitempty"`
}

// ConstraintKind is the form a Constraint asks for.
type ConstraintKind string

const (
	JSONObject ConstraintKind = "json_object" // any JSON object
	JSONSchema ConstraintKind = "json_schema" // a value valid under Schema
)

// Constraint holds generated text to JSON.
type Constraint struct {
	Kind   ConstraintKind  `json:"kind"`
	Schema json.RawMessage `json:"schema,omitempty"`
	// Param names the request field the schema came from, for errors
	// ("response_format.json_schema" or "tools").
	Param string `json:"param,omitempty"`
}

// Header is what a stream knows before its first token.
type Header struct {
	// PromptTokens counts each prompt's tokens.
	PromptTokens []int `json:"prompt_tokens"`
	// Echo holds each prompt's text when the request asked for it.
	Echo []string `json:"echo,omitempty"`
}

// Finish says why a choice ended.
type Finish string

const (
	FinishStop      Finish = "stop"      // end of generation or a stop string
	FinishLength    Finish = "length"    // max tokens or context full
	FinishCancelled Finish = "cancelled" // the request was abandoned
	FinishError     Finish = "error"     // see Event.Error
)

// Token is one generated token: its id, its own bytes (possibly part of a
// UTF-8 rune), and log-probabilities when asked.
type Token struct {
	ID      int32         `json:"id"`
	Bytes   []byte        `json:"bytes"`
	Logprob float32       `json:"logprob,omitempty"`
	Top     []Alternative `json:"top,omitempty"`
}

// Alternative is one of the most likely tokens at a position.
type Alternative struct {
	ID      int32   `json:"id"`
	Bytes   []byte  `json:"bytes"`
	Logprob float32 `json:"logprob"`
}

// Event is one piece of a request's output. Events of one choice arrive in
// order. Index counts choices across all prompts of the request (prompt
// p's choice i is p*N+i). The last event has Final set and carries the
// request's Usage, and Error when the request as a whole failed.
//
// For chat, the model's format splits each choice's text: Text is content,
// Reasoning the reasoning, ToolCalls the calls, each whole (a call is
// emitted once its native syntax closes).
type Event struct {
	Index     int        `json:"index"`
	Text      string     `json:"text,omitempty"`
	Reasoning string     `json:"reasoning,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	Tokens    []Token    `json:"tokens,omitempty"`
	Finish    Finish     `json:"finish,omitempty"`
	Error     *Error     `json:"error,omitempty"`
	Final     bool       `json:"final,omitempty"`
	Usage     *Usage     `json:"usage,omitempty"`
	// At is when the backend emitted the event.
	At time.Time `json:"at,omitzero"`
}

// Usage counts a finished request's tokens and time, summed over its
// prompts (timings: the first prompt's).
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	CachedTokens     int `json:"cached_tokens,omitempty"`
	// ReasoningTokens counts the completion tokens that went to
	// reasoning (tokens of events that carried reasoning and nothing
	// else).
	ReasoningTokens int     `json:"reasoning_tokens,omitempty"`
	Timings         Timings `json:"timings"`
}

// Timings split a request's life into phases.
type Timings struct {
	Load    time.Duration `json:"load,omitempty"`  // waiting for its model or adapter to load
	Start   time.Duration `json:"start,omitempty"` // waiting for a replica to start (scale from zero)
	Queued  time.Duration `json:"queued"`          // arrival to first scheduled
	Prefill time.Duration `json:"prefill"`         // first scheduled to first token
	Decode  time.Duration `json:"decode"`          // first token to finish
	TTFT    time.Duration `json:"ttft"`            // arrival to first token
}

// TokenizeRequest asks for a text's token ids under a model.
type TokenizeRequest struct {
	Model string `json:"model"`
	Text  string `json:"text"`
	// Messages, when set, are a chat to count instead of Text: rendered
	// with Tools and Think in the model's chat format, as a generation
	// would render them.
	Messages   []Message  `json:"messages,omitempty"`
	Tools      []Tool     `json:"tools,omitempty"`
	ToolChoice ToolChoice `json:"tool_choice,omitzero"`
	Think      Think      `json:"think,omitempty"`
	// AddSpecial adds the model's start token where it wants one.
	AddSpecial bool `json:"add_special"`
}

// TokenizeResult is a tokenized text.
type TokenizeResult struct {
	Tokens  []int32 `json:"tokens"`
	Context int     `json:"context"`
}

// DetokenizeRequest asks for the text of token ids.
type DetokenizeRequest struct {
	Model  string  `json:"model"`
	Tokens []int32 `json:"tokens"`
}

// DetokenizeResult is the text of token ids.
type DetokenizeResult struct {
	Text string `json:"text"`
}

// EmbedRequest asks for one embedding per input.
type EmbedRequest struct {
	Model  string   `json:"model"`
	Inputs []Prompt `json:"inputs"`
	// Dimensions truncates each embedding to this many dimensions (and
	// renormalizes it); 0 keeps them all.
	Dimensions int `json:"dimensions,omitempty"`
}

// EmbedResult holds mean-pooled, L2-normalized embeddings, one per input.
type EmbedResult struct {
	Vectors      [][]float32 `json:"vectors"`
	PromptTokens int         `json:"prompt_tokens"`
}

// AdapterRequest registers a LoRA adapter at run time.
type AdapterRequest struct {
	// Name is the name requests will use; Base the base model it adapts
	// ("" when the catalog has one base model).
	Name string `json:"name"`
	Base string `json:"base,omitempty"`
	// Path is the adapter's GGUF file, within a configured adapter
	// directory (relative to one, or absolute inside one).
	Path  string  `json:"path"`
	Scale float64 `json:"scale,omitempty"`
}

// AdapterManager is a Backend that registers adapters at run time.
type AdapterManager interface {
	LoadAdapter(ctx context.Context, req *AdapterRequest) (ModelInfo, *Error)
	UnloadAdapter(ctx context.Context, name string) *Error
}
