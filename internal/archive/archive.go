// Package archive selects files of a job's directory (paths globs with
// `**`, exclude, untracked) and streams them into or out of archives
// (zip for GitLab artifacts, tar+gzip for caches) in constant memory.
package archive

import (
	"context"
	"errors"
	"io"
)

// Spec selects files under a root directory, as GitLab's artifacts:/cache:
// keywords do. Paths and Exclude are globs relative to the root (`**`
// matches any number of directories); Untracked adds the files git does
// not track (and does not ignore).
type Spec struct {
	Paths     []string
	Exclude   []string
	Untracked bool
}

// Stats describe what an archive operation did.
type Stats struct {
	Files int   // regular files, symlinks and directories written/extracted
	Bytes int64 // uncompressed bytes of regular files
}

// ErrNoFiles is returned by the writers when the spec selected nothing
// (GitLab Runner: "no matching files"); nothing was written to w.
var ErrNoFiles = errors.New("no matching files")

var errTODO = errors.New("archive: not implemented yet")

// WriteZip streams a zip of the selected files of root to w (symlinks kept
// as links, modes kept).
func WriteZip(ctx context.Context, w io.Writer, root string, s Spec) (Stats, error) {
	return Stats{}, errTODO
}

// WriteTarGz streams a gzip-compressed tar of the selected files to w.
func WriteTarGz(ctx context.Context, w io.Writer, root string, s Spec) (Stats, error) {
	return Stats{}, errTODO
}

// ExtractZip unpacks a zip into dest, refusing entries whose path or
// symlink target escapes dest.
func ExtractZip(ctx context.Context, r io.ReaderAt, size int64, dest string) (Stats, error) {
	return Stats{}, errTODO
}

// ExtractTarGz unpacks a gzip-compressed tar stream into dest, refusing
// entries that escape dest.
func ExtractTarGz(ctx context.Context, r io.Reader, dest string) (Stats, error) {
	return Stats{}, errTODO
}
