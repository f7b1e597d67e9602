package trace

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

func newTestTrace(t *testing.T) *Trace {
	t.Helper()
	tr, err := New(Options{JobToken: testToken, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestTraceReplacesInvalidUTF8: what is stored (and so sent, with its
// checksum and size) is valid UTF-8, each stray byte replaced by U+FFFD
// as GitLab Runner does, and a sequence split across writes stays whole.
func TestTraceReplacesInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"valid", []string{"héllo ✅\n"}, "héllo ✅\n"},
		{"stray byte", []string{"a\xffb\n"}, "a\uFFFDb\n"},
		{"latin-1", []string{"caf\xe9\n"}, "caf\uFFFD\n"},
		{"each invalid byte", []string{"\xc0\xaf\n"}, "\uFFFD\uFFFD\n"},
		{"surrogate", []string{"\xed\xa0\x80\n"}, "\uFFFD\uFFFD\uFFFD\n"},
		{"3-byte rune split 1+2", []string{"a\xe2", "\x9c\x85b"}, "a✅b"},
		{"3-byte rune split 2+1", []string{"a\xe2\x9c", "\x85b"}, "a✅b"},
		{"4-byte rune split in 4", []string{"\xf0", "\x9f", "\x98", "\x80"}, "😀"},
		{"split then broken", []string{"a\xe2\x9c", "Xb"}, "a\uFFFD\uFFFDXb"},
		{"cut at the end of the log", []string{"end\xe2\x9c"}, "end\uFFFD\uFFFD"},
		{"held prefix then stray", []string{"\xe2", "\xff"}, "\uFFFD\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTrace(t)
			for _, w := range tc.writes {
				mustWrite(t, tr, w)
			}
			if err := tr.Finish(); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, tr.Buffer())
			if string(got) != tc.want {
				t.Fatalf("stored %q, want %q", got, tc.want)
			}
			checkSum(t, tr.Buffer(), got)
		})
	}
}

// TestTraceUTF8IndependentOfSplits: random bytes cut into random writes
// on a stream and on Write are stored as the reference replacement of the
// whole.
func TestTraceUTF8IndependentOfSplits(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("ab\n\xe2\x9c\x85\xf0\x9f\x98\x80\xc3\xa9\xff\x80\xed")
	for range 200 {
		in := make([]byte, r.IntN(200))
		for i := range in {
			in[i] = alphabet[r.IntN(len(alphabet))]
		}
		want := reference(in)
		for _, stream := range []bool{false, true} {
			tr := newTestTrace(t)
			var w interface{ Write([]byte) (int, error) } = tr
			var s *Stream
			if stream {
				s = tr.NewStream()
				w = s
			}
			for rest := in; len(rest) > 0; {
				n := min(len(rest), 1+r.IntN(5))
				mustWrite(t, w, string(rest[:n]))
				rest = rest[n:]
			}
			if err := tr.Finish(); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, tr.Buffer())
			if !bytes.Equal(got, want) || !utf8.Valid(got) {
				t.Fatalf("input %q (stream %v): stored %q, want %q", in, stream, got, want)
			}
		}
	}
}

// reference replaces every byte DecodeRune cannot take with U+FFFD.
func reference(p []byte) []byte {
	var out []byte
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		if r == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, p[:size]...)
		}
		p = p[size:]
	}
	return out
}
