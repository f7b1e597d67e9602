package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Dir is a Store in a local directory (cache_dir). Names are slash
// separated paths below Root; an archive is written to a temporary file
// beside its final place and renamed, so readers never see half of one.
type Dir struct {
	Root string
}

func (d Dir) path(name string) (string, error) {
	if d.Root == "" {
		return "", errors.New("cache directory is not set")
	}
	clean := filepath.Clean("/" + filepath.FromSlash(name))
	if clean == string(filepath.Separator) || strings.Contains(name, "\x00") {
		return "", fmt.Errorf("cache name %q is not a file name", name)
	}
	return filepath.Join(d.Root, clean), nil
}

// Describe returns the archive's file path.
func (d Dir) Describe(name string) string {
	p, err := d.path(name)
	if err != nil {
		return name
	}
	return p
}

// Get opens the archive file.
func (d Dir) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", p, err)
	}
	return f, nil
}

// Put writes r to a temporary file, syncs it and renames it into place.
func (d Dir) Put(ctx context.Context, name string, r io.Reader) (err error) {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create cache directory %s: %w (check cache_dir and its permissions)", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(p)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create cache file in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("write cache %s: %w", p, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write cache %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write cache %s: %w", p, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write cache %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("write cache %s: %w", p, err)
	}
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
