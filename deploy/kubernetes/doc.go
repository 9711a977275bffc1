// Package kubernetes holds llmux's Kubernetes deployment (manifests/,
// prometheus-adapter/, grafana/, image/) and, in its tests, the checks
// that `make test` runs on it: strict decoding into the official types,
// CRD schema and CEL validation, the wiring between the objects, and the
// Gateway API Inference Extension's own endpoint-picker code reading a
// live llmux. See README.md.
//
// It is a Go module of its own so that its Kubernetes dependencies stay
// out of llmux's module; it has no code to import.
package kubernetes
