package models

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/fs/ggml"
)

// SynthVersion changes whenever the synthesizer would write different bytes
// for the same config; caches of synthesized files key on it.
const SynthVersion = 3

// SynthConfig describes a llama-architecture model to synthesize. Its zero
// fields take the values of the "tiny" preset.
type SynthConfig struct {
	Name       string     `json:"name"`
	Layers     int        `json:"layers"`
	Embedding  int        `json:"embedding"`
	Heads      int        `json:"heads"`
	HeadsKV    int        `json:"heads_kv"`
	FFN        int        `json:"ffn"`
	Context    int        `json:"context"`
	Vocab      int        `json:"vocab"`
	Type       TensorType `json:"type"`
	Seed       uint64     `json:"seed"`
	ByteTokens bool       `json:"byte_tokens"` // byte-fallback tokens in the vocab
	// Arch is the architecture written: "llama" (the default) or "qwen3"
	// (llama's tensors plus per-head query and key norms), so tests can
	// load a model that chat-format choice recognizes by family.
	Arch string `json:"arch,omitempty"`
	// ChatTemplate is tokenizer.chat_template ("": a ChatML template).
	ChatTemplate string `json:"chat_template,omitempty"`
}

// Presets are the model shapes the project uses by name.
var Presets = map[string]SynthConfig{
	// tiny: a few hundred KB; unit and integration tests.
	"tiny": {Name: "llmux-tiny", Layers: 2, Embedding: 64, Heads: 4, HeadsKV: 2, FFN: 128, Context: 2048, Vocab: 512, Type: F32, Seed: 1, ByteTokens: true},
	// small: ~6M parameters; the embedded default model.
	"small": {Name: "llmux-small", Layers: 4, Embedding: 256, Heads: 8, HeadsKV: 4, FFN: 768, Context: 4096, Vocab: 2048, Type: Q8_0, Seed: 1, ByteTokens: true},
	// bench: ~86M parameters (768 wide, 12 layers, FFN 2048, 512 vocab, Q8_0),
	// the standard CPU benchmark size.
	"bench": {Name: "llmux-bench-86m", Layers: 12, Embedding: 768, Heads: 12, HeadsKV: 12, FFN: 2048, Context: 4096, Vocab: 512, Type: Q8_0, Seed: 1, ByteTokens: true},
}

// PresetNames lists the presets in a stable order.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (c SynthConfig) withDefaults() SynthConfig {
	d := Presets["tiny"]
	if c.Name == "" {
		c.Name = "llmux-synth"
	}
	if c.Layers == 0 {
		c.Layers = d.Layers
	}
	if c.Embedding == 0 {
		c.Embedding = d.Embedding
	}
	if c.Heads == 0 {
		c.Heads = d.Heads
	}
	if c.HeadsKV == 0 {
		c.HeadsKV = c.Heads
	}
	if c.FFN == 0 {
		c.FFN = 2 * c.Embedding
	}
	if c.Context == 0 {
		c.Context = d.Context
	}
	if c.Vocab == 0 {
		c.Vocab = d.Vocab
	}
	if c.Type == "" {
		c.Type = F32
	}
	if c.Arch == "" {
		c.Arch = "llama"
	}
	if c.ChatTemplate == "" {
		c.ChatTemplate = chatML
	}
	return c
}

// Validate reports the first reason the config cannot make a working model.
func (c SynthConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Layers < 1 || c.Layers > 512:
		return fmt.Errorf("layers %d: want 1..512", c.Layers)
	case c.Embedding < 8 || c.Embedding > 65536:
		return fmt.Errorf("embedding %d: want 8..65536", c.Embedding)
	case c.Heads < 1 || c.Embedding%c.Heads != 0:
		return fmt.Errorf("heads %d must divide embedding %d", c.Heads, c.Embedding)
	case (c.Embedding/c.Heads)%2 != 0:
		return fmt.Errorf("head size %d must be even (RoPE)", c.Embedding/c.Heads)
	case c.HeadsKV < 1 || c.Heads%c.HeadsKV != 0:
		return fmt.Errorf("heads_kv %d must divide heads %d", c.HeadsKV, c.Heads)
	case c.FFN < 1:
		return fmt.Errorf("ffn %d: want > 0", c.FFN)
	case c.Context < 16:
		return fmt.Errorf("context %d: want at least 16", c.Context)
	case c.Vocab > 1<<20:
		return fmt.Errorf("vocab %d: want at most %d", c.Vocab, 1<<20)
	case c.Arch != "llama" && c.Arch != "qwen3":
		return fmt.Errorf("arch %q: want llama or qwen3", c.Arch)
	}
	if _, err := ParseTensorType(string(c.Type)); err != nil {
		return err
	}
	if !c.Type.blockAligned(c.Embedding) || !c.Type.blockAligned(c.FFN) {
		return fmt.Errorf("type %s needs embedding (%d) and ffn (%d) to be multiples of %d", c.Type, c.Embedding, c.FFN, qk)
	}
	return nil
}

// Parameters is the number of weights the config produces.
func (c SynthConfig) Parameters() uint64 {
	var n uint64
	for _, t := range c.withDefaults().tensors() {
		n += t.elements()
	}
	return n
}

// synthTensor is one tensor's recipe; its data is generated while written.
type synthTensor struct {
	name  string
	shape []uint64 // ggml order: shape[0] is the row length
	typ   TensorType
	std   float32 // uniform noise with this standard deviation...
	mean  float32 // ...around this mean
	seed  uint64
	done  *atomic.Int64
}

func (t *synthTensor) elements() uint64 {
	n := uint64(1)
	for _, d := range t.shape {
		n *= d
	}
	return n
}

func (t *synthTensor) bytes() int64 {
	rowLen := int(t.shape[0])
	return int64(t.typ.rowBytes(rowLen)) * int64(t.elements()/uint64(rowLen))
}

// WriteTo generates the tensor deterministically from (seed, name) and
// writes it a few rows at a time, so memory stays small for large models.
func (t *synthTensor) WriteTo(w io.Writer) (int64, error) {
	h := fnv.New64a()
	h.Write([]byte(t.name))
	rng := rand.New(rand.NewPCG(t.seed, h.Sum64()))
	rowLen := int(t.shape[0])
	rows := int(t.elements() / uint64(rowLen))
	half := float32(math.Sqrt(3)) * t.std // uniform(-a, a) has std a/sqrt(3)
	chunk := max(1, (1<<20)/rowLen)
	x := make([]float32, rowLen*chunk)
	buf := make([]byte, 0, t.typ.rowBytes(rowLen)*chunk)
	var total int64
	for r := 0; r < rows; r += chunk {
		n := min(chunk, rows-r)
		xs := x[:n*rowLen]
		for i := range xs {
			xs[i] = t.mean + half*(2*rng.Float32()-1)
		}
		buf = buf[:0]
		for i := range n {
			buf = t.typ.encode(buf, xs[i*rowLen:(i+1)*rowLen])
		}
		m, err := w.Write(buf)
		total += int64(m)
		if t.done != nil {
			t.done.Add(int64(m))
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// outputGain sets the spread of the logits (their standard deviation for a
// unit-RMS final hidden state). A wide spread keeps greedy decoding away from
// near-ties, so batched and unbatched runs agree.
const outputGain = 4

func (c SynthConfig) tensors() []*synthTensor {
	e, f, v := uint64(c.Embedding), uint64(c.FFN), uint64(c.Vocab)
	kvDim := e / uint64(c.Heads) * uint64(c.HeadsKV)
	inv := func(fanIn uint64) float32 { return float32(1 / math.Sqrt(float64(fanIn))) }
	mat := func(name string, in, out uint64, std float32) *synthTensor {
		return &synthTensor{name: name, shape: []uint64{in, out}, typ: c.Type, std: std, seed: c.Seed}
	}
	norm := func(name string) *synthTensor {
		return &synthTensor{name: name, shape: []uint64{e}, typ: F32, std: 0.05, mean: 1, seed: c.Seed}
	}
	ts := []*synthTensor{
		mat("token_embd.weight", e, v, 1),
		norm("output_norm.weight"),
		mat("output.weight", e, v, outputGain*inv(e)),
	}
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			norm(p+"attn_norm.weight"),
			mat(p+"attn_q.weight", e, e, inv(e)),
			mat(p+"attn_k.weight", e, kvDim, inv(e)),
			mat(p+"attn_v.weight", e, kvDim, inv(e)),
			mat(p+"attn_output.weight", e, e, inv(e)),
		)
		if c.Arch == "qwen3" {
			head := e / uint64(c.Heads)
			ts = append(ts,
				&synthTensor{name: p + "attn_q_norm.weight", shape: []uint64{head}, typ: F32, std: 0.05, mean: 1, seed: c.Seed},
				&synthTensor{name: p + "attn_k_norm.weight", shape: []uint64{head}, typ: F32, std: 0.05, mean: 1, seed: c.Seed})
		}
		ts = append(ts,
			norm(p+"ffn_norm.weight"),
			mat(p+"ffn_gate.weight", e, f, inv(e)),
			mat(p+"ffn_up.weight", e, f, inv(e)),
			mat(p+"ffn_down.weight", f, e, inv(f)),
		)
	}
	return ts
}

// Progress is told how many bytes of tensor data are written so far.
type Progress func(done, total int64)

// Synthesize writes a llama-architecture (or qwen3) GGUF model to path. The file is
// written beside path and renamed into place, so a reader never sees half of
// it. The same config always gives the same bytes.
func Synthesize(path string, cfg SynthConfig, progress Progress) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("synthesize: %w", err)
	}
	c := cfg.withDefaults()
	voc, err := buildVocab(c.Vocab, c.ByteTokens, c.Seed)
	if err != nil {
		return fmt.Errorf("synthesize: %w", err)
	}
	a := c.Arch
	kv := ggml.KV{
		"general.architecture":                  a,
		"general.type":                          "model",
		"general.name":                          c.Name,
		"general.description":                   "synthesized by llmux: random weights, not a trained model",
		"general.file_type":                     c.Type.fileType(),
		a + ".context_length":                   uint32(c.Context),
		a + ".embedding_length":                 uint32(c.Embedding),
		a + ".block_count":                      uint32(c.Layers),
		a + ".feed_forward_length":              uint32(c.FFN),
		a + ".attention.head_count":             uint32(c.Heads),
		a + ".attention.head_count_kv":          uint32(c.HeadsKV),
		a + ".rope.dimension_count":             uint32(c.Embedding / c.Heads),
		a + ".rope.freq_base":                   float32(10000),
		a + ".attention.layer_norm_rms_epsilon": float32(1e-5),
		a + ".vocab_size":                       uint32(c.Vocab),
		"tokenizer.ggml.model":                  "llama",
		"tokenizer.ggml.tokens":                 voc.tokens,
		"tokenizer.ggml.scores":                 voc.scores,
		"tokenizer.ggml.token_type":             voc.types,
		"tokenizer.ggml.bos_token_id":           uint32(BOSID),
		"tokenizer.ggml.eos_token_id":           uint32(EOSID),
		"tokenizer.ggml.unknown_token_id":       uint32(UnkID),
		"tokenizer.ggml.add_bos_token":          true,
		"tokenizer.ggml.add_eos_token":          false,
		"tokenizer.chat_template":               c.ChatTemplate,
	}
	return writeGGUF(path, kv, c.tensors(), progress)
}

// LoRAConfig describes a LoRA adapter to synthesize for a base model.
type LoRAConfig struct {
	Rank    int      `json:"rank"`    // default 8
	Alpha   float32  `json:"alpha"`   // default = Rank (scale 1)
	Targets []string `json:"targets"` // default attn_q, attn_v, ffn_up
	Seed    uint64   `json:"seed"`
	// Strength is the standard deviation of the adapter's output for a
	// unit-RMS input (default 0.5): large enough to change the logits.
	Strength float32 `json:"strength"`
}

// SynthesizeLoRA writes a LoRA adapter GGUF whose tensors match the shapes of
// the base model's target tensors, for every layer.
func SynthesizeLoRA(path string, base *Info, cfg LoRAConfig, progress Progress) error {
	if base == nil || base.Kind == "adapter" {
		return errors.New("synthesize lora: need a base model")
	}
	if cfg.Rank == 0 {
		cfg.Rank = 8
	}
	if cfg.Rank < 1 || cfg.Rank > 1024 {
		return fmt.Errorf("synthesize lora: rank %d: want 1..1024", cfg.Rank)
	}
	if cfg.Alpha == 0 {
		cfg.Alpha = float32(cfg.Rank)
	}
	if len(cfg.Targets) == 0 {
		cfg.Targets = []string{"attn_q", "attn_v", "ffn_up"}
	}
	if cfg.Strength == 0 {
		cfg.Strength = 0.5
	}
	r := uint64(cfg.Rank)
	var ts []*synthTensor
	for _, t := range base.Tensors {
		if !strings.HasPrefix(t.Name, "blk.") || len(t.Shape) != 2 {
			continue
		}
		for _, target := range cfg.Targets {
			if !strings.HasSuffix(t.Name, "."+target+".weight") {
				continue
			}
			in, out := t.Shape[0], t.Shape[1]
			ts = append(ts,
				&synthTensor{name: t.Name + ".lora_a", shape: []uint64{in, r}, typ: F32, std: float32(1 / math.Sqrt(float64(in))), seed: cfg.Seed},
				&synthTensor{name: t.Name + ".lora_b", shape: []uint64{r, out}, typ: F32, std: cfg.Strength / float32(math.Sqrt(float64(r))), seed: cfg.Seed},
			)
		}
	}
	if len(ts) == 0 {
		return fmt.Errorf("synthesize lora: base model has no tensors for targets %v", cfg.Targets)
	}
	kv := ggml.KV{
		"general.architecture": base.Architecture,
		"general.type":         "adapter",
		"general.name":         "llmux synthesized lora",
		"adapter.type":         "lora",
		"adapter.lora.alpha":   cfg.Alpha,
	}
	return writeGGUF(path, kv, ts, progress)
}

func writeGGUF(path string, kv ggml.KV, ts []*synthTensor, progress Progress) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".synth-*.gguf")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	var done atomic.Int64
	var total int64
	gts := make([]*ggml.Tensor, len(ts))
	for i, t := range ts {
		t.done = &done
		total += t.bytes()
		gts[i] = &ggml.Tensor{Name: t.name, Kind: t.typ.ggmlKind(), Shape: t.shape, WriterTo: t}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		if progress == nil {
			return
		}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				progress(done.Load(), total)
				return
			case <-tick.C:
				progress(done.Load(), total)
			}
		}
	}()
	err = ggml.WriteGGUF(tmp, kv, gts)
	close(stop)
	<-finished
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
