package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"path/filepath"
	"testing"
)

func FuzzExtractZip(f *testing.F) {
	f.Add(makeZip(f, zipEnt{name: "a/b", body: "x"}, zipEnt{name: "l", body: "a", mode: fs.ModeSymlink | 0o777}))
	f.Add(makeZip(f, zipEnt{name: "../x", body: "x"}))
	f.Add(makeZip(f, zipEnt{name: "d", body: ".", mode: fs.ModeSymlink | 0o777}, zipEnt{name: "d/../../x", body: "x"}))
	f.Add(makeZip(f, zipEnt{name: "d/", mode: fs.ModeDir | 0o500}, zipEnt{name: "d/f", body: "x", mode: 0o400}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		_, _ = ExtractZip(context.Background(), bytes.NewReader(data), int64(len(data)), filepath.Join(parent, "dest"))
		assertOnlyDest(t, parent)
	})
}

func FuzzExtractTarGz(f *testing.F) {
	f.Add(makeTarGz(f, tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Size: 2}, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "a/b"}))
	f.Add(makeTarGz(f, tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}))
	f.Add(makeTarGz(f, tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: "."}, tar.Header{Name: "d/../x", Typeflag: tar.TypeReg, Size: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		_, _ = ExtractTarGz(context.Background(), bytes.NewReader(data), filepath.Join(parent, "dest"))
		assertOnlyDest(t, parent)
	})
}
