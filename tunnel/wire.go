package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// wire.go holds the primitive encoders shared by all frames: big-endian
// integers and strings prefixed with a 16-bit length. Decoders never
// allocate more than the bounded input they were given.

var errShort = errors.New("truncated")

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) {
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// str reads a 16-bit-length-prefixed string of at most max bytes that is
// valid UTF-8 without control characters (these strings end up in logs).
func (d *decoder) str(field string, max int) string {
	v := d.secret(field, max)
	if d.err != nil {
		return ""
	}
	if err := checkText(field, v); err != nil {
		d.err = err
		return ""
	}
	return v
}

// secret reads a 16-bit-length-prefixed string of at most max bytes without
// checking its content, so that it never ends up in an error.
func (d *decoder) secret(field string, max int) string {
	n := int(d.u16())
	if d.err != nil {
		return ""
	}
	if n > max {
		d.err = fmt.Errorf("%s is %d bytes, limit %d", field, n, max)
		return ""
	}
	v := d.take(n)
	return string(v)
}

// checkText rejects strings that would corrupt logs or terminals.
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%s contains control character %U", field, r)
		}
	}
	return nil
}

// readFull is io.ReadFull that reports a clean EOF before the first byte as
// io.EOF and a cut in the middle as io.ErrUnexpectedEOF.
func readFull(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	return err
}
