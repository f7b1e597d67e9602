//go:build unix

package proc

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe buffer for reading output while Run runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func sh(script string) Cmd { return Cmd{Path: "sh", Args: []string{"-c", script}} }

func TestExitCodeAndOutput(t *testing.T) {
	tests := []struct {
		script string
		code   int
		out    string
	}{
		{"echo hi; echo err >&2", 0, "hi\nerr\n"},
		{"exit 3", 3, ""},
		{"kill -9 $$", 128 + 9, ""},
		{"printf 'no newline'", 0, "no newline"},
	}
	for _, tt := range tests {
		var out syncBuffer
		c := sh(tt.script)
		c.Output = &out
		code, err := Run(context.Background(), c)
		if err != nil {
			t.Fatalf("%q: %v", tt.script, err)
		}
		if code != tt.code || out.String() != tt.out {
			t.Errorf("%q: code %d out %q, want %d %q", tt.script, code, out.String(), tt.code, tt.out)
		}
	}
}

func TestMissingShell(t *testing.T) {
	if _, err := Run(context.Background(), Cmd{Path: "/nonexistent/shell"}); err == nil {
		t.Fatal("want error for a missing shell")
	}
}

func TestBackgroundProcessDoesNotHoldRun(t *testing.T) {
	var pgid int
	c := sh("sleep 1000 & echo started")
	var out syncBuffer
	c.Output = &out
	c.Started = func(g int) { pgid = g }
	done := make(chan struct{})
	var code int
	var err error
	go func() {
		defer close(done)
		code, err = Run(context.Background(), c)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run still waiting for the background process after 5s")
	}
	if err != nil || code != 0 || out.String() != "started\n" {
		t.Fatalf("code %d err %v out %q", code, err, out.String())
	}
	waitGroupGone(t, pgid, 2*time.Second)
}

func TestCancelSendsTermThenRunEnds(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "term")
	ctx, cancel := context.WithCancel(context.Background())
	c := sh("trap 'echo got-term > " + marker + "; exit 7' TERM; echo ready; while :; do sleep 0.05; done")
	var out syncBuffer
	c.Output = &out
	c.TermGrace = 5 * time.Second
	go func() {
		for !strings.Contains(out.String(), "ready") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	code, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if code != 7 {
		t.Errorf("exit code %d, want 7 from the TERM trap", code)
	}
	if b, _ := os.ReadFile(marker); string(b) != "got-term\n" {
		t.Errorf("TERM trap did not run: %q", b)
	}
}

func TestGraceThenKill(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := sh("trap '' TERM; echo ready; while :; do sleep 0.05; done")
	var out syncBuffer
	c.Output = &out
	c.TermGrace = 200 * time.Millisecond
	go func() {
		for !strings.Contains(out.String(), "ready") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	code, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if code != 128+9 {
		t.Errorf("exit code %d, want SIGKILL (137) after the grace", code)
	}
}

func TestAbortKillsGroupAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	abort := make(chan struct{})
	pgidc := make(chan int, 1)
	c := sh("trap '' TERM; sleep 1000 & sleep 1000; wait")
	c.TermGrace = time.Hour
	c.Abort = abort
	c.Started = func(g int) { pgidc <- g }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Run(ctx, c)
	}()
	pgid := <-pgidc
	time.Sleep(100 * time.Millisecond)
	cancel()
	close(abort)
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of abort")
	}
	waitGroupGone(t, pgid, 2*time.Second)
}

func waitGroupGone(t *testing.T, pgid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for GroupAlive(pgid) {
		if time.Now().After(deadline) {
			t.Fatalf("process group %s still alive after %v", strconv.Itoa(pgid), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEscapedProcessOnlyDelaysByDrain(t *testing.T) {
	if _, err := os.Stat("/usr/bin/setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	c := sh("setsid sleep 3 & echo bye")
	var out syncBuffer
	c.Output = &out
	c.OutputDrain = 100 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Run(context.Background(), c)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run waited for a process that left the group")
	}
	if out.String() != "bye\n" {
		t.Errorf("output %q", out.String())
	}
}

// KillGroupOf kills a job's group only while it is that group: a start
// time that does not match the leader's (a reused pid) is refused.
func TestKillGroupOf(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 100 & sleep 100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { Kill(pgid); cmd.Wait() })
	start, err := StartTime(pgid)
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(pgid, start) || Alive(pgid, start+1) {
		t.Fatal("Alive does not tell the process by its start time")
	}
	if killed, err := KillGroupOf(pgid, start+1); killed || err == nil {
		t.Fatalf("killed a group whose leader started at another time: %v %v", killed, err)
	}
	if killed, err := KillGroupOf(pgid, start); !killed || err != nil {
		t.Fatalf("KillGroupOf: %v %v", killed, err)
	}
	cmd.Wait()
	for GroupAlive(pgid) {
		time.Sleep(10 * time.Millisecond)
	}
	if killed, err := KillGroupOf(pgid, start); killed || err != nil {
		t.Fatalf("a gone group: %v %v", killed, err)
	}
}
