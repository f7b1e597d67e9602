package config

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write("concurrent = 1\n", base)
	initial, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	var mu sync.Mutex
	changes := make(chan *Config, 10)
	w := NewWatcher(path, initial, WatcherOptions{
		Interval: 5 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil)),
		OnChange: func(c *Config, _ []Warning) { changes <- c },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	next := func() *Config {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no reload")
			return nil
		}
	}

	write("concurrent = 5\n", base.Add(time.Second))
	if c := next(); c.Concurrent != 5 || w.Current().Concurrent != 5 {
		t.Fatalf("reloaded concurrent = %d", c.Concurrent)
	}

	// A broken edit is logged and the old config kept.
	write("concurrent = 0\n", base.Add(2*time.Second))
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		s := logs.String()
		mu.Unlock()
		if strings.Contains(s, "config.toml:1: concurrent: must be at least 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broken edit not logged; logs:\n%s", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if w.Current().Concurrent != 5 {
		t.Fatalf("current after broken edit = %d, want 5", w.Current().Concurrent)
	}
	select {
	case c := <-changes:
		t.Fatalf("callback called for a broken config: %+v", c)
	default:
	}

	// Reload (SIGHUP) re-reads even when the mtime did not change.
	write("concurrent = 7\n", base.Add(2*time.Second))
	os.Chtimes(path, base.Add(2*time.Second), base.Add(2*time.Second))
	w.Reload()
	if c := next(); c.Concurrent != 7 {
		t.Fatalf("Reload concurrent = %d", c.Concurrent)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
