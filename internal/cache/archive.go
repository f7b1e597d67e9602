package cache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/podrunner/podrunner/internal/archive"
)

// ErrTooLarge is returned by Archive when the archive outgrew maxSize; it
// was not stored.
var ErrTooLarge = errors.New("cache archive is larger than the maximum upload size")

// ArchiveResult describes a stored archive.
type ArchiveResult struct {
	archive.Stats
	Size int64 // compressed bytes stored
}

// Archive streams a zip of the files of root selected by spec into st
// under name, laid out as GitLab Runner's cache-archiver writes it (entries
// relative to root, directories, symlinks and Unix modes kept), without a
// temporary copy: the archive is written into a pipe
// the store reads from. maxSize > 0 stops (and does not store) an archive
// that grows bigger. archive.ErrNoFiles: nothing matched and nothing was
// stored.
func Archive(ctx context.Context, st Store, name, root string, spec archive.Spec, maxSize int64) (ArchiveResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	var (
		wg    sync.WaitGroup
		stats archive.Stats
		werr  error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		stats, werr = archive.WriteZip(ctx, pw, root, spec)
		pw.CloseWithError(werr) // nil: EOF
	}()
	// finish stops the writer (if the store stopped reading early) and
	// waits for it.
	finish := func(err error) (ArchiveResult, error) {
		pr.CloseWithError(err) // nil: a writer still writing gets io.ErrClosedPipe
		if err != nil {
			cancel()
		}
		wg.Wait()
		return ArchiveResult{Stats: stats}, err
	}

	// The store is only contacted once the first byte is there: an empty
	// selection or an unreadable root must not create (or replace) an
	// archive.
	br := bufio.NewReaderSize(pr, 64<<10)
	if _, err := br.Peek(1); err != nil {
		wg.Wait()
		if werr == nil {
			werr = fmt.Errorf("archive %s: empty archive stream", root)
		}
		return ArchiveResult{Stats: stats}, werr
	}
	cr := &countingReader{r: br, max: maxSize}
	perr := st.Put(ctx, name, cr)
	res, _ := finish(perr)
	res.Size = cr.n
	switch {
	case perr == nil:
		return res, werr
	case cr.tooBig:
		return res, fmt.Errorf("%w (%d bytes): not uploaded", ErrTooLarge, maxSize)
	case werr != nil && !errors.Is(werr, perr) && !errors.Is(werr, context.Canceled):
		// The archive failed (unreadable file …) and the store only
		// saw the broken stream.
		return res, werr
	}
	return res, perr
}

// countingReader counts what passes and fails once more than max bytes
// did (max > 0).
type countingReader struct {
	r      io.Reader
	n      int64
	max    int64
	tooBig bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		c.tooBig = true
		return n, ErrTooLarge
	}
	return n, err
}

// Extract restores the archive stored under name into dest. ErrNotFound
// when there is none. A zip needs random access: a remote archive is
// spooled to a temporary file (removed after), never held in memory; a
// local one is read in place. tar.gz archives of podrunner before it
// wrote GitLab Runner's format are still restored (same object names).
func Extract(ctx context.Context, st Store, name, dest string) (archive.Stats, int64, error) {
	rc, err := st.Get(ctx, name)
	if err != nil {
		return archive.Stats{}, 0, err
	}
	defer rc.Close()
	f, ok := rc.(*os.File)
	if !ok {
		tmp, err := os.CreateTemp("", "podrunner-cache-*.zip")
		if err != nil {
			return archive.Stats{}, 0, fmt.Errorf("download %s: temporary file: %w", st.Describe(name), err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if _, err := io.Copy(tmp, ctxReader{ctx, rc}); err != nil {
			return archive.Stats{}, 0, fmt.Errorf("download %s: %w", st.Describe(name), err)
		}
		f = tmp
	}
	fi, err := f.Stat()
	if err != nil {
		return archive.Stats{}, 0, fmt.Errorf("read %s: %w", st.Describe(name), err)
	}
	size := fi.Size()
	var magic [4]byte
	n, _ := f.ReadAt(magic[:], 0)
	var stats archive.Stats
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		stats, err = archive.ExtractTarGz(ctx, io.NewSectionReader(f, 0, size), dest)
	case n == 4 && (bytes.Equal(magic[:], []byte("PK\x03\x04")) || bytes.Equal(magic[:], []byte("PK\x05\x06"))):
		stats, err = archive.ExtractZip(ctx, f, size, dest)
	default:
		return archive.Stats{}, size, fmt.Errorf("extract %s: not a zip archive (%d bytes); delete it, the next job writes a new one", st.Describe(name), size)
	}
	if err != nil {
		return stats, size, fmt.Errorf("extract %s: %w", st.Describe(name), err)
	}
	return stats, size, nil
}
