package trace

import (
	"fmt"
	"io"
	"sync"
)

// Options configure a job's Trace.
type Options struct {
	// MaskValues are the values of the job's masked variables.
	MaskValues []string
	// JobToken is always masked, as a value.
	JobToken string
	// MaskPrefixes are the job's features.token_mask_prefixes;
	// DefaultTokenPrefixes are always added.
	MaskPrefixes []string
	// Limit is the output limit in bytes (config output_limit × 1024);
	// <= 0 means DefaultLimit.
	Limit int64
	// TempDir holds the buffer file; empty means os.TempDir().
	TempDir string
}

// Trace is a job's log: what executors write is masked and stored in a
// Buffer that the Sender streams to GitLab. Write is safe for concurrent
// use; for output whose secrets may be split across writes from several
// concurrent streams, give each stream its own NewStream.
type Trace struct {
	mu      sync.Mutex
	opts    Options
	buf     *Buffer
	masker  *Masker
	fix     *validUTF8 // in front of masker
	streams map[*Stream]struct{}
	done    bool
}

// New creates the buffer file and the masker for a job.
func New(opts Options) (*Trace, error) {
	buf, err := NewBuffer(opts.TempDir, opts.Limit)
	if err != nil {
		return nil, err
	}
	t := &Trace{opts: opts, buf: buf, streams: map[*Stream]struct{}{}}
	t.masker = t.newMasker(buf)
	t.fix = &validUTF8{w: t.masker}
	return t, nil
}

func (t *Trace) newMasker(w io.Writer) *Masker {
	values := append([]string{t.opts.JobToken}, t.opts.MaskValues...)
	return NewMasker(w, values, t.opts.MaskPrefixes)
}

// Write masks p into the buffer, invalid UTF-8 replaced by U+FFFD. After Finish it is dropped (the final
// checksum has been taken) but reported as written.
func (t *Trace) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return len(p), nil
	}
	return t.fix.Write(p)
}

// WriteString writes s (runner messages, section markers).
func (t *Trace) WriteString(s string) (int, error) { return t.Write([]byte(s)) }

// Buffer is the masked, stored log, for the Sender.
func (t *Trace) Buffer() *Buffer { return t.buf }

// Stream is a writer with its own masker state, so a value split across
// two writes of one stream is masked even when another stream writes in
// between. Close it when the stream ends.
type Stream struct {
	t      *Trace
	mu     sync.Mutex
	masker *Masker
	fix    *validUTF8 // in front of masker
	closed bool
}

// NewStream returns a new Stream into the same buffer.
func (t *Trace) NewStream() *Stream {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &Stream{t: t}
	s.masker = t.newMasker(t.buf)
	s.fix = &validUTF8{w: s.masker}
	if t.done {
		s.closed = true
	} else {
		t.streams[s] = struct{}{}
	}
	return s
}

// Write masks p into the trace buffer, invalid UTF-8 replaced by U+FFFD.
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return len(p), nil
	}
	return s.fix.Write(p)
}

// Close emits the stream's held tail.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.t.mu.Lock()
	delete(s.t.streams, s)
	s.t.mu.Unlock()
	ferr := s.fix.Flush()
	if err := s.masker.Flush(); err != nil {
		return err
	}
	return ferr
}

// Finish emits every held tail (of Write and of open streams) so the buffer
// holds the complete log; call it before Sender.Finish. Later writes are
// dropped.
func (t *Trace) Finish() error {
	t.mu.Lock()
	streams := make([]*Stream, 0, len(t.streams))
	for s := range t.streams {
		streams = append(streams, s)
	}
	t.mu.Unlock()
	var firstErr error
	for _, s := range streams {
		if err := s.Close(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.done {
		t.done = true
		if err := t.fix.Flush(); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := t.masker.Flush(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return fmt.Errorf("flush job log: %w", firstErr)
	}
	return nil
}

// Close finishes the trace and removes the buffer file.
func (t *Trace) Close() error {
	ferr := t.Finish()
	if err := t.buf.Close(); err != nil {
		return err
	}
	return ferr
}
