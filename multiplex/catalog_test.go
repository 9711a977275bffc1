package multiplex

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/llmux/llmux/llm"
)

// catalogFixture lays out explicit model files, a models dir and an
// adapter dir under one temp dir.
type catalogFixture struct {
	dir, models, adapters string
}

func newCatalogFixture(t *testing.T) catalogFixture {
	t.Helper()
	dir := realDir(t, t.TempDir())
	f := catalogFixture{dir: dir, models: filepath.Join(dir, "models"), adapters: filepath.Join(dir, "loras")}
	writeFile(t, filepath.Join(dir, "explicit", "qwen.gguf"), "q")
	writeFile(t, filepath.Join(dir, "explicit", "sql-lora.gguf"), "l")
	writeFile(t, filepath.Join(dir, "explicit", "chat-lora.gguf"), "l")
	writeFile(t, filepath.Join(f.models, "gemma.gguf"), "g")
	writeFile(t, filepath.Join(f.models, "mistral.gguf"), "m")
	writeFile(t, filepath.Join(f.models, "README.md"), "not a model")
	writeFile(t, filepath.Join(f.models, "nested", "deep.gguf"), "not direct")
	writeFile(t, filepath.Join(f.adapters, "pirate.gguf"), "p")
	writeFile(t, filepath.Join(dir, "elsewhere", "outside.gguf"), "o")
	symlink(t, filepath.Join(dir, "elsewhere", "outside.gguf"), filepath.Join(f.models, "escape.gguf"))
	symlink(t, filepath.Join(f.models, "gemma.gguf"), filepath.Join(f.models, "gemma-link.gguf"))
	symlink(t, filepath.Join(dir, "elsewhere", "outside.gguf"), filepath.Join(f.adapters, "escape.gguf"))
	return f
}

func (f catalogFixture) path(rel string) string { return filepath.Join(f.dir, rel) }

func (f catalogFixture) options() CatalogOptions {
	return CatalogOptions{
		Models: []ModelConfig{{
			Path:    f.path("explicit/qwen.gguf"),
			Aliases: []string{"gpt-4o"},
			Adapters: []AdapterConfig{
				{Name: "sql", Path: f.path("explicit/sql-lora.gguf"), Scale: 0.5},
				{Path: f.path("explicit/chat-lora.gguf")},
			},
		}},
		ModelsDirs:  []string{f.models},
		AdapterDirs: []string{f.adapters},
	}
}

func TestCatalogEntries(t *testing.T) {
	f := newCatalogFixture(t)
	c, err := NewCatalog(f.options())
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name   string
		Kind   Kind
		Path   string
		Base   string
		Scale  float32
		Source string
	}
	var got []row
	for _, e := range c.Entries() {
		got = append(got, row{e.Name, e.Kind, e.Path, e.Base, e.Scale, e.Source})
	}
	want := []row{
		{"qwen", KindBase, f.path("explicit/qwen.gguf"), "", 0, SourceConfig},
		{"sql", KindAdapter, f.path("explicit/sql-lora.gguf"), "qwen", 0.5, SourceConfig},
		{"chat-lora", KindAdapter, f.path("explicit/chat-lora.gguf"), "qwen", 1, SourceConfig},
		{"gemma-link", KindBase, f.path("models/gemma.gguf"), "", 0, SourceModelsDir}, // file name order: '-' < '.'
		{"gemma", KindBase, f.path("models/gemma.gguf"), "", 0, SourceModelsDir},
		{"mistral", KindBase, f.path("models/mistral.gguf"), "", 0, SourceModelsDir},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Entries:\n got %v\nwant %v", got, want)
	}
	if e, _ := c.Base("qwen"); e.Config.Name != "qwen" || e.Config.Adapters != nil || !reflect.DeepEqual(e.Config.Aliases, []string{"gpt-4o"}) {
		t.Errorf("qwen Config = %+v; want Name filled, Adapters cleared, aliases kept", e.Config)
	}
	skipped := strings.Join(c.Skipped(), "\n")
	if !strings.Contains(skipped, "escape.gguf") || !strings.Contains(skipped, "not inside") {
		t.Errorf("Skipped() = %q; want the escaping symlink with its reason", skipped)
	}
	if strings.Contains(skipped, "README") || strings.Contains(skipped, "deep") {
		t.Errorf("Skipped() = %q; non-gguf files and subdirectories are ignored silently", skipped)
	}
}

func TestCatalogResolve(t *testing.T) {
	f := newCatalogFixture(t)
	opts := f.options()
	writeFile(t, f.path("explicit/llama.gguf"), "l")
	opts.Models = append(opts.Models, ModelConfig{Name: "llama:latest", Path: f.path("explicit/llama.gguf")})
	c, err := NewCatalog(opts)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, wantBase, wantAdapter string // wantBase "" means not found
	}{
		{"qwen", "qwen", ""},
		{"gpt-4o", "qwen", ""},
		{"sql", "qwen", "sql"},
		{"qwen:sql", "qwen", "sql"},
		{"gpt-4o:sql", "qwen", "sql"},
		{"qwen:chat-lora", "qwen", "chat-lora"},
		{"gemma:sql", "", ""},
		{"llama", "llama:latest", ""},
		{"llama:latest", "llama:latest", ""},
		{"llama:q4", "", ""},
		{"Qwen", "", ""},
		{"qwen:", "", ""},
		{"nested/deep", "", ""},
		{f.path("explicit/qwen.gguf"), "", ""},
	}
	for _, tc := range tests {
		base, adapter, err := c.Resolve(tc.name)
		gotAdapter := ""
		if adapter != nil {
			gotAdapter = adapter.Name
		}
		if tc.wantBase == "" {
			var nf *NotFoundError
			if !errors.As(err, &nf) || nf.Name != tc.name {
				t.Errorf("Resolve(%q) = %q, %q, %v; want *NotFoundError", tc.name, base.Name, gotAdapter, err)
			}
			continue
		}
		if err != nil || base.Name != tc.wantBase || gotAdapter != tc.wantAdapter {
			t.Errorf("Resolve(%q) = %q, %q, %v; want %q, %q", tc.name, base.Name, gotAdapter, err, tc.wantBase, tc.wantAdapter)
		}
	}
}

func TestNotFoundErrorMessage(t *testing.T) {
	f := newCatalogFixture(t)
	c, err := NewCatalog(f.options())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Resolve("nope")
	if got, want := err.Error(), `model "nope" does not exist`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	if strings.Contains(err.Error(), f.dir) {
		t.Errorf("error %q leaks a file path", err)
	}
}

func TestCatalogErrors(t *testing.T) {
	f := newCatalogFixture(t)
	writeFile(t, f.path("other/gemma.gguf"), "another gemma")
	writeFile(t, f.path("models2/mistral.gguf"), "another mistral")
	writeFile(t, f.path("explicit/a:b.gguf"), "x")
	qwen := f.path("explicit/qwen.gguf")
	tests := []struct {
		name    string
		opts    CatalogOptions
		wantErr string
	}{
		{"explicit duplicate name", CatalogOptions{Models: []ModelConfig{{Name: "m", Path: qwen}, {Name: "m", Path: qwen}}}, `"m" is claimed twice`},
		{"alias clashing with a name", CatalogOptions{Models: []ModelConfig{{Name: "m", Path: qwen}, {Name: "n", Path: qwen, Aliases: []string{"m"}}}}, `"m" is claimed twice`},
		{"alias repeating its own name", CatalogOptions{Models: []ModelConfig{{Name: "m", Path: qwen, Aliases: []string{"m"}}}}, "twice"},
		{"adapter clashing with a base", CatalogOptions{Models: []ModelConfig{{Name: "m", Path: qwen, Adapters: []AdapterConfig{{Name: "m", Path: qwen}}}}}, "claimed twice"},
		{"explicit name on another file than models-dir", CatalogOptions{
			Models: []ModelConfig{{Path: f.path("other/gemma.gguf")}}, ModelsDirs: []string{f.models},
		}, "config entry \"gemma\""},
		{"two models dirs with one name", CatalogOptions{ModelsDirs: []string{f.models, f.path("models2")}}, "models-dir entry \"mistral\""},
		{"X:Y also base X with adapter Y", CatalogOptions{Models: []ModelConfig{
			{Name: "a", Path: qwen, Adapters: []AdapterConfig{{Name: "b", Path: qwen}}},
			{Path: f.path("explicit/a:b.gguf")},
		}}, `"a:b" is ambiguous`},
		{"missing file", CatalogOptions{Models: []ModelConfig{{Path: f.path("explicit/none.gguf")}}}, "no such file"},
		{"a directory is not a model", CatalogOptions{Models: []ModelConfig{{Name: "d", Path: f.models}}}, "not a regular file"},
		{"missing adapter file", CatalogOptions{Models: []ModelConfig{{Path: qwen, Adapters: []AdapterConfig{{Path: f.path("none.gguf")}}}}}, "adapter 1"},
		{"ollama name with ollama off", CatalogOptions{Models: []ModelConfig{{Path: "llama3:8b"}}}, "ollama lookup is off"},
		{"missing models dir", CatalogOptions{ModelsDirs: []string{f.path("nowhere")}}, "models dir"},
		{"bad kv layout", CatalogOptions{Models: []ModelConfig{{Path: qwen, KVLayout: "paged"}}}, "kv_layout"},
		{"negative ctx size", CatalogOptions{Models: []ModelConfig{{Path: qwen, CtxSize: -1}}}, "ctx_size"},
		{"bad top_p", CatalogOptions{Models: []ModelConfig{{Path: qwen, Sampling: llm.SamplingDefaults{TopP: ptr(1.5)}}}}, "top_p"},
		{"bad name", CatalogOptions{Models: []ModelConfig{{Name: "has space", Path: qwen}}}, "whitespace"},
		{"bad alias", CatalogOptions{Models: []ModelConfig{{Path: qwen, Aliases: []string{"../x"}}}}, "alias"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCatalog(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewCatalog = %v, %v; want an error containing %q", c, err, tc.wantErr)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestCatalogExplicitShadowsSameFile(t *testing.T) {
	f := newCatalogFixture(t)
	opts := CatalogOptions{
		Models:     []ModelConfig{{Path: f.path("models/gemma.gguf"), CtxSize: 4096}},
		ModelsDirs: []string{f.models},
	}
	c, err := NewCatalog(opts)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range c.Entries() {
		names = append(names, e.Name+"/"+e.Source)
	}
	want := []string{"gemma/config", "gemma-link/models-dir", "mistral/models-dir"} // models-dir's gemma is hidden
	if !reflect.DeepEqual(names, want) {
		t.Errorf("entries = %v, want %v", names, want)
	}
	if e, _ := c.Base("gemma"); e.Config.CtxSize != 4096 {
		t.Errorf("gemma ctx_size = %d, want the explicit 4096", e.Config.CtxSize)
	}
}

func TestCatalogOllama(t *testing.T) {
	f := newCatalogFixture(t)
	store, blobs := ollamaFixture(t)
	opts := CatalogOptions{
		Models:    []ModelConfig{{Path: "llama3", Parallel: 2}, {Name: "tiny", Path: "alice/tiny:v1"}},
		OllamaDir: store,
	}
	c, err := NewCatalog(opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.Entries() {
		got = append(got, fmt.Sprintf("%s/%s", e.Name, e.Source))
	}
	want := []string{"llama3:latest/config", "tiny/config", "alice/tiny:v1/ollama", "hf.co/bob/phi:q8/ollama", "llama3:8b-q4/ollama"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries:\n got %v\nwant %v", got, want)
	}
	for _, tc := range []struct{ name, wantPath string }{
		{"llama3", blobs["a"]}, {"llama3:8b-q4", blobs["b"]}, {"tiny", blobs["d"]}, {"hf.co/bob/phi:q8", blobs["e"]},
	} {
		base, _, err := c.Resolve(tc.name)
		if err != nil || base.Path != tc.wantPath {
			t.Errorf("Resolve(%q) = %q, %v; want path %q", tc.name, base.Path, err, tc.wantPath)
		}
	}
	if e, _ := c.Base("llama3:latest"); e.Config.Parallel != 2 {
		t.Errorf("llama3:latest parallel = %d, want the explicit 2", e.Config.Parallel)
	}
	if len(c.Skipped()) == 0 {
		t.Error("Skipped() is empty; want the fixture's broken manifests")
	}

	_, err = NewCatalog(CatalogOptions{Models: []ModelConfig{{Path: "llama3:70b"}}, OllamaDir: store})
	if err == nil || !strings.Contains(err.Error(), "not in the ollama store") || !strings.Contains(err.Error(), filepath.Join("library", "llama3", "70b")) {
		t.Errorf("missing ollama model: err = %v; want one naming the store and the manifest searched", err)
	}
	off, err := NewCatalog(CatalogOptions{ModelsDirs: []string{f.models}, OllamaDir: f.path("no-ollama-here")})
	if err != nil || len(off.Entries()) != 3 {
		t.Errorf("missing ollama dir: %v; want lookup off and no error", err)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"llama3", true},
		{"hf.co/bob/phi:q8", true},
		{"qwen2.5-7b:lora_1", true},
		{"ünïcode", true},
		{strings.Repeat("x", MaxNameLen), true},
		{strings.Repeat("x", MaxNameLen+1), false},
		{"", false},
		{"a b", false},
		{"tab\there", false},
		{"/abs", false},
		{"a/../b", false},
		{"a..b", false},
		{"ctrl\x01", false},
		{"bad\xffutf8", false},
	}
	for _, tc := range tests {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%.20q) = %v; want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestCatalogAddRemoveAdapter(t *testing.T) {
	f := newCatalogFixture(t)
	opts := f.options()
	writeFile(t, f.path("explicit/x.gguf"), "x")
	opts.Models = append(opts.Models, ModelConfig{Name: "gemma:pirate2", Path: f.path("explicit/x.gguf")})
	c, err := NewCatalog(opts)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.AddAdapter("gemma", AdapterConfig{Path: "pirate.gguf", Scale: 2})
	want := Entry{Name: "pirate", Kind: KindAdapter, Path: filepath.Join(f.adapters, "pirate.gguf"), Base: "gemma", Scale: 2, Source: SourceRuntime}
	if err != nil || !reflect.DeepEqual(e, want) {
		t.Fatalf("AddAdapter = %+v, %v; want %+v", e, err, want)
	}
	if base, a, err := c.Resolve("gemma:pirate"); err != nil || base.Name != "gemma" || a == nil || a.Name != "pirate" {
		t.Errorf("Resolve(gemma:pirate) = %q, %v, %v", base.Name, a, err)
	}

	refused := []struct {
		name, base string
		a          AdapterConfig
		wantErr    string
	}{
		{"name taken", "mistral", AdapterConfig{Path: "pirate.gguf"}, "already taken"},
		{"name taken by a base", "mistral", AdapterConfig{Name: "qwen", Path: "pirate.gguf"}, "already taken"},
		{"would be ambiguous", "gemma", AdapterConfig{Name: "pirate2", Path: "pirate.gguf"}, "ambiguous"},
		{"own name ambiguous", "mistral", AdapterConfig{Name: "qwen:sql", Path: "pirate.gguf"}, "ambiguous"},
		{"path outside the adapter dirs", "gemma", AdapterConfig{Name: "p3", Path: f.path("explicit/sql-lora.gguf")}, "not a file inside"},
		{"traversal", "gemma", AdapterConfig{Name: "p3", Path: "../explicit/sql-lora.gguf"}, "not a file inside"},
		{"symlink escape", "gemma", AdapterConfig{Name: "p3", Path: "escape.gguf"}, "not a file inside"},
		{"bad name", "gemma", AdapterConfig{Name: "a b", Path: "pirate.gguf"}, "whitespace"},
		{"base is an adapter", "sql", AdapterConfig{Name: "p3", Path: "pirate.gguf"}, "not a base model"},
		{"unknown base", "nope", AdapterConfig{Name: "p3", Path: "pirate.gguf"}, `model "nope" does not exist`},
	}
	for _, tc := range refused {
		if e, err := c.AddAdapter(tc.base, tc.a); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: AddAdapter = %+v, %v; want an error containing %q", tc.name, e, err, tc.wantErr)
		}
	}

	if e, err := c.RemoveAdapter("sql"); err != nil || e.Name != "sql" || e.Base != "qwen" {
		t.Errorf("RemoveAdapter(sql) = %+v, %v", e, err)
	}
	if _, _, err := c.Resolve("qwen:sql"); err == nil {
		t.Error("qwen:sql still resolves after removal")
	}
	if _, err := c.RemoveAdapter("qwen"); err == nil || !strings.Contains(err.Error(), "base model") {
		t.Errorf("RemoveAdapter(base) err = %v; want refusal", err)
	}
	var nf *NotFoundError
	if _, err := c.RemoveAdapter("sql"); !errors.As(err, &nf) {
		t.Errorf("second RemoveAdapter(sql) err = %v; want *NotFoundError", err)
	}
	var names []string
	for _, e := range c.Entries() {
		names = append(names, e.Name)
	}
	wantNames := []string{"qwen", "chat-lora", "gemma:pirate2", "gemma-link", "gemma", "pirate", "mistral"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("entries after add/remove = %v, want %v", names, wantNames)
	}

	off, err := NewCatalog(CatalogOptions{ModelsDirs: []string{f.models}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := off.AddAdapter("gemma", AdapterConfig{Path: "pirate.gguf"}); err == nil || !strings.Contains(err.Error(), "off") {
		t.Errorf("AddAdapter without adapter dirs err = %v; want registration off", err)
	}
}

func TestCatalogConcurrentUse(t *testing.T) {
	f := newCatalogFixture(t)
	c, err := NewCatalog(f.options())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if g == 0 {
					name := fmt.Sprintf("p%d", i)
					if _, err := c.AddAdapter("gemma", AdapterConfig{Name: name, Path: "pirate.gguf"}); err != nil {
						t.Error(err)
						return
					}
					if _, err := c.RemoveAdapter(name); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if _, _, err := c.Resolve("qwen:sql"); err != nil {
					t.Error(err)
					return
				}
				_ = c.Entries()
			}
		}(g)
	}
	wg.Wait()
}

func TestEntriesDoNotShareMemory(t *testing.T) {
	f := newCatalogFixture(t)
	opts := f.options()
	opts.Models[0].Sampling.Temperature = ptr(0.7)
	c, err := NewCatalog(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := c.Entries()[0]
	e.Config.Aliases[0] = "changed"
	*e.Config.Sampling.Temperature = 2
	again, _ := c.Base("qwen")
	if again.Config.Aliases[0] != "gpt-4o" || *again.Config.Sampling.Temperature != 0.7 {
		t.Errorf("mutating a returned entry changed the catalog: %+v", again.Config)
	}
}

func TestModelConfigYAML(t *testing.T) {
	doc := `
models:
  - name: qwen
    path: /m/qwen.gguf
    aliases: [gpt-4o]
    pinned: true
    ctx_size: 8192
    parallel: 4
    kv_layout: per-slot
    adapters:
      - {name: sql, path: /m/sql.gguf, scale: 0.5}
    sampling: {temperature: 0.2, top_p: 0.9, top_k: 40, min_p: 0.05, max_tokens: 512}
`
	var cfg struct {
		Models []ModelConfig `yaml:"models"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	want := ModelConfig{
		Name: "qwen", Path: "/m/qwen.gguf", Aliases: []string{"gpt-4o"}, Pinned: true, CtxSize: 8192, Parallel: 4,
		KVLayout: "per-slot", Adapters: []AdapterConfig{{Name: "sql", Path: "/m/sql.gguf", Scale: 0.5}},
		Sampling: llm.SamplingDefaults{Temperature: ptr(0.2), TopP: ptr(0.9), TopK: ptr(40), MinP: ptr(0.05), MaxTokens: ptr(512)},
	}
	if len(cfg.Models) != 1 || !reflect.DeepEqual(cfg.Models[0], want) {
		t.Errorf("decoded %+v, want %+v", cfg.Models, want)
	}

	dec = yaml.NewDecoder(bytes.NewReader([]byte("models:\n  - name: q\n    ctxsize: 1\n")))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil || !strings.Contains(err.Error(), "ctxsize") {
		t.Errorf("unknown key: err = %v; want one naming ctxsize", err)
	}
}
