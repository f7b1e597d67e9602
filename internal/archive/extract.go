package archive

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ExtractZip unpacks a zip into dest, refusing entries whose path or
// symlink target escapes dest.
func ExtractZip(ctx context.Context, r io.ReaderAt, size int64, dest string) (Stats, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return Stats{}, fmt.Errorf("read zip: %w", err)
	}
	x, err := newExtractor(dest)
	if err != nil {
		return Stats{}, err
	}
	defer x.close()
	x.compressed = func() int64 { return size }
	for _, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return x.st, err
		}
		mode := f.Mode()
		ent := entry{name: f.Name, mode: mode, mtime: f.Modified}
		switch {
		case mode.IsDir() || strings.HasSuffix(f.Name, "/"):
			ent.kind = kindDir
		case mode&fs.ModeSymlink != 0:
			ent.kind = kindSymlink
			target, err := readZipLink(f)
			if err != nil {
				return x.st, fmt.Errorf("archive entry %q: %w", f.Name, err)
			}
			ent.link = target
		case mode.IsRegular():
			ent.kind = kindFile
			ent.open = func() (io.ReadCloser, error) { return f.Open() }
		default:
			continue // devices, pipes: never created from an archive
		}
		if err := x.extract(ctx, ent); err != nil {
			return x.st, err
		}
	}
	return x.st, nil
}

func readZipLink(f *zip.File) (string, error) {
	rc, err := f.Open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil {
		return "", fmt.Errorf("read symlink target: %w", err)
	}
	if len(b) > 4096 {
		return "", errors.New("symlink target longer than 4096 bytes")
	}
	return string(b), nil
}

// ExtractTarGz unpacks a gzip-compressed tar stream into dest, refusing
// entries that escape dest.
func ExtractTarGz(ctx context.Context, r io.Reader, dest string) (Stats, error) {
	cr := &countingReader{r: r}
	gz, err := gzip.NewReader(cr)
	if err != nil {
		return Stats{}, fmt.Errorf("read gzip: %w", err)
	}
	defer gz.Close()
	x, err := newExtractor(dest)
	if err != nil {
		return Stats{}, err
	}
	defer x.close()
	x.compressed = func() int64 { return cr.n }
	tr := tar.NewReader(gz)
	for {
		if err := ctx.Err(); err != nil {
			return x.st, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return x.st, nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return x.st, fmt.Errorf("read tar: %w", err)
		}
		ent := entry{name: hdr.Name, mode: fs.FileMode(hdr.Mode).Perm(), mtime: hdr.ModTime, link: hdr.Linkname}
		switch hdr.Typeflag {
		case tar.TypeDir:
			ent.kind = kindDir
		case tar.TypeSymlink:
			ent.kind = kindSymlink
		case tar.TypeLink:
			ent.kind = kindHardlink
		case tar.TypeReg, tar.TypeRegA: //lint:ignore SA1019 archives of old tar writers still use TypeRegA
			ent.kind = kindFile
			ent.open = func() (io.ReadCloser, error) { return io.NopCloser(tr), nil }
		default:
			continue // devices, pipes, PAX globals: never created from an archive
		}
		if err := x.extract(ctx, ent); err != nil {
			return x.st, err
		}
	}
}

type kind int

const (
	kindFile kind = iota
	kindDir
	kindSymlink
	kindHardlink
)

type entry struct {
	name  string
	kind  kind
	mode  fs.FileMode
	mtime time.Time
	link  string
	open  func() (io.ReadCloser, error)
}

// extractor writes entries through an os.Root, so that nothing (not even
// a symlink planted by an earlier entry or already in dest) can make it
// write outside dest.
type extractor struct {
	root *os.Root
	st   Stats
	// compressed is the archive's size read so far, for the ratio cap.
	compressed func() int64
	limits     Limits
}

// Limits bound what an archive may unpack to, so that a small hostile
// archive cannot fill the disk: never more than MaxBytes, and past
// FreeBytes never more than MaxRatio times the compressed size.
type Limits struct {
	MaxBytes  int64
	FreeBytes int64
	MaxRatio  int64
}

// DefaultLimits are generous: deflate itself cannot exceed about 1032:1,
// and real artifacts and caches stay far below 200:1 past the first GiB.
var DefaultLimits = Limits{MaxBytes: 64 << 30, FreeBytes: 1 << 30, MaxRatio: 200}

// ErrTooLarge is wrapped when an archive unpacks to more than Limits allow.
var ErrTooLarge = errors.New("archive unpacks to more than allowed")

// The environment variables that override DefaultLimits in the process
// that extracts (the helper the job scripts call, on the runner's machine
// or in the job's pod). The runner sets them in the jobs' environment
// from config.toml's extract_max_size, extract_max_ratio and
// extract_ratio_free_size.
const (
	EnvMaxSize       = "PODRUNNER_EXTRACT_MAX_SIZE"
	EnvMaxRatio      = "PODRUNNER_EXTRACT_MAX_RATIO"
	EnvRatioFreeSize = "PODRUNNER_EXTRACT_RATIO_FREE_SIZE"
)

// ProcessLimits are DefaultLimits with the overrides of the environment
// (EnvMaxSize…); a value that is not a positive integer is an error
// naming it.
func ProcessLimits() (Limits, error) {
	l := DefaultLimits
	for _, o := range []struct {
		env, key string
		to       *int64
	}{
		{EnvMaxSize, "extract_max_size", &l.MaxBytes},
		{EnvMaxRatio, "extract_max_ratio", &l.MaxRatio},
		{EnvRatioFreeSize, "extract_ratio_free_size", &l.FreeBytes},
	} {
		s := os.Getenv(o.env)
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			if len(s) > 40 {
				s = s[:40] + "…"
			}
			return l, fmt.Errorf("%s=%q (config.toml %s): not a positive integer", o.env, s, o.key)
		}
		*o.to = n
	}
	return l, nil
}

func (l Limits) allowed(compressed int64) int64 {
	return min(l.MaxBytes, max(l.FreeBytes, l.MaxRatio*compressed))
}

// capped fails a file's copy as soon as the archive's total would pass
// the limits.
type capped struct {
	r       io.Reader
	x       *extractor
	written int64
}

func (c *capped) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.written += int64(n)
	comp := c.x.compressed()
	if l := c.x.limits; c.x.st.Bytes+c.written > l.allowed(comp) {
		return n, fmt.Errorf("%w: more than %d bytes from a %d-byte archive (limits: %d bytes in all, and %d times the archive past %d bytes); the archive is corrupt or hostile",
			ErrTooLarge, l.allowed(comp), comp, l.MaxBytes, l.MaxRatio, l.FreeBytes)
	}
	return n, err
}

func newExtractor(dest string) (*extractor, error) {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dest, err)
	}
	limits, err := ProcessLimits()
	if err != nil {
		return nil, fmt.Errorf("extraction limits: %w", err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dest, err)
	}
	return &extractor{root: root, limits: limits}, nil
}

func (x *extractor) close() { _ = x.root.Close() }

// localName validates an archive entry name: relative, no `..` escaping,
// and returns it cleaned ("" for the root itself).
func localName(raw string) (string, error) {
	name := strings.TrimSuffix(raw, "/")
	if name == "" || name == "." {
		return "", nil
	}
	if strings.ContainsRune(name, 0) || !filepath.IsLocal(filepath.FromSlash(name)) || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("archive entry %q: %w", raw, ErrUnsafePath)
	}
	return filepath.FromSlash(path.Clean(name)), nil
}

func (x *extractor) extract(ctx context.Context, e entry) error {
	name, err := localName(e.name)
	if err != nil {
		return err
	}
	if name == "" {
		return nil
	}
	fail := func(err error) error {
		// os.Root's refusal to leave dest through a symlink is the same
		// finding as a ".." name.
		if strings.Contains(err.Error(), "path escapes from parent") {
			return fmt.Errorf("archive entry %q: %w: %w", e.name, ErrUnsafePath, err)
		}
		return fmt.Errorf("archive entry %q: %w", e.name, err)
	}
	if dir := filepath.Dir(name); dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return fail(err)
		}
	}
	switch e.kind {
	case kindDir:
		if err := x.root.MkdirAll(name, 0o755); err != nil {
			return fail(err)
		}
		// Keep the owner's write bit so later entries can go inside.
		if err := x.root.Chmod(name, e.mode.Perm()|0o700); err != nil {
			return fail(err)
		}
	case kindSymlink:
		if e.link == "" || strings.ContainsRune(e.link, 0) || filepath.IsAbs(e.link) ||
			!filepath.IsLocal(filepath.Join(filepath.Dir(name), filepath.FromSlash(e.link))) {
			return fmt.Errorf("archive entry %q: symlink to %q: %w", e.name, e.link, ErrUnsafePath)
		}
		if err := x.clear(name); err != nil {
			return fail(err)
		}
		if err := x.root.Symlink(e.link, name); err != nil {
			return fail(err)
		}
	case kindHardlink:
		target, err := localName(e.link)
		if err != nil || target == "" {
			return fmt.Errorf("archive entry %q: hard link to %q: %w", e.name, e.link, ErrUnsafePath)
		}
		if err := x.clear(name); err != nil {
			return fail(err)
		}
		if err := x.root.Link(target, name); err != nil {
			return fail(err)
		}
	case kindFile:
		if err := x.clear(name); err != nil {
			return fail(err)
		}
		n, err := x.writeFile(ctx, name, e)
		x.st.Bytes += n
		if err != nil {
			return fail(err)
		}
	}
	x.st.Files++
	return nil
}

// clear removes what is in the way of a new file or symlink (GitLab
// Runner overwrites), but never a non-empty directory.
func (x *extractor) clear(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if err := x.root.Remove(name); err != nil {
			return fmt.Errorf("a directory is in the way: %w", err)
		}
		return nil
	}
	return x.root.Remove(name)
}

func (x *extractor) writeFile(ctx context.Context, name string, e entry) (int64, error) {
	rc, err := e.open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, &capped{r: ctxReader{ctx, rc}, x: x})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	perm := e.mode.Perm()
	if perm == 0 {
		perm = 0o644 // archives made without Unix modes
	}
	if err := x.root.Chmod(name, perm); err != nil {
		return n, err
	}
	if !e.mtime.IsZero() {
		_ = x.root.Chtimes(name, e.mtime, e.mtime)
	}
	return n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
