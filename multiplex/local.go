package multiplex

import (
	"github.com/llmux/llmux/scheduler"
)

// NewLocalPool is a pool serving models in this process, loaded on first
// use with the given scheduler defaults (as llmux serve --replicas 0
// does): what a Go program embedding llmux needs to give its applications
// LLM deployments. Call Run.
func NewLocalPool(models []ModelConfig, defaults scheduler.Options) (*Pool, error) {
	cat, err := NewCatalog(CatalogOptions{Models: models})
	if err != nil {
		return nil, err
	}
	if defaults.Steps == nil {
		defaults.Steps = scheduler.NewStepGate() // the models take turns at engine steps
	}
	el := &EngineLoader{Catalog: cat, Defaults: defaults}
	return NewPool(PoolOptions{Catalog: cat, Load: el.Load, Size: el.Size}), nil
}
