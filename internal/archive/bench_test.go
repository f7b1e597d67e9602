package archive

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchFiles is the file count of every benchmark tree, so that trees
// differ only in bytes.
const benchFiles = 16

// benchTree writes size bytes in benchFiles files under a new directory:
// half random (incompressible), half text-like, as build outputs are.
func benchTree(b *testing.B, size int64) string {
	b.Helper()
	root := b.TempDir()
	fileSize := size / benchFiles
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, fileSize)
	for i := int64(0); i < benchFiles; i++ {
		if i%2 == 0 {
			for j := range buf {
				buf[j] = byte(rng.Uint32())
			}
		} else {
			for j := range buf {
				buf[j] = "abcdefghij klmnop\n"[rng.IntN(18)]
			}
		}
		dir := filepath.Join(root, "out", fmt.Sprintf("d%02d", i%8))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.bin", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return root
}

// BenchmarkWriteZip streams trees of growing size to io.Discard: MB/s of
// input, and B/op, which stays flat (the writer holds no file in memory).
//
//	go test -run XXX -bench WriteZip -benchtime 1x ./internal/archive/
func BenchmarkWriteZip(b *testing.B) {
	for _, tc := range []struct {
		size  int64
		level string
	}{{16 << 20, "default"}, {256 << 20, "default"}, {256 << 20, "fastest"}} {
		size := tc.size
		b.Run(fmt.Sprintf("%dMiB-%s", size>>20, tc.level), func(b *testing.B) {
			root := benchTree(b, size)
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				st, err := WriteZip(context.Background(), io.Discard, root, Spec{Paths: []string{"out"}, CompressionLevel: tc.level})
				if err != nil || st.Bytes != size {
					b.Fatalf("%+v %v", st, err)
				}
			}
		})
	}
}
