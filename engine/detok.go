package engine

import "unicode/utf8"

// Detokenizer turns a stream of token pieces into valid UTF-8. A piece may
// end inside a multi-byte rune (byte-fallback tokens); those bytes are held
// back until the rune completes. Bytes that can never form a rune are
// replaced with U+FFFD, so output is always valid UTF-8.
type Detokenizer struct {
	pending []byte
}

// Add appends to dst the text that piece completes.
func (d *Detokenizer) Add(dst, piece []byte) []byte {
	d.pending = append(d.pending, piece...)
	p := d.pending
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		if r != utf8.RuneError || size > 1 {
			dst = append(dst, p[:size]...)
			p = p[size:]
			continue
		}
		// p[0] starts no valid rune here: either an incomplete rune at the
		// end, to wait for, or an invalid byte, to replace.
		if !utf8.FullRune(p) && validPrefix(p) {
			break
		}
		dst = utf8.AppendRune(dst, utf8.RuneError)
		p = p[1:]
	}
	d.pending = append(d.pending[:0], p...)
	return dst
}

// Pending reports whether bytes are held back.
func (d *Detokenizer) Pending() bool { return len(d.pending) > 0 }

// Flush appends U+FFFD for any incomplete rune still held and resets.
func (d *Detokenizer) Flush(dst []byte) []byte {
	if len(d.pending) > 0 {
		dst = utf8.AppendRune(dst, utf8.RuneError)
		d.pending = d.pending[:0]
	}
	return dst
}

// validPrefix reports whether p (shorter than a full rune) could still grow
// into a valid UTF-8 encoding.
func validPrefix(p []byte) bool {
	n := 0
	switch c := p[0]; {
	case c >= 0xC2 && c <= 0xDF:
		n = 2
	case c >= 0xE0 && c <= 0xEF:
		n = 3
	case c >= 0xF0 && c <= 0xF4:
		n = 4
	default:
		return false
	}
	if len(p) >= n {
		return false
	}
	for i := 1; i < len(p); i++ {
		lo, hi := byte(0x80), byte(0xBF)
		if i == 1 {
			switch p[0] {
			case 0xE0:
				lo = 0xA0
			case 0xED:
				hi = 0x9F
			case 0xF0:
				lo = 0x90
			case 0xF4:
				hi = 0x8F
			}
		}
		if p[i] < lo || p[i] > hi {
			return false
		}
	}
	return true
}
