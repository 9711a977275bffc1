package middleware

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
)

// promptText is what classifiers and guards read: the chat's last user
// message, or the completion prompts' text.
func promptText(req *llm.Request) string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			return req.Messages[i].Content
		}
	}
	var parts []string
	for _, p := range req.Prompts {
		parts = append(parts, p.Text)
	}
	return strings.Join(parts, "\n")
}

// byName finds the handle to the deployment called name.
func byName(calls []*deploy.Handle, name string) (*deploy.Handle, error) {
	i := slices.IndexFunc(calls, func(h *deploy.Handle) bool { return h.Name() == name })
	if i < 0 {
		return nil, fmt.Errorf("%q is not among the deployments this one calls", name)
	}
	return calls[i], nil
}

// KeywordRouterConfig routes by rules over the prompt text.
type KeywordRouterConfig struct {
	// Rules are tried in order; the first that matches picks the
	// deployment.
	Rules []KeywordRule `json:"rules" yaml:"rules"`
	// Default is the deployment for prompts no rule matches, and
	// DefaultModel the model to ask it for (empty: the request's own).
	Default      string `json:"default" yaml:"default"`
	DefaultModel string `json:"default_model,omitempty" yaml:"default_model,omitempty"`
}

// KeywordRule sends prompts that contain one of Keywords (case-folded,
// whole words) or match Pattern (a Go regular expression) to To, asking
// it for Model (empty: the request's own model).
type KeywordRule struct {
	Keywords []string `json:"keywords,omitempty" yaml:"keywords,omitempty"`
	Pattern  string   `json:"pattern,omitempty" yaml:"pattern,omitempty"`
	To       string   `json:"to" yaml:"to"`
	Model    string   `json:"model,omitempty" yaml:"model,omitempty"`
}

// Validate compiles the rules.
func (c *KeywordRouterConfig) Validate() error {
	if c.Default == "" {
		return fmt.Errorf("default: name the deployment for prompts no rule matches")
	}
	for i, r := range c.Rules {
		if r.To == "" {
			return fmt.Errorf("rules[%d].to: name a deployment", i)
		}
		if len(r.Keywords) == 0 && r.Pattern == "" {
			return fmt.Errorf("rules[%d]: give keywords or a pattern", i)
		}
		if _, err := r.compile(); err != nil {
			return fmt.Errorf("rules[%d]: %w", i, err)
		}
	}
	return nil
}

// compile turns a rule into one case-insensitive expression.
func (r KeywordRule) compile() (*regexp.Regexp, error) {
	var alts []string
	if r.Pattern != "" {
		alts = append(alts, "(?:"+r.Pattern+")")
	}
	if len(r.Keywords) > 0 {
		words := make([]string, len(r.Keywords))
		for i, k := range r.Keywords {
			words[i] = regexp.QuoteMeta(k)
		}
		alts = append(alts, `\b(?:`+strings.Join(words, "|")+`)\b`)
	}
	return regexp.Compile("(?i)" + strings.Join(alts, "|"))
}

// KeywordRouter sends each request to the deployment its first matching
// rule names, as it is: the chosen deployment's stream is the response.
type KeywordRouter struct {
	rules []compiledRule
	def   target
}

type compiledRule struct {
	re *regexp.Regexp
	to target
}

// target is a deployment and the model to ask it for.
type target struct {
	h     *deploy.Handle
	model string
}

func (t target) stream(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	if t.model != "" {
		return t.h.Stream(ctx, req, deploy.WithModel(t.model))
	}
	return t.h.Stream(ctx, req)
}

// NewKeywordRouter builds the router over the deployments it may call.
func NewKeywordRouter(cfg KeywordRouterConfig, calls []*deploy.Handle) (*KeywordRouter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &KeywordRouter{def: target{model: cfg.DefaultModel}}
	var err error
	if k.def.h, err = byName(calls, cfg.Default); err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	for i, r := range cfg.Rules {
		re, _ := r.compile()
		to, err := byName(calls, r.To)
		if err != nil {
			return nil, fmt.Errorf("rules[%d].to: %w", i, err)
		}
		k.rules = append(k.rules, compiledRule{re: re, to: target{h: to, model: r.Model}})
	}
	return k, nil
}

// Route is the deployment (and model) a request goes to.
func (k *KeywordRouter) Route(req *llm.Request) target {
	text := promptText(req)
	for _, r := range k.rules {
		if r.re.MatchString(text) {
			return r.to
		}
	}
	return k.def
}

func (k *KeywordRouter) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	return k.Route(req).stream(ctx, req)
}

// ClassifierRouterConfig asks a small model which label fits the prompt.
type ClassifierRouterConfig struct {
	// Classifier is the deployment asked, and Model the model it is asked
	// for (empty: the request's own).
	Classifier string `json:"classifier" yaml:"classifier"`
	Model      string `json:"model,omitempty" yaml:"model,omitempty"`
	// Routes maps each label to the deployment for it, and Models,
	// optionally, to the model to ask that deployment for.
	Routes map[string]string `json:"routes" yaml:"routes"`
	Models map[string]string `json:"models,omitempty" yaml:"models,omitempty"`
	// Default is the deployment when the answer names no label.
	Default string `json:"default" yaml:"default"`
	// Instruction opens the question; the labels and the prompt follow.
	Instruction string `json:"instruction,omitempty" yaml:"instruction,omitempty"`
}

// Validate checks the config.
func (c *ClassifierRouterConfig) Validate() error {
	switch {
	case c.Classifier == "":
		return fmt.Errorf("classifier: name the deployment to ask")
	case len(c.Routes) == 0:
		return fmt.Errorf("routes: map at least one label to a deployment")
	case c.Default == "":
		return fmt.Errorf("default: name the deployment for an answer with no label")
	}
	return nil
}

// ClassifierRouter asks a classifier deployment (a small model) for one of
// its labels, greedily and briefly, and sends the request to that label's
// deployment.
type ClassifierRouter struct {
	cfg        ClassifierRouterConfig
	classifier *deploy.Handle
	labels     []string // longest first, so "code review" wins over "code"
	routes     map[string]target
	def        target
}

// NewClassifierRouter builds the router.
func NewClassifierRouter(cfg ClassifierRouterConfig, calls []*deploy.Handle) (*ClassifierRouter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Instruction == "" {
		cfg.Instruction = "Classify the request below. Answer with exactly one label and nothing else."
	}
	c := &ClassifierRouter{cfg: cfg, routes: map[string]target{}}
	var err error
	if c.classifier, err = byName(calls, cfg.Classifier); err != nil {
		return nil, fmt.Errorf("classifier: %w", err)
	}
	if c.def.h, err = byName(calls, cfg.Default); err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	for label, to := range cfg.Routes {
		h, err := byName(calls, to)
		if err != nil {
			return nil, fmt.Errorf("routes.%s: %w", label, err)
		}
		c.routes[strings.ToLower(label)] = target{h: h, model: cfg.Models[label]}
		c.labels = append(c.labels, strings.ToLower(label))
	}
	for label := range cfg.Models {
		if _, ok := cfg.Routes[label]; !ok {
			return nil, fmt.Errorf("models.%s: no route has this label", label)
		}
	}
	slices.SortFunc(c.labels, func(a, b string) int { return len(b) - len(a) })
	return c, nil
}

// Classify asks the classifier and returns the chosen label ("" when its
// answer names none).
func (c *ClassifierRouter) Classify(ctx context.Context, req *llm.Request) (string, *llm.Error) {
	labels := slices.Clone(c.labels)
	slices.Sort(labels)
	// The answer is held to {"label": one of the labels} by a grammar, so
	// even a small model answers with a label.
	schema, _ := json.Marshal(map[string]any{"type": "object", "required": []string{"label"}, "additionalProperties": false,
		"properties": map[string]any{"label": map[string]any{"enum": labels}}})
	q := &llm.Request{ID: req.ID + "-classify", TraceParent: req.TraceParent, Model: req.Model,
		Messages: []llm.Message{{Role: "user", Content: c.cfg.Instruction + "\nLabels: " + strings.Join(labels, ", ") + "\nRequest: " + promptText(req)}},
		Params:   llm.Params{Temperature: 0, MaxTokens: 48, N: 1, Constraint: &llm.Constraint{Kind: llm.JSONSchema, Schema: schema, Param: "classifier"}}}
	var opts []deploy.CallOption
	if c.cfg.Model != "" {
		opts = append(opts, deploy.WithModel(c.cfg.Model))
	}
	res, e := c.classifier.Call(ctx, q, opts...)
	if e != nil {
		return "", e
	}
	answer := ""
	if len(res.Texts) > 0 {
		answer = strings.ToLower(res.Texts[0])
	}
	var parsed struct{ Label string }
	if json.Unmarshal([]byte(answer), &parsed) == nil {
		if _, ok := c.routes[parsed.Label]; ok {
			return parsed.Label, nil
		}
	}
	for _, l := range c.labels {
		if strings.Contains(answer, l) {
			return l, nil
		}
	}
	return "", nil
}

func (c *ClassifierRouter) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	label, e := c.Classify(ctx, req)
	if e != nil {
		return nil, e
	}
	to := c.def
	if t, ok := c.routes[label]; ok {
		to = t
	}
	return to.stream(ctx, req)
}
