package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

func TestFromConfig(t *testing.T) {
	if FromConfig(nil) != nil || FromConfig(&config.Cache{}) != nil {
		t.Error("no [runners.cache] Type must mean no remote store")
	}
	yes := true
	s := FromConfig(&config.Cache{Type: "s3", Path: "p", Shared: true, MaxUploadedArchiveSize: 5, S3: &config.CacheS3{
		ServerAddress: "h:1", BucketName: "b", BucketLocation: "l", Insecure: true, PathStyle: &yes,
		AuthenticationType: "access-key", AccessKey: "a", SecretKey: "s", SessionToken: "t"}})
	want := job.CacheStore{Type: "s3", Path: "p", Shared: true, MaxUploadedArchiveSize: 5, S3: &job.CacheS3{
		ServerAddress: "h:1", BucketName: "b", BucketLocation: "l", Insecure: true, PathStyle: &yes,
		AuthenticationType: "access-key", AccessKey: "a", SecretKey: "s", SessionToken: "t"}}
	if s == nil || s.S3 == nil || s.Type != want.Type || s.Path != want.Path || !s.Shared || s.MaxUploadedArchiveSize != 5 || *s.S3 != *want.S3 {
		t.Errorf("got %+v %+v", s, s.S3)
	}
	if err := s.Validate(); err != nil {
		t.Error(err)
	}
	if g := FromConfig(&config.Cache{Type: "gcs"}); g == nil || g.Validate() == nil {
		t.Error("an unsupported type must be kept, and reported by Validate")
	}
}

func TestDirRoundTripAndAtomicity(t *testing.T) {
	ctx := context.Background()
	d := Dir{Root: t.TempDir()}
	if _, err := d.Get(ctx, "a/b/cache.zip"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v, want ErrNotFound", err)
	}
	if err := d.Put(ctx, "a/b/cache.zip", strings.NewReader("one")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, d, "a/b/cache.zip"); got != "one" {
		t.Fatalf("got %q", got)
	}
	// A broken stream leaves the previous archive and no temporary file.
	broken := io.MultiReader(strings.NewReader("two-partial"), errReader{errors.New("boom")})
	if err := d.Put(ctx, "a/b/cache.zip", broken); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("broken put: %v", err)
	}
	if got := read(t, d, "a/b/cache.zip"); got != "one" {
		t.Fatalf("after a failed put: %q", got)
	}
	entries, _ := os.ReadDir(filepath.Join(d.Root, "a", "b"))
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
	// Names stay below Root.
	if err := d.Put(ctx, "../../escape", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Root, "escape")); err != nil {
		t.Errorf("../../escape must land below the root: %v", err)
	}
	if err := (Dir{}).Put(ctx, "x", strings.NewReader("x")); err == nil {
		t.Error("a Dir without root must refuse")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func read(t *testing.T, st Store, name string) string {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// project writes a small project tree.
func project(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"vendor/a.txt":        "alpha",
		"vendor/deep/b.txt":   strings.Repeat("beta", 1000),
		"node_modules/x/i.js": "module.exports = 1",
		"src/main.go":         "package main",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel)+"="+string(b))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// testArchiveRoundTrip exercises Archive and Extract on any store.
func testArchiveRoundTrip(t *testing.T, st Store, name string) {
	ctx := context.Background()
	src := project(t)
	res, err := Archive(ctx, st, name, src, archive.Spec{Paths: []string{"vendor", "node_modules/**"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size == 0 || res.Bytes != int64(5+4000+18) {
		t.Errorf("result %+v", res)
	}
	dest := t.TempDir()
	stats, n, err := Extract(ctx, st, name, dest)
	if err != nil {
		t.Fatal(err)
	}
	if n != res.Size || stats.Bytes != res.Bytes {
		t.Errorf("extracted %+v, %d bytes; archived %+v", stats, n, res)
	}
	want := []string{"node_modules/x/i.js=module.exports = 1", "vendor/a.txt=alpha", "vendor/deep/b.txt=" + strings.Repeat("beta", 1000)}
	if got := tree(t, dest); !slices.Equal(got, want) {
		t.Errorf("restored %q, want %q", got, want)
	}

	// Nothing selected: ErrNoFiles and the stored archive stays.
	if _, err := Archive(ctx, st, name, src, archive.Spec{Paths: []string{"nothing-here/**"}}, 0); !errors.Is(err, archive.ErrNoFiles) {
		t.Fatalf("no files: %v", err)
	}
	// Too big: ErrTooLarge and the stored archive stays.
	if _, err := Archive(ctx, st, name, src, archive.Spec{Paths: []string{"src"}}, 10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	dest2 := t.TempDir()
	if _, _, err := Extract(ctx, st, name, dest2); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, dest2); !slices.Equal(got, want) {
		t.Errorf("after refused archives: %q", got)
	}
	if _, _, err := Extract(ctx, st, name+"-missing", t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing archive: %v, want ErrNotFound", err)
	}
}

func TestArchiveRoundTripDir(t *testing.T) {
	testArchiveRoundTrip(t, Dir{Root: t.TempDir()}, "group/demo/key/cache.zip")
}

func TestExtractRefusesGarbage(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	if err := d.Put(context.Background(), "bad", bytes.NewReader([]byte("not a tar.gz"))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Extract(context.Background(), d, "bad", t.TempDir()); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("garbage archive: %v", err)
	}
}

func TestArchiveUnreadableRoot(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	_, err := Archive(context.Background(), d, "k", filepath.Join(t.TempDir(), "missing"), archive.Spec{Paths: []string{"x"}}, 0)
	if err == nil {
		t.Fatal("archiving a missing directory must fail")
	}
	if _, err := d.Get(context.Background(), "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("nothing may be stored: %v", err)
	}
}
