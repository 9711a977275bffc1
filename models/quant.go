package models

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/x448/float16"
)

// TensorType is a weight encoding the synthesizer can write.
type TensorType string

const (
	F32  TensorType = "F32"
	F16  TensorType = "F16"
	Q8_0 TensorType = "Q8_0"
	Q4_0 TensorType = "Q4_0"
)

const qk = 32 // elements per block in Q8_0 and Q4_0

// ParseTensorType accepts the names llama.cpp prints (case-insensitive).
func ParseTensorType(s string) (TensorType, error) {
	switch t := TensorType(upper(s)); t {
	case F32, F16, Q8_0, Q4_0:
		return t, nil
	}
	return "", fmt.Errorf("tensor type %q: want F32, F16, Q8_0 or Q4_0", s)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func (t TensorType) ggmlKind() uint32 {
	switch t {
	case F16:
		return uint32(ggml.TensorTypeF16)
	case Q8_0:
		return uint32(ggml.TensorTypeQ8_0)
	case Q4_0:
		return uint32(ggml.TensorTypeQ4_0)
	}
	return uint32(ggml.TensorTypeF32)
}

func (t TensorType) fileType() ggml.FileType {
	switch t {
	case F16:
		return ggml.FileTypeF16
	case Q8_0:
		return ggml.FileTypeQ8_0
	case Q4_0:
		return ggml.FileType(2) // MOSTLY_Q4_0; unexported in ollama
	}
	return ggml.FileTypeF32
}

// rowBytes is the encoded size of n elements.
func (t TensorType) rowBytes(n int) int {
	switch t {
	case F16:
		return 2 * n
	case Q8_0:
		return n / qk * 34
	case Q4_0:
		return n / qk * 18
	}
	return 4 * n
}

// blockAligned reports whether rows of n elements can use this type.
func (t TensorType) blockAligned(n int) bool {
	return (t != Q8_0 && t != Q4_0) || n%qk == 0
}

// encode appends x encoded as t to dst.
func (t TensorType) encode(dst []byte, x []float32) []byte {
	switch t {
	case F16:
		for _, v := range x {
			dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(v).Bits())
		}
	case Q8_0:
		for b := 0; b < len(x); b += qk {
			dst = appendQ8_0(dst, x[b:b+qk])
		}
	case Q4_0:
		for b := 0; b < len(x); b += qk {
			dst = appendQ4_0(dst, x[b:b+qk])
		}
	default:
		for _, v := range x {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	}
	return dst
}

// appendQ8_0 encodes one block: an f16 scale, then 32 signed bytes.
func appendQ8_0(dst []byte, x []float32) []byte {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(d).Bits())
	for _, v := range x {
		dst = append(dst, byte(int8(math.Round(float64(v*id)))))
	}
	return dst
}

// appendQ4_0 encodes one block: an f16 scale, then 16 bytes holding element
// j in the low nibble and element j+16 in the high nibble, offset by 8.
func appendQ4_0(dst []byte, x []float32) []byte {
	var amax, mx float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, mx = a, v
		}
	}
	d := mx / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(d).Bits())
	q := func(v float32) byte { return byte(min(15, int(v*id+8.5))) }
	for j := range qk / 2 {
		dst = append(dst, q(x[j])|q(x[j+qk/2])<<4)
	}
	return dst
}

// decodeRow is the inverse of encode, used by tests to check round trips.
func (t TensorType) decodeRow(src []byte, n int) []float32 {
	out := make([]float32, 0, n)
	switch t {
	case F16:
		for i := range n {
			out = append(out, float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32())
		}
	case Q8_0:
		for b := 0; b < n/qk; b++ {
			blk := src[b*34:]
			d := float16.Frombits(binary.LittleEndian.Uint16(blk)).Float32()
			for j := range qk {
				out = append(out, d*float32(int8(blk[2+j])))
			}
		}
	case Q4_0:
		for b := 0; b < n/qk; b++ {
			blk := src[b*18:]
			d := float16.Frombits(binary.LittleEndian.Uint16(blk)).Float32()
			lo := make([]float32, qk)
			for j := range qk / 2 {
				lo[j] = d * float32(int(blk[2+j]&0x0f)-8)
				lo[j+qk/2] = d * float32(int(blk[2+j]>>4)-8)
			}
			out = append(out, lo...)
		}
	default:
		for i := range n {
			out = append(out, math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
		}
	}
	return out
}
