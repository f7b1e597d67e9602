package trace

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf8"
)

// DefaultLimit is GitLab Runner's default output_limit (4096 KiB).
const DefaultLimit int64 = 4096 * 1024

// ErrClosed is returned by a Buffer used after Close.
var ErrClosed = errors.New("trace buffer closed")

// LimitNotice is the one-time notice appended when the log reaches limit
// bytes; the wording and colours are GitLab Runner's.
func LimitNotice(limit int64) string {
	return fmt.Sprintf("\n%sJob's log exceeded limit of %d bytes.\n"+
		"Job execution will continue but no more output will be collected.%s\n",
		ANSIBoldYellow, limit, ANSIReset)
}

// Buffer stores the (already masked) job log in a temporary file, so memory
// stays constant while the whole log remains readable for a resend from byte
// 0 (GitLab's 412). It enforces the output limit and keeps the CRC-32 (IEEE)
// and size of exactly the bytes stored, limit notice included.
//
// Buffer is safe for concurrent writers and concurrent readers.
type Buffer struct {
	mu       sync.Mutex
	file     *os.File
	w        *bufio.Writer
	size     int64
	crc      uint32
	limit    int64
	exceeded bool
	closed   bool
	// broken: the file could not be written (full disk…). The log then
	// is the file's first durable bytes plus tail, a line saying what is
	// missing; later output is dropped so the job and its final update
	// go on.
	broken  bool
	durable int64
	tail    []byte
}

// NewBuffer creates a Buffer backed by a new file in dir (os.TempDir() when
// empty). limit is in bytes; <= 0 means DefaultLimit.
func NewBuffer(dir string, limit int64) (*Buffer, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	f, err := os.CreateTemp(dir, "podrunner-trace-*")
	if err != nil {
		return nil, fmt.Errorf("create trace buffer file in %q: %w", dir, err)
	}
	return &Buffer{file: f, w: bufio.NewWriterSize(f, 64*1024), limit: limit}, nil
}

// Write stores p. Past the limit p is cut at a UTF-8 boundary, the notice is
// appended once and everything after is dropped; dropped bytes are still
// reported as written so the job goes on.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, ErrClosed
	}
	if b.exceeded || b.broken || len(p) == 0 {
		return len(p), nil
	}
	if room := b.limit - b.size; int64(len(p)) > room {
		b.store(truncateUTF8(p, room))
		b.exceeded = true
		b.store([]byte(LimitNotice(b.limit)))
		return len(p), nil
	}
	b.store(p)
	return len(p), nil
}

func (b *Buffer) store(p []byte) {
	if b.broken {
		return
	}
	if _, err := b.w.Write(p); err != nil {
		b.breakDown(err)
		return
	}
	b.crc = crc32.Update(b.crc, crc32.IEEETable, p)
	b.size += int64(len(p))
}

// breakDown switches to the broken state after a write error of the file:
// the log keeps the bytes that reached the file and ends with a line
// naming the error.
func (b *Buffer) breakDown(werr error) {
	b.broken = true
	// The file is only appended to, so its offset is what reached it.
	durable, err := b.file.Seek(0, io.SeekCurrent)
	if err != nil {
		durable = 0
	}
	durable = min(durable, b.size)
	crc, err := crc32Of(io.NewSectionReader(b.file, 0, durable))
	if err != nil {
		durable, crc = 0, 0
	}
	msg := werr.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	b.durable = durable
	b.tail = []byte("\n" + Error(fmt.Sprintf("the runner could not store the job log (%s): output after byte %d is missing",
		strings.ToValidUTF8(msg, "\uFFFD"), durable)))
	b.crc = crc32.Update(crc, crc32.IEEETable, b.tail)
	b.size = durable + int64(len(b.tail))
}

func crc32Of(r io.Reader) (uint32, error) {
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, r); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// truncateUTF8 cuts p to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(p []byte, n int64) []byte {
	if n <= 0 {
		return nil
	}
	p = p[:n]
	// Drop an incomplete trailing sequence (at most 3 bytes).
	for i := 1; i <= utf8.UTFMax-1 && i <= len(p); i++ {
		c := p[len(p)-i]
		if c < utf8.RuneSelf {
			break // ASCII: complete
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(p[len(p)-i:]) {
				p = p[:len(p)-i]
			}
			break
		}
	}
	return p
}

// Name is the path of the backing file.
func (b *Buffer) Name() string { return b.file.Name() }

// Flush writes buffered bytes to the file, so that the file holds the
// whole log (for a later runner process, should this one die).
func (b *Buffer) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed && !b.broken {
		if err := b.w.Flush(); err != nil {
			b.breakDown(err)
		}
	}
}

// Size is the number of bytes stored.
func (b *Buffer) Size() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size
}

// Checksum returns "crc32:%08x" of the bytes stored.
func (b *Buffer) Checksum() string {
	_, sum := b.Snapshot()
	return sum
}

// Snapshot returns the size and checksum of the same stored bytes.
func (b *Buffer) Snapshot() (size int64, checksum string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size, fmt.Sprintf("crc32:%08x", b.crc)
}

// LimitExceeded reports whether output was dropped.
func (b *Buffer) LimitExceeded() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.exceeded
}

// ReadAt reads stored bytes at off. Like os.File it returns io.EOF when
// fewer than len(p) bytes are stored from off.
func (b *Buffer) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, ErrClosed
	}
	if !b.broken {
		if err := b.w.Flush(); err != nil {
			b.breakDown(err)
		}
	}
	size := b.size
	f := b.file
	var tail []byte
	if b.broken {
		// Read the durable part from the file, the rest from the tail
		// (never changed once set).
		tail = b.tail
		size = b.durable
	}
	b.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("read trace buffer at negative offset %d", off)
	}
	if off >= size {
		if tail != nil && off < size+int64(len(tail)) {
			n := copy(p, tail[off-size:])
			if n < len(p) {
				return n, io.EOF
			}
			return n, nil
		}
		return 0, io.EOF
	}
	if tail != nil && int64(len(p)) > size-off {
		n, err := b.readFile(f, p[:size-off], off, size)
		if err != nil {
			return n, err
		}
		m, err := b.ReadAt(p[n:], size)
		return n + m, err
	}
	return b.readFile(f, p, off, size)
}

func (b *Buffer) readFile(f *os.File, p []byte, off, size int64) (int, error) {
	want := len(p)
	if int64(want) > size-off {
		p = p[:size-off]
	}
	// Stored bytes below size are never rewritten, so reading without the
	// lock (pread) is safe against concurrent writers.
	n, err := f.ReadAt(p, off)
	if err == nil && n < want {
		err = io.EOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read trace buffer at %d: %w", off, err)
	}
	return n, err
}

// Reader returns a reader of the bytes stored from off up to the current
// size.
func (b *Buffer) Reader(off int64) io.Reader {
	return io.NewSectionReader(b, off, b.Size()-off)
}

// Close removes the file. Further writes fail with ErrClosed.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	name := b.file.Name()
	err := b.file.Close()
	if rmErr := os.Remove(name); rmErr != nil && err == nil {
		err = rmErr
	}
	if err != nil {
		return fmt.Errorf("remove trace buffer file %s: %w", name, err)
	}
	return nil
}
