package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// tree creates files under a new temp dir: "x/" is a directory, "l -> t"
// a symlink, anything else a file with its name as content.
func tree(t *testing.T, entries ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, e := range entries {
		switch {
		case strings.HasSuffix(e, "/"):
			mustNo(t, os.MkdirAll(filepath.Join(root, e), 0o755))
		case strings.Contains(e, " -> "):
			name, target, _ := strings.Cut(e, " -> ")
			mustNo(t, os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755))
			mustNo(t, os.Symlink(target, filepath.Join(root, name)))
		default:
			mustNo(t, os.MkdirAll(filepath.Dir(filepath.Join(root, e)), 0o755))
			mustNo(t, os.WriteFile(filepath.Join(root, e), []byte("content of "+e), 0o644))
		}
	}
	return root
}

func mustNo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSelect(t *testing.T) {
	base := []string{"bin/app", "bin/app.debug", "bin/sub/tool", "docs/a.md", "docs/deep/b.md", "top.md",
		"link -> bin", "bin/self -> app", "empty/"}
	tests := []struct {
		name      string
		spec      Spec
		want      []string
		wantWarns []string
	}{
		{name: "directory is recursive, symlinks not followed", spec: Spec{Paths: []string{"bin", "link"}},
			want: []string{"bin", "bin/app", "bin/app.debug", "bin/self", "bin/sub", "bin/sub/tool", "link"}},
		{name: "double star", spec: Spec{Paths: []string{"**/*.md"}},
			want: []string{"docs/a.md", "docs/deep/b.md", "top.md"}},
		{name: "single star does not cross directories", spec: Spec{Paths: []string{"docs/*.md"}},
			want: []string{"docs/a.md"}},
		{name: "exclude glob", spec: Spec{Paths: []string{"bin/"}, Exclude: []string{"bin/*.debug", "**/tool"}},
			want: []string{"bin", "bin/app", "bin/self", "bin/sub"}},
		{name: "exclude is not recursive", spec: Spec{Paths: []string{"bin"}, Exclude: []string{"bin/sub"}},
			want: []string{"bin", "bin/app", "bin/app.debug", "bin/self", "bin/sub/tool"}},
		{name: "exclude contents", spec: Spec{Paths: []string{"bin"}, Exclude: []string{"bin/sub/**/*"}},
			want: []string{"bin", "bin/app", "bin/app.debug", "bin/self", "bin/sub"}},
		{name: "dot and duplicates", spec: Spec{Paths: []string{"./top.md", "top.md", "docs/../top.md"}},
			want: []string{"top.md"}},
		{name: "outside root and no match warn", spec: Spec{Paths: []string{"../etc/passwd", "/etc/passwd", "nothing/*", "empty"}},
			want: []string{"empty"}, wantWarns: []string{"../etc/passwd: not a subpath", "/etc/passwd: not a subpath", "nothing/*: no matching files"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tree(t, base...)
			var warns []string
			tt.spec.Warn = func(m string) { warns = append(warns, m) }
			got, err := Select(context.Background(), root, tt.spec)
			mustNo(t, err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if len(warns) != len(tt.wantWarns) {
				t.Fatalf("warnings %q, want %q", warns, tt.wantWarns)
			}
			for i, w := range tt.wantWarns {
				if !strings.HasPrefix(warns[i], w) {
					t.Errorf("warning %q, want prefix %q", warns[i], w)
				}
			}
		})
	}
}

func TestSelectInvalidPattern(t *testing.T) {
	root := tree(t, "a")
	if _, err := Select(context.Background(), root, Spec{Paths: []string{"a["}}); err == nil || !strings.Contains(err.Error(), `"a["`) {
		t.Fatalf("err = %v, want it to name the pattern", err)
	}
}

func TestSelectUntracked(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	root := tree(t, "tracked.txt", ".gitignore", "out/new.txt", "ignored.log", "new.txt")
	mustNo(t, os.WriteFile(filepath.Join(root, ".gitignore"), []byte("*.log\n"), 0o644))
	git := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	git("add", "tracked.txt", ".gitignore")
	got, err := Select(context.Background(), root, Spec{Untracked: true, Exclude: []string{"new.txt"}})
	mustNo(t, err)
	if want := []string{"out/new.txt"}; !reflect.DeepEqual(got, want) {
		t.Errorf("untracked %q, want %q", got, want)
	}

	// Without git and without package gitstatus (the manager), the
	// listing fails and says what is missing.
	t.Setenv("PATH", t.TempDir())
	if _, err := Select(context.Background(), root, Spec{Untracked: true}); err == nil || !strings.Contains(err.Error(), "no git binary") {
		t.Errorf("without git: %v, want it to name the missing git", err)
	}
}

func TestWriteNoFiles(t *testing.T) {
	root := tree(t, "a")
	var buf bytes.Buffer
	if _, err := WriteZip(context.Background(), &buf, root, Spec{Paths: []string{"nope"}}); !errors.Is(err, ErrNoFiles) || buf.Len() != 0 {
		t.Fatalf("zip: err %v, %d bytes written", err, buf.Len())
	}
	if _, err := WriteTarGz(context.Background(), &buf, root, Spec{Paths: []string{"nope"}}); !errors.Is(err, ErrNoFiles) || buf.Len() != 0 {
		t.Fatalf("tar: err %v, %d bytes written", err, buf.Len())
	}
}

// snapshot describes a tree: path → "file:<mode>:<content>", "link:<target>", "dir".
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	mustNo(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			m[rel] = "link:" + target
		case fi.IsDir():
			m[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			m[rel] = "file:" + fi.Mode().Perm().String() + ":" + string(b)
		}
		return nil
	}))
	return m
}

func TestRoundTrip(t *testing.T) {
	root := tree(t, "dist/app", "dist/lib/x.so", "dist/current -> lib/x.so", "dist/dirlink -> lib", "skip.txt")
	mustNo(t, os.Chmod(filepath.Join(root, "dist/app"), 0o751))
	spec := Spec{Paths: []string{"dist"}}
	want := snapshot(t, filepath.Join(root))
	delete(want, "skip.txt")
	for _, format := range []string{"zip", "tar.gz"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var st Stats
			var err error
			dest := filepath.Join(t.TempDir(), "dest")
			if format == "zip" {
				st, err = WriteZip(context.Background(), &buf, root, spec)
			} else {
				st, err = WriteTarGz(context.Background(), &buf, root, spec)
			}
			mustNo(t, err)
			if st.Files != 6 || st.Bytes != int64(len("content of dist/app")+len("content of dist/lib/x.so")) {
				t.Errorf("write stats %+v", st)
			}
			var xst Stats
			if format == "zip" {
				xst, err = ExtractZip(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), dest)
			} else {
				xst, err = ExtractTarGz(context.Background(), &buf, dest)
			}
			mustNo(t, err)
			if xst != st {
				t.Errorf("extract stats %+v, write stats %+v", xst, st)
			}
			if got := snapshot(t, dest); !reflect.DeepEqual(got, want) {
				t.Errorf("extracted\n%v\nwant\n%v", got, want)
			}
			// A second extraction over the first overwrites in place.
			if format == "zip" {
				_, err = ExtractZip(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), dest)
				mustNo(t, err)
			}
		})
	}
}

type zipEnt struct {
	name, body string
	mode       fs.FileMode
}

func makeZip(t testing.TB, ents ...zipEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		h := &zip.FileHeader{Name: e.name, Method: zip.Store}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(e.body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func makeTarGz(t testing.TB, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range hdrs {
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			_, _ = tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	mustNo(t, tw.Close())
	mustNo(t, gz.Close())
	return buf.Bytes()
}

func TestExtractRefusesEscapes(t *testing.T) {
	link := fs.ModeSymlink | 0o777
	zips := []struct {
		name    string
		ents    []zipEnt
		wantErr string
	}{
		{"dot dot", []zipEnt{{name: "../evil", body: "x"}}, `"../evil"`},
		{"nested dot dot", []zipEnt{{name: "a/../../evil", body: "x"}}, `"a/../../evil"`},
		{"absolute", []zipEnt{{name: "/tmp/evil", body: "x"}}, `"/tmp/evil"`},
		{"absolute symlink", []zipEnt{{name: "l", body: "/etc", mode: link}}, `"l": symlink to "/etc"`},
		{"escaping symlink", []zipEnt{{name: "a/l", body: "../../x", mode: link}}, `"a/l": symlink to "../../x"`},
		{"symlink chain escaping at resolution", []zipEnt{
			{name: "c", body: ".", mode: link}, {name: "p", body: "c/..", mode: link}, {name: "p/evil", body: "x"}}, `"p/evil"`},
	}
	for _, tt := range zips {
		t.Run("zip "+tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			data := makeZip(t, tt.ents...)
			_, err := ExtractZip(context.Background(), bytes.NewReader(data), int64(len(data)), dest)
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("err = %v, want ErrUnsafePath", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to name %s", err, tt.wantErr)
			}
			assertOnlyDest(t, parent)
		})
	}
	tars := []struct {
		name    string
		hdr     tar.Header
		wantErr string
	}{
		{"dot dot", tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Size: 1}, `"../evil"`},
		{"escaping symlink", tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../x"}, `symlink to "../x"`},
		{"escaping hard link", tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "../x"}, `hard link to "../x"`},
	}
	for _, tt := range tars {
		t.Run("tar "+tt.name, func(t *testing.T) {
			parent := t.TempDir()
			_, err := ExtractTarGz(context.Background(), bytes.NewReader(makeTarGz(t, tt.hdr)), filepath.Join(parent, "dest"))
			if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrUnsafePath naming %s", err, tt.wantErr)
			}
			assertOnlyDest(t, parent)
		})
	}
}

// A symlink already in dest pointing outside cannot be written through.
func TestExtractDoesNotFollowExistingSymlinkOut(t *testing.T) {
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside")
	dest := filepath.Join(parent, "dest")
	mustNo(t, os.MkdirAll(outside, 0o755))
	mustNo(t, os.MkdirAll(dest, 0o755))
	mustNo(t, os.Symlink(outside, filepath.Join(dest, "vendor")))
	data := makeZip(t, zipEnt{name: "vendor/evil", body: "x"})
	_, err := ExtractZip(context.Background(), bytes.NewReader(data), int64(len(data)), dest)
	if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), `"vendor/evil"`) {
		t.Fatalf("err = %v, want a refusal naming the entry", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote outside dest: %v", ents)
	}
}

// assertOnlyDest checks that parent holds nothing but dest.
func assertOnlyDest(t *testing.T, parent string) {
	t.Helper()
	ents, err := os.ReadDir(parent)
	mustNo(t, err)
	for _, e := range ents {
		if e.Name() != "dest" {
			t.Fatalf("extraction wrote %s outside dest", e.Name())
		}
	}
}

func TestExtractCorrupt(t *testing.T) {
	_, err := ExtractZip(context.Background(), bytes.NewReader([]byte("not a zip")), 9, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "read zip") {
		t.Fatalf("err = %v", err)
	}
	_, err = ExtractTarGz(context.Background(), strings.NewReader("not gzip"), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckDotenv(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"valid", "A=1\nB_2= spaced \nC=a=b", nil},
		{"bad lines", "A=1\n\n# c\nnot a pair\nbad-key=1\nÜ=2\n", []string{"line 2: empty", "line 3: comments", "line 4: not KEY=VALUE", `line 5: key "bad-key"`, `line 6: key "Ü"`}},
		{"size", "A=" + strings.Repeat("x", DotenvMaxSize) + "\n", []string{"the report is 5123 bytes"}},
		{"count", func() string {
			var b strings.Builder
			for i := range DotenvMaxVariables + 1 {
				fmt.Fprintf(&b, "V%d=1\n", i)
			}
			return b.String()
		}(), []string{"the report has 21 variables"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckDotenv(strings.NewReader(tt.in))
			mustNo(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("findings %q, want %q", got, tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("finding %q, want prefix %q", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestWriteGzipAndRaw(t *testing.T) {
	root := tree(t, "r/a.xml", "r/b.xml", "r/dir/", "r/l -> a.xml")
	var buf bytes.Buffer
	st, err := WriteGzip(context.Background(), &buf, root, Spec{Paths: []string{"r"}})
	mustNo(t, err)
	if st.Files != 2 {
		t.Errorf("stats %+v", st)
	}
	zr, err := gzip.NewReader(&buf)
	mustNo(t, err)
	var members []string
	for {
		zr.Multistream(false)
		b, err := io.ReadAll(zr)
		mustNo(t, err)
		members = append(members, zr.Name+"="+string(b))
		if err := zr.Reset(&buf); err == io.EOF {
			break
		}
	}
	if want := []string{"r/a.xml=content of r/a.xml", "r/b.xml=content of r/b.xml"}; !reflect.DeepEqual(members, want) {
		t.Errorf("members %q, want %q", members, want)
	}

	buf.Reset()
	_, rel, err := WriteRaw(context.Background(), &buf, root, Spec{Paths: []string{"r/a.xml"}})
	if err != nil || rel != "r/a.xml" || buf.String() != "content of r/a.xml" {
		t.Errorf("raw: %q %q %v", rel, buf.String(), err)
	}
	if _, _, err := WriteRaw(context.Background(), io.Discard, root, Spec{Paths: []string{"r/*.xml"}}); !errors.Is(err, ErrRawMultiple) {
		t.Errorf("raw of two files: %v", err)
	}
	if _, err := WriteGzip(context.Background(), io.Discard, root, Spec{Paths: []string{"r/dir"}}); !errors.Is(err, ErrNoFiles) {
		t.Errorf("gzip of a directory only: %v", err)
	}
}

func TestCompressionLevels(t *testing.T) {
	root := tree(t, "a", "b")
	for _, level := range []string{"", "fastest", "fast", "default", "slow", "slowest"} {
		var buf bytes.Buffer
		_, err := WriteZip(context.Background(), &buf, root, Spec{Paths: []string{"*"}, CompressionLevel: level})
		mustNo(t, err)
		dest := t.TempDir()
		_, err = ExtractZip(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), dest)
		mustNo(t, err)
		if b, err := os.ReadFile(filepath.Join(dest, "b")); err != nil || string(b) != "content of b" {
			t.Errorf("level %q: %q %v", level, b, err)
		}
	}
	if _, err := WriteZip(context.Background(), io.Discard, root, Spec{Paths: []string{"*"}, CompressionLevel: "max"}); err == nil || !strings.Contains(err.Error(), `"max"`) {
		t.Errorf("unknown level: %v", err)
	}
}
