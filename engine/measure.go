package engine

import (
	"fmt"
	"time"
)

// DecodeBench is the raw-engine decode measurement that llama.cpp's
// llama-batched-bench makes: Batch sequences, each with a PromptLen-token
// prompt (prefilled, not timed), then GenLen decode steps of Batch tokens
// each (timed). Benchmarks of the layers above compare against it.
type DecodeBench struct {
	Batch, PromptLen, GenLen int
	Context                  ContextOptions // Cells, Sequences and Batch are set from the fields above
}

// Run measures once and returns decode tokens per second.
func (d DecodeBench) Run(m *Model) (float64, error) {
	o := d.Context
	o.Cells = d.Batch * (d.PromptLen + d.GenLen + 1)
	o.Sequences = d.Batch
	o.Batch = 2048
	ctx, err := m.NewContext(o)
	if err != nil {
		return 0, err
	}
	defer ctx.Close()
	bt, err := NewBatch(2048, 1)
	if err != nil {
		return 0, err
	}
	defer bt.Close()
	for s := 0; s < d.Batch; s++ {
		for i := 0; i < d.PromptLen; i++ {
			if bt.Len() == bt.Cap() {
				if err := ctx.Decode(bt); err != nil {
					return 0, err
				}
				bt.Clear()
			}
			bt.Add(int32(3+(s*7+i)%200), i, i == d.PromptLen-1, s)
		}
	}
	if err := ctx.Decode(bt); err != nil {
		return 0, err
	}
	start := time.Now()
	for step := 0; step < d.GenLen; step++ {
		bt.Clear()
		for s := 0; s < d.Batch; s++ {
			bt.Add(int32(3+(s+step)%200), d.PromptLen+step, true, s)
		}
		if err := ctx.Decode(bt); err != nil {
			return 0, fmt.Errorf("decode step %d: %w", step, err)
		}
	}
	return float64(d.Batch*d.GenLen) / time.Since(start).Seconds(), nil
}
