package multiplex

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// digestOf returns a fake sha256 hex digest made of the character c.
func digestOf(c byte) string { return strings.Repeat(string(c), 64) }

// writeManifest writes an ollama manifest whose layers have the given
// media types and digests.
func writeManifest(t *testing.T, root, rel string, layers ...[2]string) {
	t.Helper()
	var ls []string
	for _, l := range layers {
		ls = append(ls, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":1}`, l[0], l[1]))
	}
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",`+
		`"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:%s","size":1},"layers":[%s]}`,
		digestOf('c'), strings.Join(ls, ","))
	writeFile(t, filepath.Join(root, "manifests", rel), body)
}

// ollamaFixture builds a store with models on the default host and
// namespace, another namespace, another host, and broken manifests.
func ollamaFixture(t *testing.T) (root string, blobs map[string]string) {
	t.Helper()
	root = realDir(t, t.TempDir())
	blobs = map[string]string{}
	for _, c := range []byte("abde") {
		blobs[string(c)] = writeFile(t, filepath.Join(root, "blobs", "sha256-"+digestOf(c)), "gguf "+string(c))
	}
	model := "application/vnd.ollama.image.model"
	tmpl := [2]string{"application/vnd.ollama.image.template", "sha256:" + digestOf('d')}
	writeManifest(t, root, "registry.ollama.ai/library/llama3/latest", tmpl, [2]string{model, "sha256:" + digestOf('a')})
	writeManifest(t, root, "registry.ollama.ai/library/llama3/8b-q4", [2]string{model, "sha256:" + digestOf('b')})
	writeManifest(t, root, "registry.ollama.ai/alice/tiny/v1", [2]string{model, "sha256:" + digestOf('d')})
	writeManifest(t, root, "hf.co/bob/phi/q8", [2]string{model, "sha256:" + digestOf('e')})
	writeManifest(t, root, "registry.ollama.ai/library/notemplate/latest", tmpl)
	writeManifest(t, root, "registry.ollama.ai/library/evil/latest", [2]string{model, "sha256:../../../etc/passwd"})
	writeManifest(t, root, "registry.ollama.ai/library/gone/latest", [2]string{model, "sha256:" + digestOf('f')})
	writeFile(t, filepath.Join(root, "manifests", "registry.ollama.ai/library/garbage/latest"), "not json{")
	return root, blobs
}

func TestOllamaList(t *testing.T) {
	root, blobs := ollamaFixture(t)
	got, err := OllamaStore{Root: root}.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []OllamaModel{
		{Name: "alice/tiny:v1", Path: blobs["d"]},
		{Name: "hf.co/bob/phi:q8", Path: blobs["e"]},
		{Name: "llama3:8b-q4", Path: blobs["b"]},
		{Name: "llama3:latest", Path: blobs["a"], Chat: OllamaChat{Template: blobs["d"]}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %v\nwant %v", got, want)
	}
	_, skipped, _ := OllamaStore{Root: root}.list()
	for _, name := range []string{"notemplate", "evil", "gone", "garbage"} {
		found := false
		for _, s := range skipped {
			found = found || strings.Contains(s, name)
		}
		if !found {
			t.Errorf("skipped reasons %q do not mention %s", skipped, name)
		}
	}
}

func TestOllamaListMissingStore(t *testing.T) {
	got, err := OllamaStore{Root: filepath.Join(t.TempDir(), "none")}.List()
	if err != nil || len(got) != 0 {
		t.Fatalf("List of a missing store = %v, %v; want nothing, nil", got, err)
	}
}

func TestOllamaLookup(t *testing.T) {
	root, blobs := ollamaFixture(t)
	tests := []struct {
		name    string
		want    string
		wantErr string // substring of the error; "" means success
	}{
		{"llama3", blobs["a"], ""},
		{"llama3:latest", blobs["a"], ""},
		{"llama3:8b-q4", blobs["b"], ""},
		{"library/llama3:8b-q4", blobs["b"], ""},
		{"registry.ollama.ai/library/llama3", blobs["a"], ""},
		{"alice/tiny:v1", blobs["d"], ""},
		{"alice/tiny", "", "no usable manifest"},
		{"hf.co/bob/phi:q8", blobs["e"], ""},
		{"llama3:nope", "", "no usable manifest"},
		{"evil", "", "bad layer digest"},
		{"gone", "", "blob"},
		{"garbage", "", "not valid JSON"},
		{"notemplate", "", "no application/vnd.ollama.image.model layer"},
		{"../../etc/passwd", "", "want [[host/]namespace/]model"},
		{"../m", "", "not allowed"},
		{"a/b/c/d", "", "want [[host/]namespace/]model[:tag]"},
		{"llama3:", "", "empty tag"},
		{"", "", "empty model"},
	}
	for _, tc := range tests {
		got, err := OllamaStore{Root: root}.Lookup(tc.name)
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("Lookup(%q) = %q, %v; want %q, nil", tc.name, got, err, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("Lookup(%q) = %q, %v; want an error containing %q", tc.name, got, err, tc.wantErr)
		}
	}
}

func TestOllamaLookupBlobSymlinkEscape(t *testing.T) {
	root := realDir(t, t.TempDir())
	outside := writeFile(t, filepath.Join(t.TempDir(), "secret"), "x")
	symlink(t, outside, filepath.Join(root, "blobs", "sha256-"+digestOf('a')))
	writeManifest(t, root, "registry.ollama.ai/library/m/latest", [2]string{"application/vnd.ollama.image.model", "sha256:" + digestOf('a')})
	if got, err := (OllamaStore{Root: root}).Lookup("m"); err == nil {
		t.Fatalf("Lookup through a blob symlink leaving the store = %q, want an error", got)
	}
}

func TestBlobFileName(t *testing.T) {
	tests := []struct{ digest, want string }{
		{"sha256:" + digestOf('a'), "sha256-" + digestOf('a')},
		{"sha256-" + digestOf('b'), "sha256-" + digestOf('b')},
		{"sha256:" + digestOf('A'), "sha256-" + digestOf('a')},
		{"sha256:" + digestOf('g'), ""},
		{"sha256:abc", ""},
		{"sha512:" + digestOf('a'), ""},
		{"sha256:../" + digestOf('a')[3:], ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, err := blobFileName(tc.digest)
		if tc.want == "" && err == nil || tc.want != "" && got != tc.want {
			t.Errorf("blobFileName(%q) = %q, %v; want %q", tc.digest, got, err, tc.want)
		}
	}
}

func TestDefaultOllamaDir(t *testing.T) {
	tests := []struct{ env, home, want string }{
		{"/srv/ollama", "/home/u", "/srv/ollama"},
		{"", "/home/u", filepath.Join("/home/u", ".ollama", "models")},
		{"", "", ""},
	}
	for _, tc := range tests {
		if got := DefaultOllamaDir(tc.env, tc.home); got != tc.want {
			t.Errorf("DefaultOllamaDir(%q, %q) = %q, want %q", tc.env, tc.home, got, tc.want)
		}
	}
}

func TestOllamaNameDisplay(t *testing.T) {
	tests := []struct{ in, want string }{
		{"llama3", "llama3:latest"},
		{"library/llama3:8b", "llama3:8b"},
		{"registry.ollama.ai/alice/m:t", "alice/m:t"},
		{"localhost:5000/ns/m", "localhost:5000/ns/m:latest"},
	}
	for _, tc := range tests {
		ref, err := parseOllamaName(tc.in)
		if err != nil || ref.display() != tc.want {
			t.Errorf("parseOllamaName(%q).display() = %q, %v; want %q", tc.in, ref.display(), err, tc.want)
		}
	}
}
