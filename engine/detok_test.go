package engine

import (
	"math"
	"testing"
	"unicode/utf8"
)

func TestDetokenizer(t *testing.T) {
	euro := []byte("€") // e2 82 ac
	cases := []struct {
		name   string
		pieces [][]byte
		steps  []string // output after each piece
		final  string   // after Flush
	}{
		{"ascii", [][]byte{[]byte("he"), []byte("llo")}, []string{"he", "llo"}, ""},
		{"rune split over three tokens", [][]byte{euro[:1], euro[1:2], euro[2:]}, []string{"", "", "€"}, ""},
		{"rune split, then text", [][]byte{euro[:2], append(euro[2:3:3], 'x')}, []string{"", "€x"}, ""},
		{"invalid lead byte", [][]byte{{0xff}, []byte("a")}, []string{"\uFFFD", "a"}, ""},
		{"broken continuation", [][]byte{euro[:2], []byte("a")}, []string{"", "\uFFFD\uFFFDa"}, ""},
		{"incomplete at end", [][]byte{[]byte("a"), euro[:2]}, []string{"a", ""}, "\uFFFD"},
		{"surrogate encoding rejected", [][]byte{{0xed, 0xa0}}, []string{"\uFFFD\uFFFD"}, ""},
		{"four-byte rune split", [][]byte{[]byte("😀")[:3], []byte("😀")[3:]}, []string{"", "😀"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d Detokenizer
			for i, p := range c.pieces {
				got := string(d.Add(nil, p))
				if got != c.steps[i] {
					t.Fatalf("step %d: got %q, want %q", i, got, c.steps[i])
				}
				if !utf8.ValidString(got) {
					t.Fatalf("step %d: invalid UTF-8 %q", i, got)
				}
			}
			if got := string(d.Flush(nil)); got != c.final {
				t.Fatalf("flush: got %q, want %q", got, c.final)
			}
		})
	}
}

func FuzzDetokenizer(f *testing.F) {
	f.Add([]byte("h\xe2\x82"), []byte("\xacllo\xff"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var d Detokenizer
		out := d.Add(nil, a)
		out = d.Add(out, b)
		out = d.Flush(out)
		if !utf8.Valid(out) {
			t.Fatalf("invalid output %q", out)
		}
		if utf8.Valid(append(append([]byte{}, a...), b...)) && string(out) != string(a)+string(b) {
			t.Fatalf("valid input changed: %q -> %q", string(a)+string(b), out)
		}
	})
}

func TestLogProbs(t *testing.T) {
	logits := []float32{1, 3, 2, 3, -1}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l))
	}
	want := func(i int) float32 { return float32(float64(logits[i]) - math.Log(sum)) }
	lp, top := LogProbs(logits, 2, 3)
	if math.Abs(float64(lp-want(2))) > 1e-5 {
		t.Fatalf("logprob = %v, want %v", lp, want(2))
	}
	if len(top) != 3 {
		t.Fatalf("top = %v", top)
	}
	// Ties keep the lower token id first; then descending.
	wantTop := []int32{1, 3, 2}
	for i, tl := range top {
		if tl.Token != wantTop[i] || math.Abs(float64(tl.Logprob-want(int(tl.Token)))) > 1e-5 {
			t.Fatalf("top[%d] = %+v, want token %d logprob %v", i, tl, wantTop[i], want(int(wantTop[i])))
		}
	}
	if _, none := LogProbs(logits, 0, 0); none != nil {
		t.Fatalf("n=0 gave %v", none)
	}
}
