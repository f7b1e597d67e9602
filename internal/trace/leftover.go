package trace

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
)

// Leftover is the log a dead runner process left behind, as a Source: the
// bytes of its buffer file followed by tail. When the file is gone (or
// shorter than what GitLab has) only tail is known, appended at sent, and
// there is no checksum: GitLab then keeps the log it has.
type Leftover struct {
	f    *os.File // nil: file lost
	base int64    // where tail starts
	tail []byte
	sum  string
}

// OpenLeftover opens path (may be "" or gone) for a log GitLab has sent
// bytes of, to be followed by tail.
func OpenLeftover(path string, sent int64, tail string) (*Leftover, error) {
	l := &Leftover{base: max(sent, 0), tail: []byte(tail)}
	if path == "" {
		return l, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the job log left behind: %w", err)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() < sent {
		f.Close()
		return l, nil
	}
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("read the job log left behind: %w", err)
	}
	h.Write(l.tail)
	l.f, l.base, l.sum = f, fi.Size(), fmt.Sprintf("crc32:%08x", h.Sum32())
	return l, nil
}

// Snapshot is the whole log's size and checksum ("" when the file was lost).
func (l *Leftover) Snapshot() (int64, string) { return l.base + int64(len(l.tail)), l.sum }

// ReadAt reads the log; below the tail without the file it fails (GitLab
// asking to resend everything is then refused, and the final state goes
// without the rest).
func (l *Leftover) ReadAt(p []byte, off int64) (int, error) {
	if off < l.base {
		if l.f == nil {
			return 0, fmt.Errorf("the job log before byte %d was lost with the runner process", l.base)
		}
		n, err := l.f.ReadAt(p[:min(int64(len(p)), l.base-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return n, err
		}
		if n == 0 {
			return 0, io.ErrUnexpectedEOF // the file shrank
		}
		if n < len(p) {
			m, err := l.ReadAt(p[n:], off+int64(n))
			return n + m, err
		}
		return n, nil
	}
	if off >= l.base+int64(len(l.tail)) {
		return 0, io.EOF
	}
	n := copy(p, l.tail[off-l.base:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close closes the file (it is not removed).
func (l *Leftover) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
