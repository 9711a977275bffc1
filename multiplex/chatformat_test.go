package multiplex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/llmux/llmux/chat/chattest"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/models/modeltest"
)

// storeBlob writes data as a blob of the store at root and returns its
// digest.
func storeBlob(t *testing.T, root string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(root, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "blobs", "sha256-"+d), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + d
}

// chatStore is an ollama store holding the tiny model with a template
// layer, a params layer and a config blob, as `ollama pull` writes them.
func chatStore(t *testing.T, template, params, config string) string {
	t.Helper()
	root := realDir(t, t.TempDir())
	gguf, err := os.ReadFile(modeltest.Preset(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	layer := func(mt, data string) string {
		return `{"mediaType":"` + mt + `","digest":"` + storeBlob(t, root, []byte(data)) + `","size":1}`
	}
	body := `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",` +
		`"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` + storeBlob(t, root, []byte(config)) + `","size":1},"layers":[` +
		`{"mediaType":"application/vnd.ollama.image.model","digest":"` + storeBlob(t, root, gguf) + `","size":1},` +
		layer("application/vnd.ollama.image.template", template) + "," + layer("application/vnd.ollama.image.params", params) + `]}`
	writeFile(t, filepath.Join(root, "manifests", "registry.ollama.ai/library/chatty/latest"), body)
	return root
}

// TestOllamaLayersChooseTheChatFormat: a model from ollama's store is
// served with its template layer, its params layer's sampling defaults
// and stop words (the config's own settings winning) and its config's
// renderer; chat_template: gguf keeps the GGUF's template instead.
func TestOllamaLayersChooseTheChatFormat(t *testing.T) {
	tmpl := "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
	root := chatStore(t, tmpl, `{"temperature":0.6,"top_k":20,"num_predict":-1,"stop":["<|im_end|>","</s>"]}`, `{"model_family":"llama"}`)
	topK := 5
	for _, tc := range []struct {
		name string
		cfg  ModelConfig
		want llm.ChatFormat
		temp float64
		topK int
	}{
		{"store", ModelConfig{Path: "chatty"}, llm.ChatFormat{Template: "ollama", Source: "ollama", Tools: "generic", Stop: []string{"<|im_end|>", "</s>"}}, 0.6, 20},
		{"config wins", ModelConfig{Path: "chatty", ChatTemplate: "gguf", Sampling: llm.SamplingDefaults{TopK: &topK}},
			llm.ChatFormat{Template: "chatml", Source: "gguf", Tools: "generic", Stop: []string{"<|im_start|>", "<|im_end|>"}}, 0.6, 5},
	} {
		cat, err := NewCatalog(CatalogOptions{Models: []ModelConfig{tc.cfg}, OllamaDir: root})
		if err != nil {
			t.Fatal(err)
		}
		e, _, err := cat.Resolve("chatty")
		if err != nil || e.Ollama == nil {
			t.Fatalf("%s: entry %+v, %v", tc.name, e, err)
		}
		el := &EngineLoader{Catalog: cat}
		_, mi, err := el.Size(e)
		if err != nil {
			t.Fatal(err)
		}
		if mi.Chat == nil || !reflect.DeepEqual(*mi.Chat, tc.want) {
			t.Errorf("%s: chat format %+v, want %+v", tc.name, mi.Chat, tc.want)
		}
		d := e.Config.Sampling
		if d.Temperature == nil || *d.Temperature != tc.temp || d.TopK == nil || *d.TopK != tc.topK || d.MaxTokens != nil {
			t.Errorf("%s: sampling defaults %+v", tc.name, d)
		}
	}
	// The config blob's renderer is the format (with its parser).
	root = chatStore(t, tmpl, `{}`, `{"renderer":"qwen3-coder","parser":"qwen3-coder"}`)
	cat, err := NewCatalog(CatalogOptions{OllamaDir: root})
	if err != nil {
		t.Fatal(err)
	}
	e, _, _ := cat.Resolve("chatty")
	fm, err := (&EngineLoader{Catalog: cat}).Chat(e)
	if err != nil || fm.Info.Template != "qwen3-coder" || fm.Info.Source != "ollama" || fm.Info.Tools != "native" {
		t.Fatalf("renderer from the config blob: %+v, %v", fm.Info, err)
	}
}

// TestChatTemplateFileAndBadNames: chat_template names a template file
// (ollama's syntax) or a renderer; a missing file or unknown name fails
// the model's load with the reason, not a request.
func TestChatTemplateFileAndBadNames(t *testing.T) {
	tiny := modeltest.Preset(t, "tiny")
	file := filepath.Join(t.TempDir(), "mine.gotmpl")
	if err := os.WriteFile(file, []byte("{{ range .Messages }}[{{ .Role }}] {{ .Content }}\n{{ end }}[assistant] "), 0o644); err != nil {
		t.Fatal(err)
	}
	el := &EngineLoader{}
	fm, err := el.Chat(Entry{Name: "a", Path: tiny, Config: ModelConfig{ChatTemplate: file}})
	if err != nil || fm.Info.Template != file || fm.Info.Source != "config" {
		t.Fatalf("file: %+v, %v", fm.Info, err)
	}
	plan, e := fm.Prepare(&llm.Request{Messages: []llm.Message{{Role: "user", Content: "hi"}}}, nil)
	if e != nil || plan.Prompt != "[user] hi\n[assistant] " {
		t.Fatalf("file template rendered %q, %v", plan.Prompt, e)
	}
	for _, bad := range []string{filepath.Join(t.TempDir(), "missing.tmpl"), "no-such-renderer"} {
		if _, err := el.Chat(Entry{Name: "b" + bad, Path: tiny, Config: ModelConfig{ChatTemplate: bad}}); err == nil {
			t.Errorf("chat_template %q accepted", bad)
		}
	}
}

// TestFamilyTemplatesInRealGGUFs builds GGUFs carrying real families' chat
// templates (Jinja from the ollama module's index, and a Qwen3 model of
// the qwen3 architecture), loads each into llama.cpp, and checks the
// runner's prompt for a chat: the ollama Go template's rendering for the
// index families, the family renderer's for Qwen3, tokenized with the
// template's markers as control tokens where the vocabulary has them.
func TestFamilyTemplatesInRealGGUFs(t *testing.T) {
	msgs := []llm.Message{{Role: "system", Content: "Be terse."}, {Role: "user", Content: "hi"}}
	for _, tc := range []struct {
		name, arch, jinja, want string
	}{
		{"chatml", "llama", chattest.Jinja(t, "chatml"), "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"},
		{"llama3-instruct", "llama", chattest.Jinja(t, "llama3-instruct"), "<|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"gemma-instruct", "llama", chattest.Jinja(t, "gemma-instruct"), "<start_of_turn>user\nBe terse.\nhi<end_of_turn>\n<start_of_turn>model\n"},
		{"qwen3-vl-thinking", "qwen3", chattest.Qwen3Jinja, "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := models.Presets["tiny"]
			cfg.Arch, cfg.ChatTemplate = tc.arch, tc.jinja
			path := modeltest.Synth(t, cfg)
			l, err := (&EngineLoader{}).Load(context.Background(), Entry{Name: "m", Kind: KindBase, Path: path})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			r := l.Runner
			if got := r.Info("m").Chat; got == nil || got.Template != tc.name {
				t.Fatalf("chose %+v", got)
			}
			plan, e := r.chat.Prepare(&llm.Request{Messages: msgs}, r.engineRender)
			if e != nil {
				t.Fatal(e)
			}
			if plan.Prompt != tc.want {
				t.Fatalf("prompt\n got %q\nwant %q", plan.Prompt, tc.want)
			}
			toks, errs := r.prompts(&llm.Request{Messages: msgs}, plan)
			if errs != nil {
				t.Fatal(errs)
			}
			imStart, _ := r.model.Tokenize("<|im_start|>", false, true)
			if strings.HasPrefix(tc.want, "<|im_start|>") && (len(imStart) != 1 || !containsToken(toks[0], imStart[0])) {
				t.Fatalf("<|im_start|> not tokenized as its control token: %v", toks[0])
			}
			st, e := r.Generate(context.Background(), &llm.Request{Messages: msgs, Params: llm.Params{MaxTokens: 4}}, "")
			if e != nil {
				t.Fatal(e)
			}
			defer st.Close()
			for {
				ev, ok := st.Recv(context.Background())
				if !ok || ev.Final {
					if ev.Error != nil {
						t.Fatal(ev.Error)
					}
					break
				}
			}
		})
	}
}

func containsToken(toks []int32, id int32) bool {
	for _, t := range toks {
		if t == id {
			return true
		}
	}
	return false
}
