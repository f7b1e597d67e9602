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

// BenchmarkCacheFormat compares the cache formats on the same tree: zip
// (GitLab Runner's, the default) and tar.gz (podrunner's former one), each
// written to a file and extracted from it, as the cache helpers do.
//
//	go test -run XXX -bench CacheFormat -benchtime 3x ./internal/archive/
func BenchmarkCacheFormat(b *testing.B) {
	const size = 64 << 20
	root := benchTree(b, size)
	spec := Spec{Paths: []string{"out"}}
	ctx := context.Background()
	formats := []struct {
		name    string
		write   func(io.Writer) (Stats, error)
		extract func(f *os.File, size int64, dest string) (Stats, error)
	}{
		{"zip", func(w io.Writer) (Stats, error) { return WriteZip(ctx, w, root, spec) },
			func(f *os.File, n int64, dest string) (Stats, error) { return ExtractZip(ctx, f, n, dest) }},
		{"targz", func(w io.Writer) (Stats, error) { return WriteTarGz(ctx, w, root, spec) },
			func(f *os.File, _ int64, dest string) (Stats, error) { return ExtractTarGz(ctx, f, dest) }},
	}
	for _, ft := range formats {
		archivePath := filepath.Join(b.TempDir(), "cache")
		b.Run(ft.name+"/write", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				f, err := os.Create(archivePath)
				if err != nil {
					b.Fatal(err)
				}
				if st, err := ft.write(f); err != nil || st.Bytes != size {
					b.Fatalf("%+v %v", st, err)
				}
				f.Close()
			}
			fi, err := os.Stat(archivePath)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fi.Size())/size, "ratio")
		})
		b.Run(ft.name+"/extract", func(b *testing.B) {
			b.SetBytes(size)
			f, err := os.Open(archivePath)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			for b.Loop() {
				dest := b.TempDir()
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				if st, err := ft.extract(f, fi.Size(), dest); err != nil || st.Bytes != size {
					b.Fatalf("%+v %v", st, err)
				}
			}
		})
	}
}
