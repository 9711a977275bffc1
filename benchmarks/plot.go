package benchmarks

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// PlotSVG draws throughput against latency for the points of each result:
// output tokens/s on x, and median TTFT and TPOT (ms) on two y panels, one
// line per result, so a sweep's knee is visible at a glance.
func PlotSVG(w io.Writer, rs []*Result) error {
	const W, H, pad, gap = 900, 620, 70, 60
	panelH := (H - 2*pad - gap) / 2
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	maxX := 0.0
	maxY := [2]float64{}
	y := [2]func(Summary) float64{
		func(s Summary) float64 { return s.TTFT.Median },
		func(s Summary) float64 { return s.TPOT.Median },
	}
	for _, r := range rs {
		for _, p := range r.Points {
			maxX = math.Max(maxX, p.Summary.OutputRate)
			for k := range y {
				if v := y[k](p.Summary); !math.IsNaN(v) {
					maxY[k] = math.Max(maxY[k], v)
				}
			}
		}
	}
	if maxX == 0 {
		return fmt.Errorf("plot: no points with throughput")
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	titles := [2]string{"median TTFT (ms)", "median TPOT (ms)"}
	for k := range y {
		top := pad + k*(panelH+gap)
		bottom := top + panelH
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", pad, bottom, W-pad, bottom)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", pad, top, pad, bottom)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", pad, top-8, titles[k])
		for i := 0; i <= 4; i++ {
			fx := float64(i) / 4
			x := pad + int(fx*float64(W-2*pad))
			yy := bottom - int(fx*float64(panelH))
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%.0f</text>`+"\n", x, bottom+16, fx*maxX)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%.0f</text>`+"\n", pad-6, yy+4, fx*maxY[k])
			fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#eee"/>`+"\n", pad, yy, W-pad, yy)
		}
		for ri, r := range rs {
			col := colors[ri%len(colors)]
			var pts []string
			for _, p := range r.Points {
				v := y[k](p.Summary)
				if math.IsNaN(v) || maxY[k] == 0 {
					continue
				}
				x := float64(pad) + p.Summary.OutputRate/maxX*float64(W-2*pad)
				yy := float64(bottom) - v/maxY[k]*float64(panelH)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, yy))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title></circle>`+"\n", x, yy, col, r.Label, p.load())
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), col)
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">output tokens/s</text>`+"\n", W/2, H-pad/2+10)
	for ri, r := range rs {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", W-pad-220, 12+ri*16, colors[ri%len(colors)], W-pad-204, 22+ri*16, r.Label)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
