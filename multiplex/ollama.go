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
// name uses a dash. Only the model layer (the GGUF) is used here; the
// template, parameter, license and other layers are ignored.
const (
	ollamaDefaultHost      = "registry.ollama.ai"
	ollamaDefaultNamespace = "library"
	ollamaDefaultTag       = "latest"
	ollamaModelMediaType   = "application/vnd.ollama.image.model"
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
// Path is the resolved path of its GGUF blob.
type OllamaModel struct {
	Name string
	Path string
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
					blob, err := s.lookupRef(ref)
					if err != nil {
						skipped = append(skipped, err.Error())
						continue
					}
					models = append(models, OllamaModel{Name: ref.display(), Path: blob})
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
	return s.lookupRef(ref)
}

// lookupRef returns the blob path of the model layer of ref's manifest.
func (s OllamaStore) lookupRef(ref ollamaRef) (string, error) {
	rel := filepath.Join("manifests", ref.host, ref.namespace, ref.model, ref.tag)
	manifest, err := Within(s.Root, rel)
	if err != nil {
		return "", fmt.Errorf("ollama model %q: no usable manifest %s: %w", ref.display(), filepath.Join(s.Root, rel), err)
	}
	digest, err := readModelDigest(manifest)
	if err != nil {
		return "", fmt.Errorf("ollama model %q: %w", ref.display(), err)
	}
	file, err := blobFileName(digest)
	if err != nil {
		return "", fmt.Errorf("ollama model %q: manifest %s: %w", ref.display(), manifest, err)
	}
	blob, err := Within(s.Root, filepath.Join("blobs", file))
	if err != nil {
		return "", fmt.Errorf("ollama model %q: blob of manifest %s: %w", ref.display(), manifest, err)
	}
	if err := requireRegular(blob); err != nil {
		return "", fmt.Errorf("ollama model %q: %w", ref.display(), err)
	}
	return blob, nil
}

// ollamaManifest is the part of an ollama manifest this package reads.
type ollamaManifest struct {
	SchemaVersion int    `json:"schemaVersion"`
	MediaType     string `json:"mediaType"`
	Layers        []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	} `json:"layers"`
}

// readModelDigest reads the manifest at path and returns the digest of its
// model layer.
func readModelDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, ollamaMaxManifest))
	if err != nil {
		return "", fmt.Errorf("read manifest %s: %w", path, err)
	}
	var m ollamaManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return "", fmt.Errorf("manifest %s is not valid JSON: %w", path, err)
	}
	for _, l := range m.Layers {
		if l.MediaType == ollamaModelMediaType {
			return l.Digest, nil
		}
	}
	return "", fmt.Errorf("manifest %s has no %s layer", path, ollamaModelMediaType)
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
