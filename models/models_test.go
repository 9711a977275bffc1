package models

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestQuantRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 256)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	// Worst-case error per element, relative to the block's max |x|.
	tol := map[TensorType]float64{F32: 0, F16: 1e-3, Q8_0: 1.0 / 127, Q4_0: 1.0 / 7}
	for typ, rel := range tol {
		enc := typ.encode(nil, x)
		if len(enc) != typ.rowBytes(len(x)) {
			t.Fatalf("%s: %d bytes, want %d", typ, len(enc), typ.rowBytes(len(x)))
		}
		dec := typ.decodeRow(enc, len(x))
		for b := 0; b < len(x); b += qk {
			var amax float64
			for _, v := range x[b : b+qk] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			for i := b; i < b+qk; i++ {
				if d := math.Abs(float64(dec[i] - x[i])); d > rel*amax+1e-6 {
					t.Fatalf("%s: element %d: got %v want %v (err %v > %v)", typ, i, dec[i], x[i], d, rel*amax)
				}
			}
		}
	}
}

func TestSynthesizeDeterministicAndInspectable(t *testing.T) {
	dir := t.TempDir()
	cfg := SynthConfig{Name: "t", Layers: 2, Embedding: 64, Heads: 4, HeadsKV: 2, FFN: 96, Context: 256, Vocab: 400, Type: Q8_0, Seed: 9, ByteTokens: true}
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	var last, total int64
	if err := Synthesize(a, cfg, func(d, t int64) { last, total = d, t }); err != nil {
		t.Fatal(err)
	}
	if last != total || total == 0 {
		t.Fatalf("progress ended at %d of %d", last, total)
	}
	if err := Synthesize(b, cfg, nil); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("same config wrote different bytes")
	}
	cfg.Seed = 10
	if err := Synthesize(b, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if db, _ = os.ReadFile(b); bytes.Equal(da, db) {
		t.Fatal("different seeds wrote the same bytes")
	}
	info, err := Inspect(a)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"arch", info.Architecture, "llama"},
		{"kind", info.Kind, "model"},
		{"layers", info.Layers, uint64(2)},
		{"embedding", info.Embedding, uint64(64)},
		{"heads", info.Heads, uint64(4)},
		{"heads_kv", info.HeadsKV, uint64(2)},
		{"ffn", info.FFN, uint64(96)},
		{"context", info.ContextLength, uint64(256)},
		{"vocab", info.VocabSize, uint64(400)},
		{"file type", info.FileType, "Q8_0"},
		{"tensors", len(info.Tensors), 3 + 9*2},
		{"params", info.Parameters, cfg.Parameters()},
		{"q8 tensors", info.TensorTypes["Q8_0"], 2 + 7*2},
		{"chat template", strings.Contains(info.ChatTemplate, "<|im_start|>"), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if est := info.MemoryEstimate(1024); est <= info.WeightsBytes {
		t.Errorf("memory estimate %d does not add the KV cache to %d", est, info.WeightsBytes)
	}
}

func TestSynthConfigValidate(t *testing.T) {
	bad := []SynthConfig{
		{Embedding: 60, Heads: 4, Type: Q8_0}, // not a multiple of 32
		{Embedding: 64, Heads: 5},             // heads do not divide
		{Embedding: 64, Heads: 4, HeadsKV: 3}, // kv heads do not divide
		{Embedding: 48, Heads: 16},            // odd head size
		{Layers: -1},
		{Vocab: 100},            // too small for the layout
		{Type: "Q5_K"},          // unsupported type
		{Context: 4, Layers: 1}, // context too short
		{FFN: 40, Type: Q4_0},   // ffn not block aligned
		{Embedding: 1 << 20},    // too wide
		{Vocab: 1<<20 + 1},      // too many tokens
	}
	for i, c := range bad {
		err := c.Validate()
		if err == nil && c.Vocab == 100 {
			err = Synthesize(filepath.Join(t.TempDir(), "x.gguf"), c, nil)
		}
		if err == nil {
			t.Errorf("case %d %+v: no error", i, c)
		}
	}
	for name, p := range Presets {
		if err := p.Validate(); err != nil {
			t.Errorf("preset %s: %v", name, err)
		}
	}
	if n := Presets["bench"].Parameters(); n < 80e6 || n > 100e6 {
		t.Errorf("bench preset has %d parameters, want ~86M", n)
	}
}

func TestVocab(t *testing.T) {
	for _, withBytes := range []bool{true, false} {
		v, err := buildVocab(1000, withBytes, 1)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		bytesTok := 0
		for i, tok := range v.tokens {
			if seen[tok] {
				t.Fatalf("duplicate token %q", tok)
			}
			seen[tok] = true
			if v.types[i] == tokByte {
				bytesTok++
			}
		}
		if want := map[bool]int{true: 256, false: 0}[withBytes]; bytesTok != want {
			t.Fatalf("byte tokens = %d, want %d", bytesTok, want)
		}
		if v.tokens[BOSID] != "<s>" || v.tokens[EOSID] != "<|endoftext|>" || v.tokens[UnkID] != "<unk>" {
			t.Fatalf("special ids wrong: %v", v.tokens[:3])
		}
	}
}

func TestSynthesizeLoRA(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.gguf")
	if err := Synthesize(base, Presets["tiny"], nil); err != nil {
		t.Fatal(err)
	}
	bi, err := Inspect(base)
	if err != nil {
		t.Fatal(err)
	}
	lora := filepath.Join(dir, "lora.gguf")
	if err := SynthesizeLoRA(lora, bi, LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"attn_q", "ffn_down"}}, nil); err != nil {
		t.Fatal(err)
	}
	li, err := Inspect(lora)
	if err != nil {
		t.Fatal(err)
	}
	if li.Kind != "adapter" || li.AdapterType != "lora" || li.LoRAAlpha != 8 || li.Architecture != "llama" {
		t.Fatalf("adapter metadata: %+v", li)
	}
	if len(li.Tensors) != 2*2*2 {
		t.Fatalf("%d tensors, want 8", len(li.Tensors))
	}
	for _, ti := range li.Tensors {
		if strings.HasSuffix(ti.Name, "ffn_down.weight.lora_a") && (ti.Shape[0] != 128 || ti.Shape[1] != 4) {
			t.Fatalf("%s shape %v, want [128 4]", ti.Name, ti.Shape)
		}
	}
	if err := SynthesizeLoRA(lora, bi, LoRAConfig{Targets: []string{"nothing"}}, nil); err == nil {
		t.Fatal("lora with no matching target: no error")
	}
	if err := SynthesizeLoRA(lora, li, LoRAConfig{}, nil); err == nil {
		t.Fatal("lora on an adapter base: no error")
	}
}
