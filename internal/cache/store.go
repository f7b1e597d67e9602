// Package cache is what the cache helpers of a job (cache-archiver,
// cache-extractor) use: zip archives in GitLab Runner's format, streamed
// in bounded memory, kept in a local directory (cache_dir) or moved by
// plain HTTP through URLs the runner pre-signed (see package presign). It
// links no cloud SDK.
package cache

import (
	"context"
	"errors"
	"io"
)

// ErrNotFound is returned by Store.Get when nothing is stored under the
// name.
var ErrNotFound = errors.New("cache not found")

// Store keeps cache archives by name.
type Store interface {
	// Get opens the archive stored under name for streaming; ErrNotFound
	// when there is none.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Put streams r into name. The archive becomes visible only once r
	// ended without error; on any error the previous archive (if any)
	// stays.
	Put(ctx context.Context, name string, r io.Reader) error
	// Describe names the place of an archive for messages (no secrets).
	Describe(name string) string
}
