package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"testing"
)

// withLimits shrinks DefaultLimits for one test (no test here is
// parallel).
func withLimits(t *testing.T, l Limits) {
	old := DefaultLimits
	DefaultLimits = l
	t.Cleanup(func() { DefaultLimits = old })
}

func deflatedZip(t *testing.T, files map[string]int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, size := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
		mustNo(t, err)
		_, err = w.Write(make([]byte, size))
		mustNo(t, err)
	}
	mustNo(t, zw.Close())
	return buf.Bytes()
}

func zerosTarGz(t *testing.T, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	mustNo(t, tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}))
	_, err := tw.Write(make([]byte, size))
	mustNo(t, err)
	mustNo(t, tw.Close())
	mustNo(t, gz.Close())
	return buf.Bytes()
}

// TestExtractLimits: an archive that unpacks past the total cap, or past
// the ratio cap once over the free allowance, is refused with ErrTooLarge
// and does not write more than allowed; one within the caps unpacks.
func TestExtractLimits(t *testing.T) {
	withLimits(t, Limits{MaxBytes: 4 << 20, FreeBytes: 256 << 10, MaxRatio: 50})
	tests := []struct {
		name    string
		extract func(dest string) (Stats, error)
		refused bool
	}{
		{"zip bomb (ratio)", func(dest string) (Stats, error) {
			z := deflatedZip(t, map[string]int{"a": 1 << 20, "b": 1 << 20})
			return ExtractZip(context.Background(), bytes.NewReader(z), int64(len(z)), dest)
		}, true},
		{"zip within the free allowance", func(dest string) (Stats, error) {
			z := deflatedZip(t, map[string]int{"a": 200 << 10})
			return ExtractZip(context.Background(), bytes.NewReader(z), int64(len(z)), dest)
		}, false},
		{"zip past the total cap", func(dest string) (Stats, error) {
			z := makeZip(t, zipEnt{name: "a", body: string(make([]byte, 3<<20))}, zipEnt{name: "b", body: string(make([]byte, 2<<20))})
			return ExtractZip(context.Background(), bytes.NewReader(z), int64(len(z)), dest)
		}, true},
		{"tar.gz bomb (ratio)", func(dest string) (Stats, error) {
			return ExtractTarGz(context.Background(), bytes.NewReader(zerosTarGz(t, 3<<20)), dest)
		}, true},
		{"tar.gz within the free allowance", func(dest string) (Stats, error) {
			return ExtractTarGz(context.Background(), bytes.NewReader(zerosTarGz(t, 200<<10)), dest)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := tt.extract(t.TempDir())
			if tt.refused {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("err = %v, want ErrTooLarge", err)
				}
				if st.Bytes > DefaultLimits.MaxBytes+64<<10 {
					t.Fatalf("wrote %d bytes before refusing", st.Bytes)
				}
				return
			}
			mustNo(t, err)
		})
	}
}
