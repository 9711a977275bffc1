package engine

import (
	"flag"
	"fmt"
	"testing"

	"github.com/llmux/llmux/models/modeltest"
)

var (
	benchKV      = flag.String("engine.kv", "unified,perseq", "KV layouts for BenchmarkDecode")
	benchBatches = flag.String("engine.batches", "1,4,16,64", "batch sizes for BenchmarkDecode")
	benchFA      = flag.String("engine.fa", "auto", "flash attention for BenchmarkDecode: auto, on, off")
	benchGemm    = flag.Int("engine.gemm-min-rows", gemmMinRows(), "BenchmarkDecode: batches of 2 to this-1 rows use ggml's own mat-mul kernels (SetGemmMinRows; 0: ggml's compiled choice)")
)

var benchModels = flag.String("engine.models", "bench,stories", "comma-separated models for BenchmarkDecode: bench (synthesized ~86M), stories (stories260K), tiny, small")

// BenchmarkDecode measures raw decode throughput the way llama.cpp's
// llama-batched-bench does: B sequences, each with a 128-token prompt
// (prefilled, not timed), then 128 decode steps of B tokens each (timed).
// It reports decode tokens per second.
func BenchmarkDecode(b *testing.B) {
	defer SetGemmMinRows(SetGemmMinRows(*benchGemm))
	for _, name := range splitList(*benchModels) {
		path := benchModelPath(b, name)
		if path == "" {
			continue
		}
		m, err := LoadModel(path, ModelOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, kv := range splitList(*benchKV) {
			for _, bs := range splitList(*benchBatches) {
				var batch int
				fmt.Sscan(bs, &batch)
				b.Run(fmt.Sprintf("model=%s/kv=%s/batch=%d", name, kv, batch), func(b *testing.B) {
					tps := DecodeThroughput(b, m, batch, 128, 128, kv == "perseq")
					b.ReportMetric(tps, "tok/s")
				})
			}
		}
		m.Close()
	}
}

// DecodeThroughput runs the batched-bench measurement b.N times and returns
// the mean decode tokens/s.
func DecodeThroughput(b *testing.B, m *Model, batch, promptLen, genLen int, perSeq bool) float64 {
	var sum float64
	for range b.N {
		tps, err := DecodeBench{Batch: batch, PromptLen: promptLen, GenLen: genLen, Context: ContextOptions{PerSequenceKV: perSeq, FlashAttention: *benchFA}}.Run(m)
		if err != nil {
			b.Fatal(err)
		}
		sum += tps
	}
	return sum / float64(b.N)
}

func benchModelPath(b *testing.B, name string) string {
	switch name {
	case "stories":
		p := modeltest.StoriesPath()
		if p == "" {
			b.Log("stories260K absent; skipping it")
		}
		return p
	default:
		return modeltest.Preset(b, name)
	}
}

func splitList(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
