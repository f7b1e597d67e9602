package cache_test

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/cache"
	"github.com/podrunner/podrunner/internal/cache/cachetest"
)

// GitLab Runner's cache format, as its cache-archiver writes it
// (commands/helpers/file_archiver.go + helpers/archives/zip_create.go): a
// zip whose entry names are slash-separated paths relative to the project
// directory, directories as entries ending in "/", symbolic links as
// entries with the symlink mode whose content is the link target, Unix
// modes in the external attributes (made by Unix), regular files deflated.

// remoteOnly hides that a Dir store returns files, so that Extract takes
// the path of a remote store (spooling to a temporary file).
type remoteOnly struct{ cache.Dir }

func (r remoteOnly) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := r.Dir.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{rc, rc}, nil
}

// TestArchiveReadsAsGitLabRunnerZip: what podrunner stores is read by
// archive/zip as GitLab Runner's extractor reads it.
func TestArchiveReadsAsGitLabRunnerZip(t *testing.T) {
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "vendor", "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "vendor", "a.txt"), []byte("alpha"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "vendor", "bin", "tool"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.Symlink("bin/tool", filepath.Join(src, "vendor", "link")))
	must(t, os.WriteFile(filepath.Join(src, "other.txt"), []byte("not cached"), 0o644))

	d := cache.Dir{Root: t.TempDir()}
	if _, err := cache.Archive(context.Background(), d, "group/demo/key/cache.zip", src, archive.Spec{Paths: []string{"vendor"}}, 0); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(filepath.Join(d.Root, "group/demo/key/cache.zip"))
	if err != nil {
		t.Fatalf("not a zip archive: %v", err)
	}
	defer zr.Close()
	type ent struct {
		mode fs.FileMode
		body string
	}
	got := map[string]ent{}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.CreatorVersion>>8 != 3 {
			t.Errorf("%s: creator %d, want Unix (3): GitLab Runner reads modes from Unix external attributes", f.Name, f.CreatorVersion>>8)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		got[f.Name] = ent{f.Mode(), string(b)}
	}
	wantNames := []string{"vendor/", "vendor/a.txt", "vendor/bin/", "vendor/bin/tool", "vendor/link"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("entries %q, want %q (relative to the project directory)", names, wantNames)
	}
	for name, want := range map[string]ent{
		"vendor/":         {fs.ModeDir | 0o755, ""},
		"vendor/a.txt":    {0o644, "alpha"},
		"vendor/bin/tool": {0o755, "#!/bin/sh\n"},
		"vendor/link":     {fs.ModeSymlink | 0o777, "bin/tool"},
	} {
		if g := got[name]; g.mode != want.mode || g.body != want.body {
			t.Errorf("%s: mode %v body %q, want %v %q", name, g.mode, g.body, want.mode, want.body)
		}
	}
}

// gitlabRunnerZip builds, with archive/zip, a cache as GitLab Runner's
// archiver lays it out.
func gitlabRunnerZip(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	add := func(name string, mode fs.FileMode, method uint16, body string) {
		h := &zip.FileHeader{Name: name, Method: method, Modified: mtime}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, body); err != nil {
			t.Fatal(err)
		}
	}
	add("node_modules/", fs.ModeDir|0o755, zip.Store, "")
	add("node_modules/x/", fs.ModeDir|0o750, zip.Store, "")
	add("node_modules/x/i.js", 0o644, zip.Deflate, "module.exports = 1")
	add("node_modules/.bin/", fs.ModeDir|0o755, zip.Store, "")
	add("node_modules/.bin/run", 0o755, zip.Deflate, "#!/bin/sh\necho run\n")
	add("node_modules/.bin/x", fs.ModeSymlink|0o777, zip.Store, "../x/i.js")
	must(t, zw.Close())
	return buf.Bytes()
}

// TestExtractGitLabRunnerZip: a cache GitLab Runner wrote is restored,
// from a local cache_dir (read in place) and from a remote store
// (spooled), with directories, modes, symlinks and mtimes.
func TestExtractGitLabRunnerZip(t *testing.T) {
	data := gitlabRunnerZip(t)
	for _, tc := range []struct {
		name string
		st   func(cache.Dir) cache.Store
	}{
		{"cache_dir", func(d cache.Dir) cache.Store { return d }},
		{"remote", func(d cache.Dir) cache.Store { return remoteOnly{d} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cache.Dir{Root: t.TempDir()}
			must(t, d.Put(context.Background(), "runner/abc/project/7/key", bytes.NewReader(data)))
			dest := t.TempDir()
			stats, n, err := cache.Extract(context.Background(), tc.st(d), "runner/abc/project/7/key", dest)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(data)) || stats.Files != 6 {
				t.Errorf("stats %+v, %d bytes; want 6 entries, %d bytes", stats, n, len(data))
			}
			want := []string{"node_modules/.bin/run=#!/bin/sh\necho run\n", "node_modules/x/i.js=module.exports = 1"}
			if got := cachetest.Tree(t, dest); !slices.Equal(got, want) {
				t.Errorf("restored %q, want %q", got, want)
			}
			for p, mode := range map[string]fs.FileMode{
				"node_modules/x":        fs.ModeDir | 0o750,
				"node_modules/.bin/run": 0o755,
				"node_modules/x/i.js":   0o644,
			} {
				fi, err := os.Lstat(filepath.Join(dest, p))
				if err != nil || fi.Mode() != mode {
					t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, mode)
				}
			}
			if target, err := os.Readlink(filepath.Join(dest, "node_modules/.bin/x")); err != nil || target != "../x/i.js" {
				t.Errorf("symlink: %q %v", target, err)
			}
			if fi, err := os.Stat(filepath.Join(dest, "node_modules/x/i.js")); err != nil || !fi.ModTime().Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("mtime not restored: %v", fi.ModTime())
			}
		})
	}
}

// TestExtractEarlierTarGz: a tar.gz cache of an earlier podrunner, under
// the same S3 object name, is still restored once.
func TestExtractEarlierTarGz(t *testing.T) {
	src := cachetest.Project(t)
	var buf bytes.Buffer
	if _, err := archive.WriteTarGz(context.Background(), &buf, src, archive.Spec{Paths: []string{"vendor"}}); err != nil {
		t.Fatal(err)
	}
	d := cache.Dir{Root: t.TempDir()}
	must(t, d.Put(context.Background(), "old", &buf))
	dest := t.TempDir()
	if _, _, err := cache.Extract(context.Background(), remoteOnly{d}, "old", dest); err != nil {
		t.Fatal(err)
	}
	if got := cachetest.Tree(t, dest); len(got) != 2 || got[0] != "vendor/a.txt=alpha" {
		t.Errorf("restored %q", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
