package multiplex

import (
	"context"
	"errors"

	"github.com/llmux/llmux/llm"
)

var _ llm.AdapterManager = (*Pool)(nil)

// LoadAdapter registers a LoRA adapter of a catalog base model at run
// time; it is loaded into the base's scheduler on first use.
func (p *Pool) LoadAdapter(ctx context.Context, req *llm.AdapterRequest) (llm.ModelInfo, *llm.Error) {
	if p.opts.Catalog == nil {
		return llm.ModelInfo{}, llm.Errorf(llm.CodeInvalid, "", "this server has no model catalog to add adapters to")
	}
	base := req.Base
	if base == "" {
		var bases []string
		for _, e := range p.opts.Catalog.Entries() {
			if e.Kind == KindBase {
				bases = append(bases, e.Name)
			}
		}
		if len(bases) != 1 {
			return llm.ModelInfo{}, llm.Errorf(llm.CodeInvalid, "base", "name the base model the adapter is for (the catalog has %d)", len(bases))
		}
		base = bases[0]
	}
	if _, ok := p.opts.Catalog.Base(base); !ok {
		return llm.ModelInfo{}, llm.Errorf(llm.CodeModelNotFound, "base", "the base model %q does not exist", base)
	}
	e, err := p.opts.Catalog.AddAdapter(base, AdapterConfig{Name: req.Name, Path: req.Path, Scale: req.Scale})
	if err != nil {
		return llm.ModelInfo{}, llm.Errorf(llm.CodeInvalid, "lora_path", "%s", redactPaths(err.Error()))
	}
	p.log.Info("adapter registered", "adapter", e.Name, "base", base)
	return p.Info(ctx, e.Name)
}

// UnloadAdapter removes a runtime-registered or configured adapter from
// the catalog: new requests cannot name it. (A scheduler that already
// loaded it keeps its copy until the base model is unloaded.)
func (p *Pool) UnloadAdapter(_ context.Context, name string) *llm.Error {
	if p.opts.Catalog == nil {
		return llm.Errorf(llm.CodeModelNotFound, "lora_name", "the adapter %q does not exist", name)
	}
	if _, err := p.opts.Catalog.RemoveAdapter(name); err != nil {
		var nf *NotFoundError
		if errors.As(err, &nf) {
			return llm.Errorf(llm.CodeModelNotFound, "lora_name", "the adapter %q does not exist", name)
		}
		return llm.Errorf(llm.CodeInvalid, "lora_name", "%s", redactPaths(err.Error()))
	}
	p.log.Info("adapter removed", "adapter", name)
	return nil
}
