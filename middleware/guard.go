package middleware

import (
	"context"
	"fmt"
	"regexp"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/llm"
)

// GuardConfig lists what prompts may not contain.
type GuardConfig struct {
	// Patterns are Go regular expressions, matched case-insensitively
	// against every message and prompt.
	Patterns []string `json:"patterns" yaml:"patterns"`
	// Message is the refusal's text (default: a generic one).
	Message string `json:"message,omitempty" yaml:"message,omitempty"`
}

// Validate compiles the patterns.
func (c *GuardConfig) Validate() error {
	if len(c.Patterns) == 0 {
		return fmt.Errorf("patterns: give at least one")
	}
	for i, p := range c.Patterns {
		if _, err := regexp.Compile("(?i)" + p); err != nil {
			return fmt.Errorf("patterns[%d]: %w", i, err)
		}
	}
	return nil
}

// Guard refuses requests whose messages or prompts match a pattern with a
// 400, before they reach the deployment it guards.
type Guard struct {
	res  []*regexp.Regexp
	msg  string
	next *deploy.Handle
}

// NewGuard guards next.
func NewGuard(cfg GuardConfig, next *deploy.Handle) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{msg: cfg.Message, next: next}
	if g.msg == "" {
		g.msg = "the request was refused by this server's content rules"
	}
	for _, p := range cfg.Patterns {
		g.res = append(g.res, regexp.MustCompile("(?i)"+p))
	}
	return g, nil
}

// Refuses reports whether the request matches a pattern.
func (g *Guard) Refuses(req *llm.Request) bool {
	var texts []string
	for _, m := range req.Messages {
		texts = append(texts, m.Content)
	}
	for _, p := range req.Prompts {
		texts = append(texts, p.Text)
	}
	for _, t := range texts {
		for _, re := range g.res {
			if re.MatchString(t) {
				return true
			}
		}
	}
	return false
}

func (g *Guard) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	if g.Refuses(req) {
		param := "messages"
		if len(req.Messages) == 0 {
			param = "prompt"
		}
		return nil, &llm.Error{Code: llm.CodeInvalid, Param: param, Message: g.msg}
	}
	return g.next.Stream(ctx, req)
}
