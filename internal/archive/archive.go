// Package archive selects files of a job's directory (paths globs with
// `**`, exclude, untracked) and streams them into or out of archives
// (zip for GitLab artifacts and caches; tar+gzip caches of earlier
// podrunner versions are still read) in constant memory.
package archive

import (
	"archive/tar"
	"archive/zip"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Spec selects files under a root directory, as GitLab's artifacts:/cache:
// keywords do. Paths and Exclude are globs relative to the root (`**`
// matches any number of directories); Untracked adds the files git does
// not track (and does not ignore).
type Spec struct {
	Paths     []string
	Exclude   []string
	Untracked bool
	// CompressionLevel of zip entries: fastest, fast, default (or
	// empty), slow, slowest (GitLab Runner's ARTIFACT_COMPRESSION_LEVEL).
	CompressionLevel string
	// Warn, when set, receives non-fatal findings meant for the job log
	// (a path matching nothing, a path outside the root, a file that
	// vanished while archiving).
	Warn func(msg string)
}

func (s Spec) warn(msg string) {
	if s.Warn != nil {
		s.Warn(msg)
	}
}

// Stats describe what an archive operation did.
type Stats struct {
	Files int   // regular files, symlinks and directories written/extracted
	Bytes int64 // uncompressed bytes of regular files
}

// ErrNoFiles is returned by the writers when the spec selected nothing
// (GitLab Runner: "no matching files"); nothing was written to w.
var ErrNoFiles = errors.New("no matching files")

// ErrUnsafePath is wrapped by the extractors when an entry's path or
// symlink target would escape the destination directory.
var ErrUnsafePath = errors.New("path escapes the destination directory")

// Select returns the paths (slash-separated, relative to root, sorted)
// that s selects under root; the writers archive exactly these.
func Select(ctx context.Context, root string, s Spec) ([]string, error) {
	return selectFiles(ctx, root, s)
}

// WriteZip streams a zip of the selected files of root to w (symlinks kept
// as links, modes kept).
func WriteZip(ctx context.Context, w io.Writer, root string, s Spec) (Stats, error) {
	files, err := selectFiles(ctx, root, s)
	if err != nil {
		return Stats{}, err
	}
	if len(files) == 0 {
		return Stats{}, ErrNoFiles
	}
	level, err := flateLevel(s.CompressionLevel)
	if err != nil {
		return Stats{}, err
	}
	zw := zip.NewWriter(w)
	if level != flate.DefaultCompression {
		zw.RegisterCompressor(zip.Deflate, pooledCompressor(level))
	}
	var st Stats
	for _, rel := range files {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := writeZipEntry(ctx, zw, root, rel, s, &st); err != nil {
			return st, err
		}
	}
	if err := zw.Close(); err != nil {
		return st, fmt.Errorf("finish zip: %w", err)
	}
	return st, nil
}

// entryInfo stats a selected path for archiving; fi is nil when the
// entry is skipped (it vanished, or it is neither a regular file, a
// directory nor a symlink), with a warning for the job log.
func entryInfo(root, rel string, s Spec) (abs string, fi fs.FileInfo, err error) {
	abs = filepath.Join(root, filepath.FromSlash(rel))
	fi, err = os.Lstat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.warn(fmt.Sprintf("%s: vanished while archiving; skipped", rel))
			return abs, nil, nil
		}
		return abs, nil, fmt.Errorf("archive %s: %w", rel, err)
	}
	if mode := fi.Mode(); !mode.IsRegular() && !mode.IsDir() && mode&fs.ModeSymlink == 0 {
		s.warn(fmt.Sprintf("%s: not a regular file, directory or symlink (%s); skipped", rel, mode.Type()))
		return abs, nil, nil
	}
	return abs, fi, nil
}

func writeZipEntry(ctx context.Context, zw *zip.Writer, root, rel string, s Spec, st *Stats) error {
	abs, fi, err := entryInfo(root, rel, s)
	if err != nil || fi == nil {
		return err
	}
	mode := fi.Mode()
	hdr, err := zip.FileInfoHeader(fi)
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	hdr.Name = rel
	hdr.Method = zip.Store
	switch {
	case mode.IsDir():
		hdr.Name += "/"
		if _, err := zw.CreateHeader(hdr); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(abs)
		if err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		if _, err := io.WriteString(w, target); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
	default:
		hdr.Method = zip.Deflate
		f, err := os.Open(abs)
		if err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		defer f.Close()
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		n, err := io.Copy(w, ctxReader{ctx, f})
		st.Bytes += n
		if err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
	}
	st.Files++
	return nil
}

// WriteTarGz streams a gzip-compressed tar of the selected files to w.
// Caches are zip now (GitLab Runner's format, and faster: see
// BenchmarkCacheFormat); this writer stays for that benchmark and for
// tests of the reader of podrunner's earlier tar.gz caches.
func WriteTarGz(ctx context.Context, w io.Writer, root string, s Spec) (Stats, error) {
	files, err := selectFiles(ctx, root, s)
	if err != nil {
		return Stats{}, err
	}
	if len(files) == 0 {
		return Stats{}, ErrNoFiles
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	var st Stats
	for _, rel := range files {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := writeTarEntry(ctx, tw, root, rel, s, &st); err != nil {
			return st, err
		}
	}
	if err := tw.Close(); err != nil {
		return st, fmt.Errorf("finish tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return st, fmt.Errorf("finish gzip: %w", err)
	}
	return st, nil
}

func writeTarEntry(ctx context.Context, tw *tar.Writer, root, rel string, s Spec, st *Stats) error {
	abs, fi, err := entryInfo(root, rel, s)
	if err != nil || fi == nil {
		return err
	}
	mode := fi.Mode()
	var link string
	if mode&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(abs); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	hdr.Name = rel
	if mode.IsDir() {
		hdr.Name += "/"
	}
	if !mode.IsRegular() {
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		st.Files++
		return nil
	}
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	// The header promised fi.Size() bytes: a file that grew is cut, one
	// that shrank makes the archive fail rather than lie.
	n, err := io.Copy(tw, io.LimitReader(ctxReader{ctx, f}, hdr.Size))
	st.Bytes += n
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("archive %s: file shrank while archiving (%d of %d bytes)", rel, n, hdr.Size)
	}
	st.Files++
	return nil
}

// flateLevel maps GitLab Runner's ARTIFACT_COMPRESSION_LEVEL names.
func flateLevel(name string) (int, error) {
	switch name {
	case "", "default":
		return flate.DefaultCompression, nil
	case "fastest":
		return flate.BestSpeed, nil
	case "fast":
		return 3, nil
	case "slow":
		return 7, nil
	case "slowest":
		return flate.BestCompression, nil
	}
	return 0, fmt.Errorf("compression level %q: use fastest, fast, default, slow or slowest", name)
}

// flatePools keep one pool of compressors per level: a flate writer holds
// about 1 MiB of state, too much to allocate per file.
var flatePools sync.Map // int → *sync.Pool

type pooledFlate struct {
	*flate.Writer
	pool *sync.Pool
}

func (p *pooledFlate) Close() error {
	err := p.Writer.Close()
	p.pool.Put(p.Writer)
	return err
}

func pooledCompressor(level int) zip.Compressor {
	v, _ := flatePools.LoadOrStore(level, &sync.Pool{})
	pool := v.(*sync.Pool)
	return func(w io.Writer) (io.WriteCloser, error) {
		if fw, ok := pool.Get().(*flate.Writer); ok {
			fw.Reset(w)
			return &pooledFlate{fw, pool}, nil
		}
		fw, err := flate.NewWriter(w, level)
		if err != nil {
			return nil, err
		}
		return &pooledFlate{fw, pool}, nil
	}
}

// ctxReader stops a long copy when the context ends.
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
