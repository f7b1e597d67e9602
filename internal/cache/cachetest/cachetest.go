// Package cachetest has the checks every cache store passes (tests only).
package cachetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/cache"
)

// Project is a project directory with a few files.
func Project(t *testing.T) string {
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

// Tree lists the regular files below root as path=content.
func Tree(t *testing.T, root string) []string {
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

// RoundTrip exercises cache.Archive and cache.Extract on any store: a
// round trip, nothing selected, too big (the stored archive stays), a
// missing archive.
func RoundTrip(t *testing.T, st cache.Store, name string) {
	t.Helper()
	ctx := context.Background()
	src := Project(t)
	res, err := cache.Archive(ctx, st, name, src, archive.Spec{Paths: []string{"vendor", "node_modules/**"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size == 0 || res.Bytes != int64(5+4000+18) {
		t.Errorf("result %+v", res)
	}
	dest := t.TempDir()
	stats, n, err := cache.Extract(ctx, st, name, dest)
	if err != nil {
		t.Fatal(err)
	}
	if n != res.Size || stats.Bytes != res.Bytes {
		t.Errorf("extracted %+v, %d bytes; archived %+v", stats, n, res)
	}
	want := []string{"node_modules/x/i.js=module.exports = 1", "vendor/a.txt=alpha", "vendor/deep/b.txt=" + strings.Repeat("beta", 1000)}
	if got := Tree(t, dest); !slices.Equal(got, want) {
		t.Errorf("restored %q, want %q", got, want)
	}

	// Nothing selected: ErrNoFiles and the stored archive stays.
	if _, err := cache.Archive(ctx, st, name, src, archive.Spec{Paths: []string{"nothing-here/**"}}, 0); !errors.Is(err, archive.ErrNoFiles) {
		t.Fatalf("no files: %v", err)
	}
	// Too big: cache.ErrTooLarge and the stored archive stays.
	if _, err := cache.Archive(ctx, st, name, src, archive.Spec{Paths: []string{"src"}}, 10); !errors.Is(err, cache.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	dest2 := t.TempDir()
	if _, _, err := cache.Extract(ctx, st, name, dest2); err != nil {
		t.Fatal(err)
	}
	if got := Tree(t, dest2); !slices.Equal(got, want) {
		t.Errorf("after refused archives: %q", got)
	}
	if _, _, err := cache.Extract(ctx, st, name+"-missing", t.TempDir()); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("missing archive: %v, want cache.ErrNotFound", err)
	}
}
