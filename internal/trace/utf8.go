package trace

import (
	"io"
	"unicode/utf8"
)

// replacement is U+FFFD, which GitLab Runner puts in place of bytes that
// are not UTF-8 before the log leaves the runner.
var replacement = []byte(string(utf8.RuneError))

// validUTF8 writes to w what it is given with every byte that is not part
// of a valid UTF-8 sequence replaced by U+FFFD. A sequence split across
// writes is held (at most 3 bytes) until it completes, so the result does
// not depend on how the output was cut into writes. Not safe for
// concurrent use: its owner serializes writes.
type validUTF8 struct {
	w    io.Writer
	held [utf8.UTFMax]byte
	n    int
	out  []byte
}

func (v *validUTF8) Write(p []byte) (int, error) {
	in := p
	if v.n > 0 {
		in = append(v.held[:v.n:v.n], p...) // a copy: cap is n
		v.n = 0
	}
	// Common case: valid, perhaps but for a sequence cut at the end.
	if cut := len(in) - incompleteTail(in); utf8.Valid(in[:cut]) {
		v.n = copy(v.held[:], in[cut:])
		if cut == 0 {
			return len(p), nil
		}
		_, err := v.w.Write(in[:cut])
		return len(p), err
	}
	v.out = v.out[:0]
	for len(in) > 0 {
		r, size := utf8.DecodeRune(in)
		switch {
		case r != utf8.RuneError || size > 1:
			v.out = append(v.out, in[:size]...)
		case !utf8.FullRune(in):
			v.n = copy(v.held[:], in) // a sequence cut by the write
			size = len(in)
		default:
			v.out = append(v.out, replacement...)
		}
		in = in[size:]
	}
	_, err := v.w.Write(v.out)
	return len(p), err
}

// incompleteTail is the length of a valid but unfinished UTF-8 sequence
// at the end of p (0 to 3).
func incompleteTail(p []byte) int {
	for i := 1; i < utf8.UTFMax && i <= len(p); i++ {
		c := p[len(p)-i]
		if c < utf8.RuneSelf {
			return 0
		}
		if utf8.RuneStart(c) {
			if utf8.FullRune(p[len(p)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}

// Flush writes the held bytes of an unfinished sequence, each replaced.
func (v *validUTF8) Flush() error {
	if v.n == 0 {
		return nil
	}
	out := make([]byte, 0, v.n*len(replacement))
	for range v.n {
		out = append(out, replacement...)
	}
	v.n = 0
	_, err := v.w.Write(out)
	return err
}
