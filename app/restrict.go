package app

import (
	"context"
	"slices"

	"github.com/llmux/llmux/llm"
)

// Restrict is b serving only the named models (and their adapters): an
// llm deployment over a part of a shared catalog. Other names are not
// found; the model list shows only these.
func Restrict(b llm.Backend, models []string) llm.Backend {
	return &restricted{Backend: b, models: models}
}

type restricted struct {
	llm.Backend
	models []string
}

// Unwrap is the shared backend.
func (r *restricted) Unwrap() llm.Backend { return r.Backend }

// allows reports whether model is one of the deployment's models or an
// adapter of one (the backend resolves the name; its parent says whose).
func (r *restricted) allows(ctx context.Context, model string) (llm.ModelInfo, *llm.Error) {
	mi, e := r.Backend.Info(ctx, model)
	if e != nil {
		return mi, e
	}
	if slices.Contains(r.models, model) || slices.Contains(r.models, mi.ID) || (mi.Parent != "" && slices.Contains(r.models, mi.Parent)) {
		return mi, nil
	}
	return llm.ModelInfo{}, llm.Errorf(llm.CodeModelNotFound, "model", "the model %q does not exist here", model)
}

func (r *restricted) Info(ctx context.Context, model string) (llm.ModelInfo, *llm.Error) {
	return r.allows(ctx, model)
}

func (r *restricted) Models(ctx context.Context) []llm.ModelInfo {
	var out []llm.ModelInfo
	for _, mi := range r.Backend.Models(ctx) {
		if slices.Contains(r.models, mi.ID) || (mi.Parent != "" && slices.Contains(r.models, mi.Parent)) {
			out = append(out, mi)
		}
	}
	return out
}

func (r *restricted) Generate(ctx context.Context, req *llm.Request) (llm.Stream, *llm.Error) {
	if _, e := r.allows(ctx, req.Model); e != nil {
		return nil, e
	}
	return r.Backend.Generate(ctx, req)
}

func (r *restricted) Tokenize(ctx context.Context, req *llm.TokenizeRequest) (*llm.TokenizeResult, *llm.Error) {
	if _, e := r.allows(ctx, req.Model); e != nil {
		return nil, e
	}
	return r.Backend.Tokenize(ctx, req)
}

func (r *restricted) Detokenize(ctx context.Context, req *llm.DetokenizeRequest) (*llm.DetokenizeResult, *llm.Error) {
	if _, e := r.allows(ctx, req.Model); e != nil {
		return nil, e
	}
	return r.Backend.Detokenize(ctx, req)
}

func (r *restricted) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResult, *llm.Error) {
	if _, e := r.allows(ctx, req.Model); e != nil {
		return nil, e
	}
	return r.Backend.Embed(ctx, req)
}
