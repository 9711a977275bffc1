// Package models reads GGUF model files and writes synthesized ones: llama
// models and LoRA adapters with deterministic pseudo-random weights, so that
// tests and benchmarks need nothing from outside the repository.
package models

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/ollama/ollama/fs/ggml"
)

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Shape []uint64 `json:"shape"`
	Bytes uint64   `json:"bytes"`
}

// Info is what Inspect learns from a GGUF file's header.
type Info struct {
	Path          string         `json:"path"`
	FileSize      int64          `json:"file_size"`
	Kind          string         `json:"kind"` // "model" or "adapter"
	Architecture  string         `json:"architecture"`
	Name          string         `json:"name,omitempty"`
	Parameters    uint64         `json:"parameters"`
	FileType      string         `json:"file_type"`
	TensorTypes   map[string]int `json:"tensor_types"`
	ContextLength uint64         `json:"context_length,omitempty"`
	Embedding     uint64         `json:"embedding_length,omitempty"`
	Layers        uint64         `json:"block_count,omitempty"`
	Heads         uint64         `json:"head_count,omitempty"`
	HeadsKV       uint64         `json:"head_count_kv,omitempty"`
	FFN           uint64         `json:"feed_forward_length,omitempty"`
	VocabSize     uint64         `json:"vocab_size,omitempty"`
	Tokenizer     string         `json:"tokenizer,omitempty"`
	ChatTemplate  string         `json:"chat_template,omitempty"`
	WeightsBytes  uint64         `json:"weights_bytes"`
	AdapterType   string         `json:"adapter_type,omitempty"`
	LoRAAlpha     float32        `json:"lora_alpha,omitempty"`
	Tensors       []TensorInfo   `json:"-"`
	kv            ggml.KV
}

// ErrNotGGUF is returned (wrapped) for files that are not GGUF at all.
var ErrNotGGUF = errors.New("not a GGUF file")

// Inspect reads the metadata and tensor table of a GGUF file and checks that
// every tensor's data lies inside the file, so that a truncated or corrupt
// file is reported here rather than deep inside llama.cpp.
func Inspect(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat model: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("model %s: is a directory", path)
	}
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil || string(magic[:]) != "GGUF" {
		return nil, fmt.Errorf("model %s: %w (bad magic)", path, ErrNotGGUF)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := checkBounds(f, st.Size()); err != nil {
		return nil, fmt.Errorf("model %s: corrupt GGUF header: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	g, err := decodeGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("model %s: corrupt GGUF header: %w", path, err)
	}
	kv := g.KV()
	info := &Info{
		Path:         path,
		FileSize:     st.Size(),
		Kind:         kv.String("general.type", "model"),
		Architecture: kv.Architecture(),
		Name:         kv.String("general.name"),
		TensorTypes:  map[string]int{},
		kv:           kv,
	}
	ts := g.Tensors()
	var end uint64
	for _, t := range ts.Items() {
		ti := TensorInfo{Name: t.Name, Type: t.Type(), Shape: t.Shape, Bytes: t.Size()}
		info.Tensors = append(info.Tensors, ti)
		info.TensorTypes[ti.Type]++
		info.Parameters += t.Elements()
		info.WeightsBytes += ti.Bytes
		if e := ts.Offset + t.Offset + ti.Bytes; e > end {
			end = e
		}
	}
	if end > uint64(st.Size()) {
		return nil, fmt.Errorf("model %s: truncated: tensor data ends at byte %d but the file has %d", path, end, st.Size())
	}
	sort.Slice(info.Tensors, func(i, j int) bool { return info.Tensors[i].Name < info.Tensors[j].Name })
	info.FileType = kv.FileType().String()
	if info.Kind == "adapter" {
		// ggml.KV's typed getters prefix keys with the architecture; the
		// adapter keys are not prefixed, so read the map directly.
		info.AdapterType, _ = kv["adapter.type"].(string)
		info.LoRAAlpha, _ = kv["adapter.lora.alpha"].(float32)
		return info, nil
	}
	info.ContextLength = kv.ContextLength()
	info.Embedding = kv.EmbeddingLength()
	info.Layers = kv.BlockCount()
	info.Heads = kv.HeadCountMax()
	info.HeadsKV = kv.HeadCountKVMax()
	if ffn := kv.FFNLength(); len(ffn) > 0 {
		info.FFN = ffn[0]
	}
	info.Tokenizer = kv.String("tokenizer.ggml.model")
	info.VocabSize = uint64(len(kv.Strings("tokenizer.ggml.tokens")))
	info.ChatTemplate = kv.ChatTemplate()
	return info, nil
}

// decodeGGUF wraps ggml.Decode, turning a panic on hostile input into an
// error: a model file is untrusted input.
func decodeGGUF(r io.ReadSeeker) (g *ggml.GGML, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decoder failed: %v", p)
		}
	}()
	return ggml.Decode(r, -1)
}

// String returns a metadata value as text ("" when absent).
func (i *Info) String(key string) string { return i.kv.String(key) }

// KVCacheBytes estimates the KV cache size for ctx cells of an f16 cache.
func (i *Info) KVCacheBytes(ctx int) uint64 {
	if i.Heads == 0 {
		return 0
	}
	headDim := i.Embedding / i.Heads
	return 2 * i.Layers * uint64(ctx) * i.HeadsKV * headDim * 2
}

// MemoryEstimate is weights plus KV cache for ctx cells, in bytes.
func (i *Info) MemoryEstimate(ctx int) uint64 { return i.WeightsBytes + i.KVCacheBytes(ctx) }
