package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progressBar draws "label [=====>    ] 42%" on a terminal, redrawing at most
// every 100 ms. On a non-terminal it prints only the final line.
type progressBar struct {
	mu    sync.Mutex // guards the fields below; updates come from loader threads
	w     io.Writer
	label string
	tty   bool
	last  time.Time
	done  bool
}

func newProgressBar(label string) *progressBar {
	st, err := os.Stderr.Stat()
	tty := err == nil && st.Mode()&os.ModeCharDevice != 0
	return &progressBar{w: os.Stderr, label: label, tty: tty}
}

// Set draws fraction f in [0,1].
func (p *progressBar) Set(f float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || !p.tty || time.Since(p.last) < 100*time.Millisecond && f < 1 {
		return
	}
	p.last = time.Now()
	const width = 30
	n := int(f * width)
	n = max(0, min(width, n))
	fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%%", p.label, strings.Repeat("=", n), strings.Repeat(" ", width-n), f*100)
}

// Done finishes the bar with a message.
func (p *progressBar) Done(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "%s %s\n", p.label, msg)
}
