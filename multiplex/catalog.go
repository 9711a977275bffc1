package multiplex

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/llmux/llmux/llm"
)

// Kind tells a base model from a LoRA adapter.
type Kind string

const (
	// KindBase is a base model: a GGUF file the pool loads on its own.
	KindBase Kind = "base"
	// KindAdapter is a LoRA adapter applied on top of a loaded base model.
	KindAdapter Kind = "adapter"
)

// Sources of catalog entries, as found in Entry.Source.
const (
	// SourceConfig marks models from --model flags and the config file.
	SourceConfig = "config"
	// SourceModelsDir marks models found in a models directory.
	SourceModelsDir = "models-dir"
	// SourceOllama marks models found in the ollama model store.
	SourceOllama = "ollama"
	// SourceRuntime marks adapters registered while the server runs.
	SourceRuntime = "runtime"
)

// KV cache layouts a model may ask for in ModelConfig.KVLayout.
const (
	// KVLayoutUnified shares one KV cache between all slots.
	KVLayoutUnified = "unified"
	// KVLayoutPerSlot gives every slot its own KV cache.
	KVLayoutPerSlot = "per-slot"
)

// MaxNameLen is the longest servable name or alias, in bytes.
const MaxNameLen = 256

// ModelConfig is one entry of the config file's `models:` list (yaml keys
// snake_case, unknown keys are an error when decoding with yaml.v3's
// KnownFields).
type ModelConfig struct {
	Name     string               `yaml:"name"`
	Path     string               `yaml:"path"` // a GGUF file path, or an ollama model name[:tag] when Ollama lookup is on
	Aliases  []string             `yaml:"aliases"`
	Pinned   bool                 `yaml:"pinned"`    // loaded at start, never evicted
	CtxSize  int                  `yaml:"ctx_size"`  // 0: server default
	Parallel int                  `yaml:"parallel"`  // 0: server default
	KVLayout string               `yaml:"kv_layout"` // "": server default; "unified" or "per-slot"
	Adapters []AdapterConfig      `yaml:"adapters"`
	Sampling llm.SamplingDefaults `yaml:"sampling"` // defaults for requests that leave them out
	// ChatTemplate overrides the model's chat format: a family renderer's
	// name, "gguf" (the GGUF's own template, not the ollama store's),
	// "llama.cpp" (llama.cpp's heuristics), or a file in ollama's template
	// syntax (a path with a slash or a .tmpl/.gotmpl name).
	ChatTemplate string `yaml:"chat_template"`
	// ToolFormat is "" or "native" (the format's own tool syntax, where it
	// has one) or "generic" (llmux's JSON form under a grammar).
	ToolFormat string `yaml:"tool_format"`
}

// AdapterConfig is one LoRA adapter of a base model. Scale 0 means 1.
type AdapterConfig struct {
	Name  string  `yaml:"name"`
	Path  string  `yaml:"path"`
	Scale float64 `yaml:"scale"`
}

// Entry is one servable name, resolved.
type Entry struct {
	Name   string
	Kind   Kind
	Path   string      // cleaned absolute path of the GGUF (base model or adapter file), symlinks resolved
	Base   string      // adapters: the base entry's Name; bases: ""
	Scale  float32     // adapters: scale (default 1)
	Config ModelConfig // bases: the settings (Name filled in, Adapters cleared); adapters: zero value
	Source string      // "config" (flags and config file), "models-dir", "ollama", "runtime"
	// Ollama holds the chat layers of a base model served from ollama's
	// store (nil otherwise).
	Ollama *OllamaChat
}

// CatalogOptions lists where servable models come from.
type CatalogOptions struct {
	Models      []ModelConfig // explicit models from --model flags and the config file, in order
	ModelsDirs  []string      // every *.gguf directly inside each dir is a base model named after its file (name without .gguf)
	OllamaDir   string        // root of an ollama model store; "" or a missing dir: off. When present every model in it is servable by its ollama name
	AdapterDirs []string      // directories from which runtime-registered adapters may be loaded
}

// NotFoundError is returned for a name the catalog cannot resolve. Its
// message names only the requested model, never a file path, so it may be
// shown to clients.
type NotFoundError struct{ Name string }

// Error implements error.
func (e *NotFoundError) Error() string { return fmt.Sprintf("model %q does not exist", e.Name) }

// Catalog maps servable names (and aliases) to base models and adapters.
//
// A Catalog is safe for concurrent use: mu guards the maps and slices
// below it; adapterDirs and ollama are set by NewCatalog and never change.
type Catalog struct {
	adapterDirs []string
	ollama      *OllamaStore

	mu       sync.RWMutex
	bases    []string            // base names in Entries order
	entries  map[string]Entry    // name → entry (bases and adapters)
	keys     map[string]string   // every name and alias → entry name
	adapters map[string][]string // base name → its adapters' names, in order
	skipped  []string
}

// NewCatalog builds the catalog from explicit models, models directories
// and the ollama store, in that order, refusing invalid, duplicate and
// ambiguous names (see CatalogOptions for what each source contributes).
//
// Relative paths are taken relative to the working directory. An explicit
// entry silently hides a models-dir or ollama entry of the same name only
// when both name the very same file; any other duplicate is an error.
func NewCatalog(o CatalogOptions) (*Catalog, error) {
	c := &Catalog{
		adapterDirs: append([]string(nil), o.AdapterDirs...),
		entries:     map[string]Entry{},
		keys:        map[string]string{},
		adapters:    map[string][]string{},
	}
	store, err := openOllamaStore(o.OllamaDir)
	if err != nil {
		return nil, err
	}
	c.ollama = store

	for i, m := range o.Models {
		base, adapters, err := explicitEntries(m, store)
		if err != nil {
			return nil, fmt.Errorf("model %d (%s): %w", i+1, modelLabel(m), err)
		}
		if err := c.insert(base); err != nil {
			return nil, err
		}
		for _, a := range adapters {
			if err := c.insert(a); err != nil {
				return nil, err
			}
		}
	}
	for _, dir := range o.ModelsDirs {
		found, skipped, err := scanModelsDir(dir)
		if err != nil {
			return nil, err
		}
		c.skipped = append(c.skipped, skipped...)
		for _, e := range found {
			if err := c.insert(e); err != nil {
				return nil, err
			}
		}
	}
	if store != nil {
		models, skipped, err := store.list()
		if err != nil {
			return nil, err
		}
		c.skipped = append(c.skipped, skipped...)
		for _, m := range models {
			chat := m.Chat
			e := Entry{Name: m.Name, Kind: KindBase, Path: m.Path, Config: ModelConfig{Name: m.Name, Path: m.Path}, Source: SourceOllama, Ollama: &chat}
			e.Config.Sampling = withOllamaParams(e.Config.Sampling, chat)
			if err := c.insert(e); err != nil {
				return nil, err
			}
		}
	}
	if err := c.checkAmbiguity(); err != nil {
		return nil, err
	}
	return c, nil
}

// openOllamaStore returns the store at dir, or nil when dir is "" or
// missing.
func openOllamaStore(dir string) (*OllamaStore, error) {
	if dir == "" {
		return nil, nil
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ollama store %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("ollama store %q is not a directory", dir)
	}
	return &OllamaStore{Root: dir}, nil
}

// modelLabel names a config entry in error messages.
func modelLabel(m ModelConfig) string {
	if m.Name != "" {
		return fmt.Sprintf("name %q", m.Name)
	}
	return fmt.Sprintf("path %q", m.Path)
}

// explicitEntries checks one configured model and returns its base entry
// and its adapters' entries.
func explicitEntries(m ModelConfig, store *OllamaStore) (Entry, []Entry, error) {
	om, err := resolveModelPath(m.Path, store)
	if err != nil {
		return Entry{}, nil, err
	}
	path, ollamaName := om.Path, om.Name
	name := m.Name
	if name == "" {
		name = ollamaName
		if name == "" {
			name = fileStem(m.Path)
		}
	}
	if err := ValidateName(name); err != nil {
		return Entry{}, nil, err
	}
	for _, a := range m.Aliases {
		if err := ValidateName(a); err != nil {
			return Entry{}, nil, fmt.Errorf("alias: %w", err)
		}
	}
	if err := validateSettings(m); err != nil {
		return Entry{}, nil, err
	}
	cfg := m.clone()
	cfg.Name = name
	cfg.Adapters = nil
	base := Entry{Name: name, Kind: KindBase, Path: path, Config: cfg, Source: SourceConfig}
	if ollamaName != "" {
		chat := om.Chat
		base.Ollama = &chat
		base.Config.Sampling = withOllamaParams(base.Config.Sampling, chat)
	}
	var adapters []Entry
	for j, a := range m.Adapters {
		ap, err := resolveFile(a.Path)
		if err != nil {
			return Entry{}, nil, fmt.Errorf("adapter %d: %w", j+1, err)
		}
		e, err := adapterEntry(name, a, ap, SourceConfig)
		if err != nil {
			return Entry{}, nil, fmt.Errorf("adapter %d: %w", j+1, err)
		}
		adapters = append(adapters, e)
	}
	return base, adapters, nil
}

// adapterEntry builds the entry of adapter a of base, whose file is at the
// resolved path.
func adapterEntry(base string, a AdapterConfig, path, source string) (Entry, error) {
	name := a.Name
	if name == "" {
		name = fileStem(a.Path)
	}
	if err := ValidateName(name); err != nil {
		return Entry{}, err
	}
	scale, err := adapterScale(a.Scale)
	if err != nil {
		return Entry{}, fmt.Errorf("adapter %q: %w", name, err)
	}
	return Entry{Name: name, Kind: KindAdapter, Path: path, Base: base, Scale: scale, Source: source}, nil
}

// adapterScale maps a configured scale to the one applied: 0 means 1.
func adapterScale(s float64) (float32, error) {
	if math.IsNaN(s) || math.IsInf(s, 0) || math.Abs(s) > math.MaxFloat32 {
		return 0, fmt.Errorf("scale %v is not a finite float32", s)
	}
	if s == 0 {
		return 1, nil
	}
	return float32(s), nil
}

// validateSettings checks the per-model settings that have a fixed range.
func validateSettings(m ModelConfig) error {
	switch {
	case m.CtxSize < 0:
		return fmt.Errorf("ctx_size %d is negative", m.CtxSize)
	case m.Parallel < 0:
		return fmt.Errorf("parallel %d is negative", m.Parallel)
	}
	switch m.KVLayout {
	case "", KVLayoutUnified, KVLayoutPerSlot:
	default:
		return fmt.Errorf("kv_layout %q: want %q or %q", m.KVLayout, KVLayoutUnified, KVLayoutPerSlot)
	}
	switch m.ToolFormat {
	case "", "native", "generic":
	default:
		return fmt.Errorf("tool_format %q: want \"native\" or \"generic\"", m.ToolFormat)
	}
	s := m.Sampling
	switch {
	case s.Temperature != nil && !(*s.Temperature >= 0):
		return fmt.Errorf("sampling.temperature %v: want >= 0", *s.Temperature)
	case s.TopP != nil && !(*s.TopP >= 0 && *s.TopP <= 1):
		return fmt.Errorf("sampling.top_p %v: want 0..1", *s.TopP)
	case s.TopK != nil && *s.TopK < 0:
		return fmt.Errorf("sampling.top_k %d: want >= 0", *s.TopK)
	case s.MinP != nil && !(*s.MinP >= 0 && *s.MinP <= 1):
		return fmt.Errorf("sampling.min_p %v: want 0..1", *s.MinP)
	case s.MaxTokens != nil && *s.MaxTokens < 0:
		return fmt.Errorf("sampling.max_tokens %d: want >= 0", *s.MaxTokens)
	}
	return nil
}

// resolveModelPath resolves a configured model path: an existing regular
// file, or else, when p looks like an ollama model name, the blob the
// ollama store holds for it. ollamaName is the store's name for the model
// when it came from the store.
func resolveModelPath(p string, store *OllamaStore) (OllamaModel, error) {
	path, err := resolveFile(p)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !looksLikeOllamaName(p) {
		return OllamaModel{Path: path}, err
	}
	if store == nil {
		return OllamaModel{}, fmt.Errorf("path %q is not an existing file, and ollama lookup is off (no ollama store configured or found)", p)
	}
	ref, perr := parseOllamaName(p)
	if perr != nil {
		return OllamaModel{}, fmt.Errorf("path %q is not an existing file: %w", p, perr)
	}
	m, lerr := store.lookupRef(ref)
	if lerr != nil {
		return OllamaModel{}, fmt.Errorf("path %q is not an existing file, and not in the ollama store %q: %w", p, store.Root, lerr)
	}
	return m, nil
}

// withOllamaParams fills the sampling defaults a store model's params
// layer sets where the config leaves them unset (the config wins). A
// params layer that cannot be read leaves the defaults as they are; the
// chat format's choice reports it.
func withOllamaParams(d llm.SamplingDefaults, c OllamaChat) llm.SamplingDefaults {
	p, err := c.ReadParams()
	if err != nil {
		return d
	}
	if d.Temperature == nil {
		d.Temperature = p.Temperature
	}
	if d.TopP == nil {
		d.TopP = p.TopP
	}
	if d.TopK == nil {
		d.TopK = p.TopK
	}
	if d.MinP == nil {
		d.MinP = p.MinP
	}
	if d.MaxTokens == nil {
		d.MaxTokens = p.NumPredict
	}
	return d
}

// looksLikeOllamaName reports whether a configured path that is not a file
// should be looked up as an ollama name: a relative name without a .gguf
// suffix, backslashes or dot elements, that parses as
// [[host/]namespace/]model[:tag].
func looksLikeOllamaName(p string) bool {
	if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "~") || strings.ContainsRune(p, '\\') {
		return false
	}
	if strings.HasSuffix(strings.ToLower(p), ".gguf") {
		return false
	}
	_, err := parseOllamaName(p)
	return err == nil
}

// resolveFile returns the absolute, symlink-resolved path of the regular
// file p.
func resolveFile(p string) (string, error) {
	if p == "" {
		return "", errors.New("no path given")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", p, err)
	}
	if err := requireRegular(real); err != nil {
		return "", fmt.Errorf("path %q: %w", p, err)
	}
	return real, nil
}

// fileStem is the base name of p without a .gguf suffix.
func fileStem(p string) string {
	return strings.TrimSuffix(filepath.Base(p), ".gguf")
}

// scanModelsDir returns a base entry for every regular *.gguf file directly
// inside dir, in file name order, and the reasons for the ones skipped.
func scanModelsDir(dir string) (found []Entry, skipped []string, err error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("models dir %q: %w", dir, err)
	}
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, ".gguf") {
			continue
		}
		path, err := Within(dir, n)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("models dir %s: skipped %s: %v", dir, n, err))
			continue
		}
		if err := requireRegular(path); err != nil {
			skipped = append(skipped, fmt.Sprintf("models dir %s: skipped %s: %v", dir, n, err))
			continue
		}
		name := strings.TrimSuffix(n, ".gguf")
		if err := ValidateName(name); err != nil {
			skipped = append(skipped, fmt.Sprintf("models dir %s: skipped %s: %v", dir, n, err))
			continue
		}
		found = append(found, Entry{
			Name: name, Kind: KindBase, Path: path,
			Config: ModelConfig{Name: name, Path: path}, Source: SourceModelsDir,
		})
	}
	return found, skipped, nil
}

// ValidateName checks a servable name or alias: 1..MaxNameLen bytes of
// printable UTF-8 without whitespace, not starting with '/' and without
// "..".
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty model name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("model name %.40q... is %d bytes, longer than %d", name, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("model name %q is not valid UTF-8", name)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("model name %q starts with '/'", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("model name %q contains \"..\"", name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("model name %q contains whitespace or an unprintable character", name)
		}
	}
	return nil
}

// keysOf lists the names under which e is reachable exactly.
func keysOf(e Entry) []string {
	if e.Kind == KindBase {
		return append([]string{e.Name}, e.Config.Aliases...)
	}
	return []string{e.Name}
}

// insert adds e unless a config entry for the very same file already holds
// its name; any other clash is an error naming both entries. The caller
// holds mu or owns c exclusively.
func (c *Catalog) insert(e Entry) error {
	ks := keysOf(e)
	for i, k := range ks {
		if slicesIndex(ks[:i], k) >= 0 {
			return fmt.Errorf("%s entry %q lists the name %q twice", e.Source, e.Name, k)
		}
		owner, taken := c.keys[k]
		if !taken {
			continue
		}
		prev := c.entries[owner]
		if e.Source != SourceConfig && prev.Source == SourceConfig && e.Kind == KindBase && prev.Kind == KindBase && prev.Path == e.Path && len(ks) == 1 {
			return nil // the operator configured this very file explicitly
		}
		return fmt.Errorf("name %q is claimed twice: by %s entry %q (%s) and by %s entry %q (%s)",
			k, prev.Source, prev.Name, prev.Path, e.Source, e.Name, e.Path)
	}
	for _, k := range ks {
		c.keys[k] = e.Name
	}
	c.entries[e.Name] = e
	if e.Kind == KindBase {
		c.bases = append(c.bases, e.Name)
	} else {
		c.adapters[e.Base] = append(c.adapters[e.Base], e.Name)
	}
	return nil
}

// slicesIndex returns the index of v in s, or -1.
func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// checkAmbiguity refuses every exact name "X:Y" that also reads as base X
// with its adapter Y. The caller holds mu or owns c exclusively.
func (c *Catalog) checkAmbiguity() error {
	ks := make([]string, 0, len(c.keys))
	for k := range c.keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		if err := c.ambiguous(k); err != nil {
			return err
		}
	}
	return nil
}

// ambiguous returns an error when the exact name k also splits at its last
// ':' into a base and one of that base's adapters.
func (c *Catalog) ambiguous(k string) error {
	i := strings.LastIndexByte(k, ':')
	if i < 0 {
		return nil
	}
	base, ok := c.baseOf(k[:i])
	if !ok {
		return nil
	}
	if a, ok := c.adapterOf(base.Name, k[i+1:]); ok {
		return fmt.Errorf("name %q is ambiguous: it names %s entry %q and also base %q with adapter %q",
			k, c.entries[c.keys[k]].Source, c.keys[k], base.Name, a.Name)
	}
	return nil
}

// baseOf returns the base model reachable exactly by name or alias k.
func (c *Catalog) baseOf(k string) (Entry, bool) {
	name, ok := c.keys[k]
	if !ok {
		return Entry{}, false
	}
	e := c.entries[name]
	return e, e.Kind == KindBase
}

// adapterOf returns the adapter called name of base.
func (c *Catalog) adapterOf(base, name string) (Entry, bool) {
	e, ok := c.entries[name]
	if !ok || e.Kind != KindAdapter || e.Base != base {
		return Entry{}, false
	}
	return e, true
}

// Resolve maps a requested model name to the base model to run and, for an
// adapter, the adapter to apply. In order: an exact name or alias
// (case-sensitive; an adapter's own name gives its base and the adapter);
// then BASE:ADAPTER split at the last ':'; then, for a name without ':',
// name+":latest". Anything else is a *NotFoundError.
func (c *Catalog) Resolve(name string) (base Entry, adapter *Entry, err error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if b, a, ok := c.exact(name); ok {
		return b, a, nil
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		if b, ok := c.baseOf(name[:i]); ok {
			if a, ok := c.adapterOf(b.Name, name[i+1:]); ok {
				return cloneEntry(b), &a, nil
			}
		}
	} else if b, a, ok := c.exact(name + ":" + ollamaDefaultTag); ok {
		return b, a, nil
	}
	return Entry{}, nil, &NotFoundError{Name: name}
}

// exact resolves a name or alias exactly. The caller holds mu.
func (c *Catalog) exact(k string) (Entry, *Entry, bool) {
	name, ok := c.keys[k]
	if !ok {
		return Entry{}, nil, false
	}
	e := c.entries[name]
	if e.Kind == KindBase {
		return cloneEntry(e), nil, true
	}
	b, ok := c.entries[e.Base]
	if !ok {
		return Entry{}, nil, false
	}
	return cloneEntry(b), &e, true
}

// Entries returns every servable name: explicit models in order (each base
// followed by its adapters), then models-dir, then ollama. Runtime adapters
// follow their base's other adapters. The order is deterministic.
func (c *Catalog) Entries() []Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Entry, 0, len(c.entries))
	for _, b := range c.bases {
		out = append(out, cloneEntry(c.entries[b]))
		for _, a := range c.adapters[b] {
			out = append(out, c.entries[a])
		}
	}
	return out
}

// Adapter returns the adapter entry called name (its own name, exactly).
func (c *Catalog) Adapter(name string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[name]
	return e, ok && e.Kind == KindAdapter
}

// RuntimeAdapters tells whether adapters may be registered at run time
// (CatalogOptions.AdapterDirs is set).
func (c *Catalog) RuntimeAdapters() bool { return len(c.adapterDirs) > 0 }

// Base returns the base model reachable exactly by name or alias.
func (c *Catalog) Base(name string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.baseOf(name)
	if !ok {
		return Entry{}, false
	}
	return cloneEntry(e), true
}

// Skipped returns why each models-dir file or ollama manifest that was
// passed over was skipped, in discovery order.
func (c *Catalog) Skipped() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]string(nil), c.skipped...)
}

// AddAdapter registers adapter a of the base model called base (a name or
// alias) while the server runs. a.Path, relative to an adapter directory
// or absolute, must resolve (symlinks included) to a regular file inside
// one of CatalogOptions.AdapterDirs. An empty a.Name means the file name
// without .gguf. The name must be valid, not yet taken, and must not make
// any name ambiguous.
func (c *Catalog) AddAdapter(base string, a AdapterConfig) (Entry, error) {
	if len(c.adapterDirs) == 0 {
		return Entry{}, errors.New("add adapter: runtime registration is off (no adapter directories configured)")
	}
	path, err := c.adapterPath(a.Path)
	if err != nil {
		return Entry{}, fmt.Errorf("add adapter: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.baseOf(base)
	if !ok {
		if _, exists := c.keys[base]; exists {
			return Entry{}, fmt.Errorf("add adapter: %q is an adapter, not a base model", base)
		}
		return Entry{}, &NotFoundError{Name: base}
	}
	e, err := adapterEntry(b.Name, a, path, SourceRuntime)
	if err != nil {
		return Entry{}, fmt.Errorf("add adapter: %w", err)
	}
	if owner, taken := c.keys[e.Name]; taken {
		return Entry{}, fmt.Errorf("add adapter: name %q is already taken by %s entry %q", e.Name, c.entries[owner].Source, owner)
	}
	for _, k := range keysOf(b) {
		if owner, taken := c.keys[k+":"+e.Name]; taken {
			return Entry{}, fmt.Errorf("add adapter: %q would be ambiguous: %q already names %s entry %q",
				e.Name, k+":"+e.Name, c.entries[owner].Source, owner)
		}
	}
	if err := c.insert(e); err != nil {
		return Entry{}, fmt.Errorf("add adapter: %w", err)
	}
	if err := c.ambiguous(e.Name); err != nil {
		c.remove(e)
		return Entry{}, fmt.Errorf("add adapter: %w", err)
	}
	return e, nil
}

// adapterPath confines a runtime adapter path to the adapter directories
// and returns the resolved regular file.
func (c *Catalog) adapterPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("no adapter path given")
	}
	var errs []error
	for _, dir := range c.adapterDirs {
		path, err := Within(dir, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := requireRegular(path); err != nil {
			return "", fmt.Errorf("adapter path %q: %w", p, err)
		}
		return path, nil
	}
	return "", fmt.Errorf("adapter path %q is not a file inside the adapter directories: %w", p, errors.Join(errs...))
}

// RemoveAdapter unregisters the adapter called name, whether it came from
// the configuration or was registered at runtime, and returns its entry.
func (c *Catalog) RemoveAdapter(name string) (Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	if !ok {
		return Entry{}, &NotFoundError{Name: name}
	}
	if e.Kind != KindAdapter {
		return Entry{}, fmt.Errorf("remove adapter: %q is a base model, not an adapter", name)
	}
	c.remove(e)
	return e, nil
}

// remove deletes adapter e. The caller holds mu.
func (c *Catalog) remove(e Entry) {
	delete(c.entries, e.Name)
	delete(c.keys, e.Name)
	list := c.adapters[e.Base]
	if i := slicesIndex(list, e.Name); i >= 0 {
		c.adapters[e.Base] = append(list[:i:i], list[i+1:]...)
	}
}

// clone copies m deeply enough that the copy shares no memory with m.
func (m ModelConfig) clone() ModelConfig {
	out := m
	out.Aliases = append([]string(nil), m.Aliases...)
	out.Adapters = append([]AdapterConfig(nil), m.Adapters...)
	if c := m.Sampling.Clone(); c != nil {
		out.Sampling = *c
	}
	return out
}

// cloneEntry copies e so callers cannot reach the catalog's memory.
func cloneEntry(e Entry) Entry {
	e.Config = e.Config.clone()
	if e.Ollama != nil {
		c := *e.Ollama
		e.Ollama = &c
	}
	return e
}
