// Package multiplex holds the pure parts of serving many models from one
// llmux process: the catalog of servable names (explicit models, models
// directories, an ollama model store and runtime-registered LoRA adapters),
// path confinement helpers, and the swap policy that decides which base
// models to load, drain and evict when they do not all fit at once.
//
// Nothing here loads a model or touches an accelerator; the loading pool and
// the server wiring call into this package and act on its answers. The
// package never reads environment variables: callers pass every setting in.
package multiplex
