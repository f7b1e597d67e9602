package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"strings"
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

// The caps come from the environment the runner gives the helper
// (config.toml extract_*); unset keeps the defaults, a bad value is an
// error naming the variable and the config key.
func TestProcessLimits(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Limits
		wantErr string
	}{
		{"defaults", nil, DefaultLimits, ""},
		{"all set", map[string]string{EnvMaxSize: "1000", EnvMaxRatio: "3", EnvRatioFreeSize: "10"}, Limits{MaxBytes: 1000, MaxRatio: 3, FreeBytes: 10}, ""},
		{"one set", map[string]string{EnvMaxRatio: "1000"}, Limits{MaxBytes: DefaultLimits.MaxBytes, MaxRatio: 1000, FreeBytes: DefaultLimits.FreeBytes}, ""},
		{"not a number", map[string]string{EnvMaxSize: "64GiB"}, Limits{}, "extract_max_size"},
		{"zero", map[string]string{EnvMaxRatio: "0"}, Limits{}, "extract_max_ratio"},
		{"negative", map[string]string{EnvRatioFreeSize: "-1"}, Limits{}, "extract_ratio_free_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{EnvMaxSize, EnvMaxRatio, EnvRatioFreeSize} {
				t.Setenv(k, tc.env[k])
			}
			got, err := ProcessLimits()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ProcessLimits() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	// Applied to extraction: a 2 MiB file over a 1 MiB cap is refused.
	t.Setenv(EnvMaxSize, "1048576")
	z := deflatedZip(t, map[string]int{"a": 2 << 20})
	if _, err := ExtractZip(context.Background(), bytes.NewReader(z), int64(len(z)), t.TempDir()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("extract over the configured cap: %v; want ErrTooLarge", err)
	}
}
