package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/archive"
)

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
