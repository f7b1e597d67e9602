package trace

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
)

// logChunk is 1 MiB of typical log lines; every line holds the two masked
// values when withSecrets is set.
func logChunk(withSecrets bool) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 1<<20; i++ {
		if withSecrets && i%50 == 0 {
			fmt.Fprintf(&b, "%06d deploy --token=Sup3rS3cretValue1 --key=AnotherSecret-2 ok\n", i)
		} else {
			fmt.Fprintf(&b, "%06d compiling github.com/example/pkg/module_%d.go [gcc -O2 -g] done in 12ms\n", i, i%97)
		}
	}
	return b.Bytes()[:1<<20]
}

var benchValues = []string{"Sup3rS3cretValue1", "AnotherSecret-2"}

func BenchmarkMasker(b *testing.B) {
	for _, bc := range []struct {
		name    string
		values  []string
		secrets bool
	}{
		{"values=0", nil, false},
		{"values=2", benchValues, false},
		{"values=2/occurring", benchValues, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			chunk := logChunk(bc.secrets)
			m := NewMasker(io.Discard, bc.values, []string{"glcbt-"})
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPipeline writes through masker and disk buffer (no limit) and
// reports the heap in use at the end: it stays flat however much is written.
func BenchmarkPipeline(b *testing.B) {
	chunk := logChunk(true)
	tr, err := New(Options{MaskValues: benchValues, Limit: 1 << 50, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(tr.Buffer().Size())/(1<<20), "stored-MiB")
}

// TestPipeline200MB (PODRUNNER_TRACE_BIG=1): 200 MB with two masked values
// go through masker and buffer; the Go heap stays small and no value
// survives.
func TestPipeline200MB(t *testing.T) {
	if os.Getenv("PODRUNNER_TRACE_BIG") == "" {
		t.Skip("set PODRUNNER_TRACE_BIG=1 to stream 200 MB")
	}
	chunk := logChunk(true)
	tr, err := New(Options{MaskValues: benchValues, Limit: 1 << 40, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var maxHeap uint64
	var ms runtime.MemStats
	for i := range 200 {
		// Split each MiB at an odd point so values straddle writes.
		cut := 1<<19 + 13*i
		mustWrite(t, tr, string(chunk[:cut]))
		mustWrite(t, tr, string(chunk[cut:]))
		if i%20 == 0 {
			runtime.ReadMemStats(&ms)
			maxHeap = max(maxHeap, ms.HeapInuse)
		}
	}
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stored %d MiB, max heap in use %.1f MiB", tr.Buffer().Size()>>20, float64(maxHeap)/(1<<20))
	if maxHeap > 64<<20 {
		t.Errorf("heap in use reached %d MiB, want constant memory", maxHeap>>20)
	}
	// Scan the stored log in pieces for leaks.
	r := tr.Buffer().Reader(0)
	buf := make([]byte, 1<<20)
	var carry []byte
	for {
		n, err := r.Read(buf)
		data := append(carry, buf[:n]...)
		for _, v := range benchValues {
			if strings.Contains(string(data), v) {
				t.Fatalf("masked value %q stored", v)
			}
		}
		carry = append([]byte(nil), data[max(0, len(data)-32):]...)
		if err != nil {
			break
		}
	}
}
