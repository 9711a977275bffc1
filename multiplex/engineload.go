package multiplex

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/llmux/llmux/chat"
	"github.com/llmux/llmux/engine"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/scheduler"
)

// EngineLoader loads catalog models into llama.cpp engines, each with a
// scheduler of its own: Defaults are the server-wide scheduler settings
// that a model's own config (parallel, ctx_size, kv_layout) overrides.
type EngineLoader struct {
	Defaults  scheduler.Options
	GPULayers int
	// TensorSplit spreads a model over several GPUs (nil: llama.cpp's
	// default).
	TensorSplit []float32
	Logger      *slog.Logger
	// Catalog, when set, gives each base model's scheduler the base's LoRA
	// adapters: those in the catalog when it loads, and those registered
	// later (AddAdapter), found by name on first use.
	Catalog *Catalog
	// ChatTemplate is the chat_template of models whose config sets none
	// (--chat-template): "" chooses by the usual order, "gguf" keeps the
	// GGUF's own template for models from ollama's store.
	ChatTemplate string

	mu    sync.Mutex // guards infos and chats
	infos map[string]*models.Info
	chats map[string]chat.Format // by entry name and path
}

func (d *EngineLoader) options(e Entry) scheduler.Options {
	o := d.Defaults
	if d.Logger != nil {
		o.Logger = d.Logger
	}
	if e.Config.Parallel > 0 {
		o.Parallel = e.Config.Parallel
	}
	if e.Config.CtxSize > 0 {
		o.Cells = e.Config.CtxSize
	}
	if e.Config.KVLayout != "" {
		o.KVLayout = e.Config.KVLayout
	}
	return o
}

// adapterOptions gives a base's scheduler its adapters from the catalog.
// A base gets them when it has adapters at load, or when the catalog can
// register adapters at run time; otherwise its scheduler has none and
// keeps llama.cpp's graph reuse (a context that may switch adapters runs
// without it).
func (d *EngineLoader) adapterOptions(e Entry, o scheduler.Options) scheduler.Options {
	c := d.Catalog
	if c == nil {
		return o
	}
	specs := map[string]scheduler.AdapterSpec{}
	for _, a := range c.Entries() {
		if a.Kind == KindAdapter && a.Base == e.Name {
			specs[a.Name] = scheduler.AdapterSpec{Path: a.Path, Scale: a.Scale}
		}
	}
	if len(specs) == 0 && !c.RuntimeAdapters() {
		return o
	}
	o.Adapters = specs
	o.LookupAdapter = func(name string) (scheduler.AdapterSpec, bool) {
		a, ok := c.Adapter(name)
		if !ok || a.Base != e.Name {
			return scheduler.AdapterSpec{}, false
		}
		return scheduler.AdapterSpec{Path: a.Path, Scale: a.Scale}, true
	}
	return o
}

func (d *EngineLoader) inspect(path string) (*models.Info, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, ok := d.infos[path]; ok {
		return i, nil
	}
	i, err := models.Inspect(path)
	if err != nil {
		return nil, err
	}
	if d.infos == nil {
		d.infos = map[string]*models.Info{}
	}
	d.infos[path] = i
	return i, nil
}

// Chat decides e's chat format from its config, its ollama store layers
// and its GGUF metadata (once per entry), for the load log, /v1/models and
// every runner of the model alike.
func (d *EngineLoader) Chat(e Entry) (chat.Format, error) {
	i, err := d.inspect(e.Path)
	if err != nil {
		return chat.Format{}, err
	}
	key := e.Name + "\x00" + e.Path
	d.mu.Lock()
	fm, ok := d.chats[key]
	d.mu.Unlock()
	if ok {
		return fm, nil
	}
	facts, err := chatFacts(e, i, d.ChatTemplate)
	if err != nil {
		return chat.Format{}, fmt.Errorf("model %s: %w", e.Name, err)
	}
	if fm, err = chat.Choose(facts); err != nil {
		return chat.Format{}, fmt.Errorf("model %s: %w", e.Name, err)
	}
	d.mu.Lock()
	if d.chats == nil {
		d.chats = map[string]chat.Format{}
	}
	d.chats[key] = fm
	d.mu.Unlock()
	return fm, nil
}

// chatFacts gathers what a model's chat format is chosen from. A
// chat_template naming a file (a path with a separator, or a .tmpl or
// .gotmpl name) is read here.
func chatFacts(e Entry, i *models.Info, fallback string) (chat.Facts, error) {
	f := chat.Facts{Override: e.Config.ChatTemplate, ToolFormat: e.Config.ToolFormat, Architecture: i.Architecture, GGUFTemplate: i.ChatTemplate}
	if f.Override == "" {
		f.Override = fallback
	}
	if o := f.Override; strings.ContainsRune(o, filepath.Separator) || strings.HasSuffix(o, ".tmpl") || strings.HasSuffix(o, ".gotmpl") {
		b, err := os.ReadFile(o)
		if err != nil {
			return f, fmt.Errorf("chat_template: %w", err)
		}
		if len(b) == 0 {
			return f, fmt.Errorf("chat_template %s is empty", o)
		}
		f.OverrideText = string(b)
	}
	if c := e.Ollama; c != nil {
		var o chat.Ollama
		var err error
		if o.Template, err = c.ReadTemplate(); err != nil {
			return f, fmt.Errorf("ollama template layer: %w", err)
		}
		if o.Renderer, o.Parser, err = c.ReadConfig(); err != nil {
			return f, err
		}
		p, err := c.ReadParams()
		if err != nil {
			return f, err
		}
		o.Stop = p.Stop
		f.Ollama = &o
	}
	return f, nil
}

// Size estimates a model's memory (weights + KV cache for its context)
// and what validation needs, from its GGUF metadata.
func (d *EngineLoader) Size(e Entry) (int64, llm.ModelInfo, error) {
	i, err := d.inspect(e.Path)
	if err != nil {
		return 0, llm.ModelInfo{}, err
	}
	o := d.options(e)
	ctx := o.Cells
	if ctx <= 0 {
		ctx = min(int(i.ContextLength), 8192)
		if ctx <= 0 {
			ctx = 8192
		}
	}
	parallel := max(o.Parallel, 1)
	mi := llm.ModelInfo{VocabSize: int(i.VocabSize), Context: ctx, Parallel: parallel, Embedding: int(i.Embedding)}
	if fm, err := d.Chat(e); err == nil {
		c := fm.Info
		mi.Chat = &c
	}
	if o.KVLayout == "per-slot" {
		mi.Context = ctx / parallel
	}
	return int64(i.MemoryEstimate(ctx)), mi, nil
}

// Load loads a model with its settings and starts its scheduler; the
// returned Close stops the scheduler and frees the model.
func (d *EngineLoader) Load(ctx context.Context, e Entry) (*Loaded, error) {
	logger := d.Logger
	if logger == nil {
		logger = slog.Default()
	}
	// A model whose size cannot be read fails in LoadModel, with its reason.
	bytes, _, sizeErr := d.Size(e)
	if sizeErr == nil {
		if err := checkAddressSpace(bytes); err != nil {
			return nil, fmt.Errorf("load %s: %w", e.Name, err)
		}
	}
	fm, err := d.Chat(e)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", e.Name, err)
	}
	m, err := engine.LoadModel(e.Path, engine.ModelOptions{GPULayers: d.GPULayers, TensorSplit: d.TensorSplit, Progress: func(float32) bool { return ctx.Err() == nil }})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		m.Close()
		return nil, ctx.Err()
	}
	sched, err := scheduler.New(m, d.adapterOptions(e, d.options(e)))
	if err != nil {
		m.Close()
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sched.Run(runCtx); err != nil && runCtx.Err() == nil {
			logger.Error("scheduler stopped", "model", e.Name, "err", err)
		}
	}()
	r := newRunner(e.Name, sched, fm)
	o := sched.Options()
	ci := fm.Info
	logger.Info("model ready", "model", e.Name, "description", m.Description(), "parallel", o.Parallel, "ctx", o.Cells, "kv_layout", o.KVLayout, "seq_ctx", sched.SeqContext(),
		"chat_template", ci.Template, "chat_source", ci.Source, "tool_format", ci.Tools, "reasoning", ci.Reasoning)
	if fm.Heuristic() {
		logger.Info("no known chat template: messages go through llama.cpp's template heuristics", "model", e.Name)
	}
	return &Loaded{Runner: r, Bytes: bytes, Close: func() {
		stop()
		<-done
		r.Close()
		sched.Close()
		m.Close()
	}}, nil
}
