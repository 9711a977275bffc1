// Package multiplex serves many models from one llmux process behind one
// llm.Backend. It holds the catalog of servable names (explicit models,
// models directories, an ollama model store and runtime-registered LoRA
// adapters), path confinement helpers, the swap policy that decides which
// base models to load, drain and evict when they do not all fit at once,
// and the Pool that applies it: one goroutine owns which models are
// resident, loads each once however many requests wait for it, and never
// evicts a model with requests in flight. A Runner serves one loaded model
// behind the boundary.
//
// The package never reads environment variables: callers pass every
// setting in.
package multiplex
