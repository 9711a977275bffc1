package models

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// checkBounds walks a GGUF file's header — metadata and tensor infos —
// without allocating what it declares, and fails when a count or a
// length claims more bytes than the file has left, or a tensor has more
// dimensions than GGUF allows. A hostile header could otherwise make the
// decoder allocate without bound (found by FuzzInspect: an array declaring
// hundreds of gigabytes crashed the process out of memory).
func checkBounds(r io.Reader, size int64) error {
	br := bufio.NewReaderSize(r, 64<<10)
	left := size
	take := func(n int64) error {
		if n < 0 || n > left {
			return fmt.Errorf("the header claims %d more bytes than the file has (%d left)", n, left)
		}
		left -= n
		_, err := br.Discard(int(n))
		return err
	}
	u32 := func() (uint32, error) {
		var b [4]byte
		if left < 4 {
			return 0, fmt.Errorf("the header ends early")
		}
		left -= 4
		_, err := io.ReadFull(br, b[:])
		return binary.LittleEndian.Uint32(b[:]), err
	}
	u64 := func() (uint64, error) {
		var b [8]byte
		if left < 8 {
			return 0, fmt.Errorf("the header ends early")
		}
		left -= 8
		_, err := io.ReadFull(br, b[:])
		return binary.LittleEndian.Uint64(b[:]), err
	}
	str := func() error {
		n, err := u64()
		if err != nil {
			return err
		}
		if n > uint64(left) {
			return fmt.Errorf("a string claims %d bytes, the file has %d left", n, left)
		}
		return take(int64(n))
	}
	// Fixed sizes of GGUF's scalar types, by type id.
	scalar := map[uint32]int64{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	var value func(typ uint32, depth int) error
	value = func(typ uint32, depth int) error {
		if n, ok := scalar[typ]; ok {
			return take(n)
		}
		switch typ {
		case 8:
			return str()
		case 9:
			if depth > 2 {
				return fmt.Errorf("arrays nested too deep")
			}
			et, err := u32()
			if err != nil {
				return err
			}
			n, err := u64()
			if err != nil {
				return err
			}
			// Every element takes at least one byte (a string, eight).
			min := int64(8)
			if s, ok := scalar[et]; ok {
				min = s
			}
			if n > uint64(left)/uint64(min) {
				return fmt.Errorf("an array claims %d elements, the file has %d bytes left", n, left)
			}
			if s, ok := scalar[et]; ok {
				return take(int64(n) * s)
			}
			for range n {
				if err := value(et, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		return fmt.Errorf("unknown metadata type %d", typ)
	}
	if err := take(4); err != nil { // magic, checked by the caller
		return err
	}
	if _, err := u32(); err != nil { // version
		return err
	}
	tensors, err := u64()
	if err != nil {
		return err
	}
	kvs, err := u64()
	if err != nil {
		return err
	}
	// A metadata pair takes at least 12 bytes, a tensor info at least 24.
	if kvs > uint64(left)/12 || tensors > uint64(left)/24 {
		return fmt.Errorf("the header claims %d metadata pairs and %d tensors, more than the file's %d bytes can hold", kvs, tensors, size)
	}
	for range kvs {
		if err := str(); err != nil {
			return err
		}
		typ, err := u32()
		if err != nil {
			return err
		}
		if err := value(typ, 0); err != nil {
			return err
		}
	}
	for range tensors {
		if err := str(); err != nil {
			return err
		}
		dims, err := u32()
		if err != nil {
			return err
		}
		if dims == 0 || dims > 4 {
			return fmt.Errorf("a tensor has %d dimensions (GGUF allows 1 to 4)", dims)
		}
		if err := take(int64(dims)*8 + 4 + 8); err != nil { // dims, type, offset
			return err
		}
	}
	return nil
}
