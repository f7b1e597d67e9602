package config

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultWatchInterval is how often the Watcher looks at the file's mtime.
const DefaultWatchInterval = 3 * time.Second

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	// Interval between mtime checks; DefaultWatchInterval when zero.
	Interval time.Duration
	Logger   *slog.Logger
	// OnChange is called from Run's goroutine with every new valid config.
	OnChange func(cfg *Config, warnings []Warning)
}

// Watcher re-reads a config file when its mtime (or size) changes and then
// stays the same for one more interval, or at once when Reload is called
// (SIGHUP). A file that fails to parse is logged and the
// previous config is kept.
type Watcher struct {
	path   string
	opts   WatcherOptions
	reload chan struct{}

	mu      sync.Mutex
	current *Config
	modTime time.Time
	size    int64
	// pending is the changed stat seen on the previous tick: a change is
	// loaded only once it has been stable for one interval, so a file
	// caught mid-write (truncated, half written) is not taken for the
	// new config.
	pending     bool
	pendModTime time.Time
	pendSize    int64
}

// NewWatcher watches path; initial is the config already loaded from it.
func NewWatcher(path string, initial *Config, opts WatcherOptions) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = DefaultWatchInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Watcher{path: path, opts: opts, reload: make(chan struct{}, 1), current: initial}
	if st, err := os.Stat(path); err == nil {
		w.modTime, w.size = st.ModTime(), st.Size()
	}
	return w
}

// Current returns the last valid config.
func (w *Watcher) Current() *Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Reload asks Run to re-read the file now, whatever its mtime. It does not
// block.
func (w *Watcher) Reload() {
	select {
	case w.reload <- struct{}{}:
	default: // a reload is already pending
	}
}

// Run watches until ctx is done. The caller owns the goroutine.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.reload:
			w.check(true)
		case <-t.C:
			w.check(false)
		}
	}
}

func (w *Watcher) check(force bool) {
	log := w.opts.Logger.With("config", w.path)
	st, err := os.Stat(w.path)
	if err != nil {
		if force {
			log.Error("config reload failed, keeping the previous config", "error", err)
		}
		return
	}
	w.mu.Lock()
	changed := !st.ModTime().Equal(w.modTime) || st.Size() != w.size
	if !force {
		if !changed {
			w.pending = false
			w.mu.Unlock()
			return
		}
		if !w.pending || !st.ModTime().Equal(w.pendModTime) || st.Size() != w.pendSize {
			w.pending, w.pendModTime, w.pendSize = true, st.ModTime(), st.Size()
			w.mu.Unlock()
			return
		}
	}
	w.pending = false
	w.modTime, w.size = st.ModTime(), st.Size()
	w.mu.Unlock()
	if empty, err := isEmptyFile(w.path); err == nil && empty {
		// Editors and config management truncate before they write: an
		// empty file is a rewrite in progress, not "no runners".
		log.Warn("config file is empty, keeping the previous config until it has content")
		return
	}
	cfg, warnings, err := Load(w.path)
	for _, wr := range warnings {
		log.Warn("config warning", "warning", wr.String())
	}
	if err != nil {
		log.Error("config reload failed, keeping the previous config", "error", err.Error())
		return
	}
	w.mu.Lock()
	w.current = cfg
	w.mu.Unlock()
	log.Info("config reloaded", "runners", len(cfg.Runners))
	if w.opts.OnChange != nil {
		w.opts.OnChange(cfg, warnings)
	}
}

// isEmptyFile reports whether path holds nothing but white space.
func isEmptyFile(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	return len(bytes.TrimSpace(b)) == 0, nil
}
