package trace

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// refMask is the obviously-correct (quadratic) definition the streaming
// Masker must match: every occurrence of every value, and the token
// characters after every prefix, are covered; strictly overlapping covered
// ranges merge into one [MASKED].
func refMask(in []byte, values, prefixes []string) []byte {
	ps := []string{}
	for _, p := range append(append([]string{}, DefaultTokenPrefixes...), prefixes...) {
		if p = strings.TrimSpace(p); p != "" {
			ps = append(ps, p)
		}
	}
	type iv struct{ s, e int }
	var ivs []iv
	run, tokenStart := false, 0
	for e := 1; e <= len(in); e++ {
		if run && tokenAlphabet[in[e-1]] {
			ivs = append(ivs, iv{tokenStart, e})
		} else {
			run = false
		}
		for _, v := range values {
			if v != "" && e >= len(v) && string(in[e-len(v):e]) == v {
				ivs = append(ivs, iv{e - len(v), e})
			}
		}
		if !run {
			for _, p := range ps {
				if e >= len(p) && string(in[e-len(p):e]) == p {
					run, tokenStart = true, e
					break
				}
			}
		}
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].s < ivs[j].s })
	var merged []iv
	for _, v := range ivs {
		if n := len(merged); n > 0 && v.s < merged[n-1].e {
			merged[n-1].e = max(merged[n-1].e, v.e)
			continue
		}
		merged = append(merged, v)
	}
	var out []byte
	last := 0
	for _, v := range merged {
		out = append(out, in[last:v.s]...)
		out = append(out, Mask...)
		last = v.e
	}
	return append(out, in[last:]...)
}

func maskChunks(t testing.TB, chunks [][]byte, values, prefixes []string) []byte {
	t.Helper()
	return maskChunksMode(t, chunks, values, prefixes, false)
}

// maskChunksMode with sparse set uses the fail-link transitions that long
// value lists get instead of the dense table.
func maskChunksMode(t testing.TB, chunks [][]byte, values, prefixes []string, sparse bool) []byte {
	t.Helper()
	var out bytes.Buffer
	m := NewMasker(&out, values, prefixes)
	if sparse {
		m.m.dense = nil
	}
	for _, c := range chunks {
		n, err := m.Write(c)
		if err != nil || n != len(c) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(c))
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func split(s, sep string) [][]byte {
	var out [][]byte
	for _, p := range strings.Split(s, sep) {
		out = append(out, []byte(p))
	}
	return out
}

func TestMasker(t *testing.T) {
	tests := []struct {
		name     string
		values   []string
		prefixes []string
		in       string // "|" separates Write calls
		want     string
	}{
		{"plain", []string{"s3cr3tv4lue"}, nil, "echo s3cr3tv4lue done\n", "echo [MASKED] done\n"},
		{"split in two", []string{"s3cr3tv4lue"}, nil, "echo s3cr3|tv4lue done\n", "echo [MASKED] done\n"},
		{"split byte by byte", []string{"secret"}, nil, "x|s|e|c|r|e|t|y", "x[MASKED]y"},
		{"false start then match", []string{"abcabd"}, nil, "abcab|cabd", "abc[MASKED]"},
		{"short value still masked", []string{"is"}, nil, "This is", "Th[MASKED] [MASKED]"},
		{"inside a word", []string{"fix"}, nil, "ffixx", "f[MASKED]x"},
		{"longest wins", []string{"prefix", "prefix_mask"}, nil, "a prefix_mask b prefix", "a [MASKED] b [MASKED]"},
		{"contained value", []string{"dd", "middle"}, nil, "middle dd", "[MASKED] [MASKED]"},
		{"overlapping merge", []string{"abc", "bcdefgh"}, nil, "xabcdefghx", "x[MASKED]x"},
		{"self overlap", []string{"aa"}, nil, "baaab", "b[MASKED]b"},
		{"touching stay separate", []string{"is"}, nil, "isis", "[MASKED][MASKED]"},
		{"value with newline", []string{"line1\nline2"}, nil, "a line1\nli|ne2 b", "a [MASKED] b"},
		{"end of stream held then flushed", []string{"secret"}, nil, "x secre", "x secre"},
		{"empty value ignored", []string{""}, nil, "abc", "abc"},
		{"utf8 value", []string{"비밀값입니다"}, nil, "값: 비밀|값입니다!", "값: [MASKED]!"},
		{"default prefix", nil, nil, "token glpat-AbC_12.3=x-y done", "token glpat-[MASKED] done"},
		{"prefix split", nil, nil, "gl|pat-abc| def", "glpat-[MASKED] def"},
		{"prefix without token", nil, nil, "glpat- x", "glpat- x"},
		{"prefix broken by space across writes", nil, nil, "glpat| -abc", "glpat -abc"},
		{"prefix inside word", nil, nil, "xglpat-abc", "xglpat-[MASKED]"},
		{"prefix repeated inside token", nil, nil, "glpat-aglpat-b c", "glpat-[MASKED] c"},
		{"prefix at end of stream", nil, nil, "a glpat-abc", "a glpat-[MASKED]"},
		{"custom prefix", nil, []string{" glcbt- "}, "CI_JOB_TOKEN=glcbt-64_abcDEF\n", "CI_JOB_TOKEN=glcbt-[MASKED]\n"},
		{"job token value and prefix", []string{"glcbt-64_abcDEF"}, []string{"glcbt-"}, "t=glcbt-64_abc|DEF;", "t=[MASKED];"},
		{"value and prefix touch", []string{"xyzglpat"}, nil, "axyzglpat-tok b", "a[MASKED]-[MASKED] b"},
		{"mask text itself is not remasked", []string{"MASK"}, nil, "MASK [MASKED]", "[MASKED] [[MASKED]ED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(maskChunks(t, split(tt.in, "|"), tt.values, tt.prefixes))
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			ref := string(refMask([]byte(strings.ReplaceAll(tt.in, "|", "")), tt.values, tt.prefixes))
			if ref != tt.want {
				t.Errorf("reference gives %q, want %q (test or reference wrong)", ref, tt.want)
			}
		})
	}
}

// TestMaskerNoDelay checks bytes that cannot be part of a match are passed
// on by the Write that received them.
func TestMaskerNoDelay(t *testing.T) {
	var out bytes.Buffer
	m := NewMasker(&out, []string{"secretvalue"}, nil)
	mustWrite(t, m, "hello sec")
	if got := out.String(); got != "hello " {
		t.Fatalf("after first write got %q, want %q (only the possible match held)", got, "hello ")
	}
	mustWrite(t, m, "ond line\n")
	if got := out.String(); got != "hello second line\n" {
		t.Fatalf("got %q", got)
	}
	mustWrite(t, m, "secretvalue\n")
	if got := out.String(); got != "hello second line\n[MASKED]\n" {
		t.Fatalf("got %q", got)
	}
}

func mustWrite(t *testing.T, w interface{ Write([]byte) (int, error) }, s string) {
	t.Helper()
	if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

// TestMaskerHeldMemoryBounded feeds a long run that keeps an interval open
// and checks the held output stays small.
func TestMaskerHeldMemoryBounded(t *testing.T) {
	var out bytes.Buffer
	m := NewMasker(&out, []string{"aa"}, nil)
	chunk := bytes.Repeat([]byte("a"), 16*1024)
	for range 16 {
		mustWrite(t, m, string(chunk))
		if len(m.held) > 64 || cap(m.held) > 256*1024 {
			t.Fatalf("held %d bytes (cap %d), want it bounded", len(m.held), cap(m.held))
		}
	}
	mustWrite(t, m, "b")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "[MASKED]b" {
		t.Fatalf("got %q", got)
	}

	out.Reset()
	m = NewMasker(&out, nil, nil)
	mustWrite(t, m, "glpat-")
	for range 16 {
		mustWrite(t, m, strings.Repeat("x", 64*1024))
	}
	if len(m.held) > 64 {
		t.Fatalf("held %d bytes in a long token", len(m.held))
	}
	mustWrite(t, m, "\n")
	if got := out.String(); got != "glpat-[MASKED]\n" {
		t.Fatalf("got %q", got)
	}
}

func TestMaskerRandomAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab-c\n x")
	for iter := range 3000 {
		var values []string
		for range r.IntN(4) {
			values = append(values, randString(r, alphabet, 1+r.IntN(5)))
		}
		var prefixes []string
		if r.IntN(2) == 0 {
			prefixes = append(prefixes, randString(r, alphabet, 1+r.IntN(3)))
		}
		in := []byte(randString(r, alphabet, r.IntN(80)))
		chunks := randomSplit(r, in)
		got := maskChunksMode(t, chunks, values, prefixes, iter%2 == 1)
		want := refMask(in, values, prefixes)
		if !bytes.Equal(got, want) {
			t.Fatalf("iter %d: values %q prefixes %q chunks %q:\ngot  %q\nwant %q", iter, values, prefixes, chunks, got, want)
		}
	}
}

func randString(r *rand.Rand, alphabet []byte, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func randomSplit(r *rand.Rand, in []byte) [][]byte {
	var chunks [][]byte
	for len(in) > 0 {
		n := 1 + r.IntN(len(in))
		if r.IntN(3) == 0 {
			n = min(len(in), 1+r.IntN(3))
		}
		chunks = append(chunks, in[:n])
		in = in[n:]
	}
	return chunks
}

// FuzzMasker: for any input split at any points, the output equals masking
// the unsplit input, equals the reference, and no masked value that cannot
// be formed from the mask text itself survives.
func FuzzMasker(f *testing.F) {
	f.Add([]byte("echo secret; echo sec|ret glpat-abc"), "secret", "cr", "tok-", uint64(1))
	f.Add([]byte("aaaaaaaa"), "aa", "aaa", "", uint64(2))
	f.Add([]byte("xabcdefghx"), "abc", "bcdefgh", "", uint64(3))
	f.Fuzz(func(t *testing.T, in []byte, v1, v2, prefix string, seed uint64) {
		if len(in) > 4096 || len(v1) > 64 || len(v2) > 64 || len(prefix) > 16 {
			return
		}
		values := []string{v1, v2}
		prefixes := []string{prefix}
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		whole := maskChunks(t, [][]byte{in}, values, prefixes)
		parts := maskChunksMode(t, randomSplit(r, in), values, prefixes, seed%2 == 1)
		if !bytes.Equal(whole, parts) {
			t.Fatalf("split output differs:\nwhole %q\nparts %q", whole, parts)
		}
		if ref := refMask(in, values, prefixes); !bytes.Equal(whole, ref) {
			t.Fatalf("differs from reference:\ngot %q\nref %q", whole, ref)
		}
		for _, v := range values {
			if v != "" && !strings.ContainsAny(v, Mask) && bytes.Contains(parts, []byte(v)) {
				t.Fatalf("masked value %q in output %q", v, parts)
			}
		}
	})
}
