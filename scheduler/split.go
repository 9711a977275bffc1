package scheduler

import "time"

// splitMaxRows is the largest step the splitter considers running row by
// row: past a few rows, batching pays on every backend measured.
const splitMaxRows = 4

// splitMinSamples is how many decodes of a row count the splitter times
// before it trusts their average.
const splitMinSamples = 4

// splitProbeEvery: one eligible step in this many runs the other way from
// the splitter's choice, so the time of both ways stays current.
const splitProbeEvery = 32

// splitter decides whether a step of a few single-token rows (decodes of
// different sequences) runs as one batch or as one decode per row. Batching
// usually wins, but not always: on this project's 2-core CPU, llama.cpp's
// kernels decode 2 rows of the 86M bench model in 12.2 ms and one in
// 4.2 ms (benchmarks/README.md, "batch curve"), so two sequences advance
// faster one at a time. Which sizes lose depends on the model, its
// quantization and the machine, so the splitter measures rather than
// assumes: it keeps a moving average of the decode time of steps with 1 to
// splitMaxRows single-token rows, and splits a step when its rows one at a
// time took less than the batch. Until it has timed both it explores: a
// step runs split while one-row decodes are unmeasured, and whole while its
// own size is; after that one step in splitProbeEvery runs the other way.
// Owned by the scheduler's loop.
type splitter struct {
	avg   [splitMaxRows + 1]float64 // seconds per decode, by rows
	n     [splitMaxRows + 1]int     // decodes timed, by rows
	since [splitMaxRows + 1]int     // eligible steps since the last probe, by rows
}

// observe records the decode time of a batch of rows single-token rows.
func (p *splitter) observe(rows int, d time.Duration) {
	if rows < 1 || rows > splitMaxRows {
		return
	}
	const alpha = 0.2
	if p.n[rows] == 0 {
		p.avg[rows] = d.Seconds()
	} else {
		p.avg[rows] += alpha * (d.Seconds() - p.avg[rows])
	}
	p.n[rows]++
}

// shouldSplit reports whether a step of rows single-token rows should run
// one row at a time.
func (p *splitter) shouldSplit(rows int) bool {
	if rows < 2 || rows > splitMaxRows {
		return false
	}
	switch {
	case p.n[1] < splitMinSamples:
		return true // time single rows first
	case p.n[rows] < splitMinSamples:
		return false // then the whole batch
	}
	split := p.avg[rows] > float64(rows)*p.avg[1]
	p.since[rows]++
	if p.since[rows] >= splitProbeEvery {
		p.since[rows] = 0
		return !split
	}
	return split
}
