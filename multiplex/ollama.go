package multiplex

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The layout of an ollama model store, as ollama itself writes it
// (types/model/name.go and manifest/ in github.com/ollama/ollama):
//
//	<root>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest
//	<root>/blobs/sha256-<64 hex>                        layer contents
//
// A manifest's layer digest is written "sha256:<hex>" while the blob file
// name uses a dash. The model layer is the GGUF; the template layer (a Go
// template), the params layer (sampling defaults and stop words) and the
// config blob (the renderer and parser names) decide the model's chat
// format, as they do in ollama. License and other layers are ignored.
const (
	ollamaDefaultHost       = "registry.ollama.ai"
	ollamaDefaultNamespace  = "library"
	ollamaDefaultTag        = "latest"
	ollamaModelMediaType    = "application/vnd.ollama.image.model"
	ollamaTemplateMediaType = "application/vnd.ollama.image.template"
	ollamaParamsMediaType   = "application/vnd.ollama.image.params"
	// ollamaMaxManifest bounds how much of a manifest file is read; real
	// manifests are a few hundred bytes.
	ollamaMaxManifest = 1 << 20
)

// OllamaStore reads models from an ollama model store rooted at Root (the
// directory holding manifests/ and blobs/).
type OllamaStore struct{ Root string }

// OllamaModel is one model found in an ollama store. Name is "model:tag"
// for registry.ollama.ai/library, "namespace/model:tag" for other
// namespaces on the default host and "host/namespace/model:tag" otherwise;
// Path is the resolved path of its GGUF blob; Chat the blobs of its
// template, params and config.
type OllamaModel struct {
	Name string
	Path string
	Chat OllamaChat
}

// OllamaChat holds the resolved paths of a store model's template layer,
// params layer and config blob ("" where the manifest has none).
type OllamaChat struct {
	Template, Params, Config string
}

// DefaultOllamaDir returns the store root ollama itself uses: the value of
// the OLLAMA_MODELS environment variable when set (passed in as
// ollamaModelsEnv), else <home>/.ollama/models. It returns "" (lookup off)
// when both are empty.
func DefaultOllamaDir(ollamaModelsEnv, home string) string {
	if ollamaModelsEnv != "" {
		return ollamaModelsEnv
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".ollama", "models")
}

// List returns every model in the store whose manifest has a model layer
// and whose blob exists inside the store, sorted by Name. Manifests that
// cannot be used (not JSON, no model layer, bad digest, missing blob) are
// skipped. A store without a manifests directory lists nothing.
func (s OllamaStore) List() ([]OllamaModel, error) {
	models, _, err := s.list()
	return models, err
}

// list is List that also reports why each skipped manifest was skipped.
func (s OllamaStore) list() (models []OllamaModel, skipped []string, err error) {
	dir := filepath.Join(s.Root, "manifests")
	hosts, err := subdirs(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list ollama store %q: %w", s.Root, err)
	}
	for _, host := range hosts {
		namespaces, err := subdirs(filepath.Join(dir, host))
		if err != nil {
			return nil, nil, fmt.Errorf("list ollama store %q: %w", s.Root, err)
		}
		for _, ns := range namespaces {
			names, err := subdirs(filepath.Join(dir, host, ns))
			if err != nil {
				return nil, nil, fmt.Errorf("list ollama store %q: %w", s.Root, err)
			}
			for _, model := range names {
				mdir := filepath.Join(dir, host, ns, model)
				tags, err := os.ReadDir(mdir)
				if err != nil {
					return nil, nil, fmt.Errorf("list ollama store %q: %w", s.Root, err)
				}
				for _, t := range tags {
					if !t.Type().IsRegular() {
						continue
					}
					ref := ollamaRef{host: host, namespace: ns, model: model, tag: t.Name()}
					if err := ref.validate(); err != nil {
						skipped = append(skipped, fmt.Sprintf("ollama manifest %s: %v", filepath.Join(mdir, t.Name()), err))
						continue
					}
					m, err := s.lookupRef(ref)
					if err != nil {
						skipped = append(skipped, err.Error())
						continue
					}
					models = append(models, m)
				}
			}
		}
	}
	sort.Slice(models, func(i, j int) bool { return models[i].Name < models[j].Name })
	return models, skipped, nil
}

// subdirs lists the names of the directories (not symlinks) directly in dir,
// sorted.
func subdirs(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range des {
		if de.IsDir() {
			out = append(out, de.Name())
		}
	}
	return out, nil
}

// Lookup returns the resolved path of the GGUF blob of the model called
// name ("model", "model:tag", "namespace/model[:tag]" or
// "host/namespace/model[:tag]"; the tag defaults to latest, the host to
// registry.ollama.ai and the namespace to library). The manifest and the
// blob must exist and lie within Root; digests that are not sha256 hex are
// refused.
func (s OllamaStore) Lookup(name string) (string, error) {
	ref, err := parseOllamaName(name)
	if err != nil {
		return "", err
	}
	m, err := s.lookupRef(ref)
	return m.Path, err
}

// lookupRef reads ref's manifest: the blob path of its model layer, and
// those of its chat layers. A chat layer whose blob is missing is left out
// (the model is still served, with its GGUF's template).
func (s OllamaStore) lookupRef(ref ollamaRef) (OllamaModel, error) {
	rel := filepath.Join("manifests", ref.host, ref.namespace, ref.model, ref.tag)
	manifest, err := Within(s.Root, rel)
	if err != nil {
		return OllamaModel{}, fmt.Errorf("ollama model %q: no usable manifest %s: %w", ref.display(), filepath.Join(s.Root, rel), err)
	}
	m, err := readManifest(manifest)
	if err != nil {
		return OllamaModel{}, fmt.Errorf("ollama model %q: %w", ref.display(), err)
	}
	digest := m.digest(ollamaModelMediaType)
	if digest == "" {
		return OllamaModel{}, fmt.Errorf("ollama model %q: manifest %s has no %s layer", ref.display(), manifest, ollamaModelMediaType)
	}
	blob, err := s.blob(digest)
	if err != nil {
		return OllamaModel{}, fmt.Errorf("ollama model %q: manifest %s: %w", ref.display(), manifest, err)
	}
	out := OllamaModel{Name: ref.display(), Path: blob}
	optional := func(digest string) string {
		if digest == "" {
			return ""
		}
		p, err := s.blob(digest)
		if err != nil {
			return ""
		}
		return p
	}
	out.Chat = OllamaChat{Template: optional(m.digest(ollamaTemplateMediaType)), Params: optional(m.digest(ollamaParamsMediaType)), Config: optional(m.Config.Digest)}
	return out, nil
}

// blob resolves a layer digest to its regular file inside the store.
func (s OllamaStore) blob(digest string) (string, error) {
	file, err := blobFileName(digest)
	if err != nil {
		return "", err
	}
	blob, err := Within(s.Root, filepath.Join("blobs", file))
	if err != nil {
		return "", fmt.Errorf("blob %s: %w", file, err)
	}
	if err := requireRegular(blob); err != nil {
		return "", err
	}
	return blob, nil
}

// ollamaManifest is the part of an ollama manifest this package reads.
type ollamaManifest struct {
	SchemaVersion int    `json:"schemaVersion"`
	MediaType     string `json:"mediaType"`
	Config        struct {
		Digest string `json:"digest"`
	} `json:"config"`
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	} `json:"layers"`
}

// digest is the digest of the manifest's first layer of that media type.
func (m *ollamaManifest) digest(mediaType string) string {
	for _, l := range m.Layers {
		if l.MediaType == mediaType {
			return l.Digest
		}
	}
	return ""
}

// readManifest reads and decodes the manifest at path.
func readManifest(path string) (*ollamaManifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, ollamaMaxManifest))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", path, err)
	}
	var m ollamaManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s is not valid JSON: %w", path, err)
	}
	return &m, nil
}

// OllamaParams is the part of a params layer llmux uses: sampling
// defaults and stop words.
type OllamaParams struct {
	Temperature *float64 `json:"temperature"`
	TopP        *float64 `json:"top_p"`
	TopK        *int     `json:"top_k"`
	MinP        *float64 `json:"min_p"`
	NumPredict  *int     `json:"num_predict"`
	Stop        []string `json:"stop"`
}

// ollamaMaxLayer bounds how much of a template, params or config blob is
// read; real ones are a few KB.
const ollamaMaxLayer = 1 << 20

// readLayer reads a small blob ("" path: nothing).
func readLayer(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, ollamaMaxLayer))
}

// ReadParams decodes a params layer; a layer that is not JSON gives its
// error. Keys llmux has no use for are ignored.
func (c OllamaChat) ReadParams() (OllamaParams, error) {
	var p OllamaParams
	b, err := readLayer(c.Params)
	if err != nil || len(b) == 0 {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("params layer %s: %w", c.Params, err)
	}
	if p.NumPredict != nil && *p.NumPredict < 0 {
		p.NumPredict = nil // ollama's -1: no limit
	}
	return p, nil
}

// ReadConfig returns the config blob's renderer and parser names.
func (c OllamaChat) ReadConfig() (renderer, parser string, err error) {
	b, err := readLayer(c.Config)
	if err != nil || len(b) == 0 {
		return "", "", err
	}
	var cfg struct {
		Renderer string `json:"renderer"`
		Parser   string `json:"parser"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", "", fmt.Errorf("config blob %s: %w", c.Config, err)
	}
	return cfg.Renderer, cfg.Parser, nil
}

// ReadTemplate returns the template layer's text.
func (c OllamaChat) ReadTemplate() (string, error) {
	b, err := readLayer(c.Template)
	return string(b), err
}

// blobFileName turns a layer digest "sha256:<64 hex>" (ollama also accepts
// "sha256-<hex>") into its blob file name "sha256-<hex>".
func blobFileName(digest string) (string, error) {
	hex, ok := strings.CutPrefix(digest, "sha256:")
	if !ok {
		hex, ok = strings.CutPrefix(digest, "sha256-")
	}
	if !ok || len(hex) != 64 || !isHex(hex) {
		return "", fmt.Errorf("bad layer digest %q: want sha256:<64 hex digits>", digest)
	}
	return "sha256-" + strings.ToLower(hex), nil
}

// isHex reports whether s is made only of hexadecimal digits.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// ollamaRef is a fully qualified ollama model name.
type ollamaRef struct{ host, namespace, model, tag string }

// parseOllamaName parses "[[host/]namespace/]model[:tag]" and fills in
// ollama's defaults.
func parseOllamaName(s string) (ollamaRef, error) {
	ref := ollamaRef{host: ollamaDefaultHost, namespace: ollamaDefaultNamespace, tag: ollamaDefaultTag}
	rest := s
	// A ':' after the last '/' starts the tag; one before it is a host port.
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		rest, ref.tag = s[:i], s[i+1:]
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 1:
		ref.model = parts[0]
	case 2:
		ref.namespace, ref.model = parts[0], parts[1]
	case 3:
		ref.host, ref.namespace, ref.model = parts[0], parts[1], parts[2]
	default:
		return ollamaRef{}, fmt.Errorf("ollama model name %q: want [[host/]namespace/]model[:tag]", s)
	}
	if err := ref.validate(); err != nil {
		return ollamaRef{}, fmt.Errorf("ollama model name %q: %w", s, err)
	}
	return ref, nil
}

// validate refuses parts that are empty or could step outside the
// manifests directory.
func (r ollamaRef) validate() error {
	for _, p := range []struct{ what, v string }{
		{"host", r.host}, {"namespace", r.namespace}, {"model", r.model}, {"tag", r.tag},
	} {
		switch {
		case p.v == "":
			return fmt.Errorf("empty %s", p.what)
		case p.v == "." || p.v == "..":
			return fmt.Errorf("%s %q is not allowed", p.what, p.v)
		case strings.ContainsAny(p.v, "/\\\x00"):
			return fmt.Errorf("%s %q contains a path separator", p.what, p.v)
		case p.what != "host" && strings.ContainsRune(p.v, ':'):
			return fmt.Errorf("%s %q contains ':'", p.what, p.v)
		}
	}
	return nil
}

// display is the shortest name ollama shows for r.
func (r ollamaRef) display() string {
	switch {
	case !strings.EqualFold(r.host, ollamaDefaultHost):
		return r.host + "/" + r.namespace + "/" + r.model + ":" + r.tag
	case !strings.EqualFold(r.namespace, ollamaDefaultNamespace):
		return r.namespace + "/" + r.model + ":" + r.tag
	default:
		return r.model + ":" + r.tag
	}
}

// requireRegular returns an error unless path names a regular file.
func requireRegular(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}
