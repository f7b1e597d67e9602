package server

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/podrunner/podrunner/internal/agent"
)

// jobLog is the job's log on disk, appended by the job and read by the API
// by offset. Readers learn about new bytes (and the end of the job) through
// a channel that is closed and replaced on every change.
type jobLog struct {
	mu      sync.Mutex
	w       *os.File
	r       *os.File
	size    int64
	done    bool
	result  *agent.Result
	changed chan struct{}
	err     error // first write error; later writes fail with it
}

func openLog(file string) (*jobLog, error) {
	// Truncate: the log belongs to this run of the agent only.
	w, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create job log: %w", err)
	}
	r, err := os.Open(file)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open job log: %w", err)
	}
	return &jobLog{w: w, r: r, changed: make(chan struct{})}, nil
}

// Write appends p; the bytes are readable once Write returns.
func (l *jobLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	if l.done {
		return 0, fmt.Errorf("job log is finished")
	}
	n, err := l.w.Write(p)
	l.size += int64(n)
	if n > 0 {
		l.notify()
	}
	if err != nil {
		l.err = fmt.Errorf("write job log: %w", err)
		return n, l.err
	}
	return n, nil
}

func (l *jobLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// finish marks the job done with its result: no more bytes will come.
func (l *jobLog) finish(r agent.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	l.result = &r
	_ = l.w.Sync()
	l.notify()
}

// snapshot returns the size, whether the job is done, its result and a
// channel closed on the next change.
func (l *jobLog) snapshot() (size int64, done bool, res *agent.Result, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size, l.done, l.result, l.changed
}

// readAt reads the stored bytes [off, min(off+max, end)) where end is a size
// obtained from snapshot.
func (l *jobLog) readAt(off, end int64, max int) ([]byte, error) {
	n := end - off
	if n > int64(max) {
		n = int64(max)
	}
	if n <= 0 {
		return nil, nil
	}
	buf := make([]byte, n)
	got, err := l.r.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read job log at %d: %w", off, err)
	}
	if int64(got) != n {
		return nil, fmt.Errorf("read job log at %d: short read (%d of %d bytes)", off, got, n)
	}
	return buf, nil
}

func (l *jobLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Close()
	l.r.Close()
}
