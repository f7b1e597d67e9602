//go:build unix

// Package proc runs one script with a shell in its own process group and
// stops the whole group on cancellation. It knows nothing about the runner
// so that the in-pod agent can reuse it.
package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults.
const (
	// DefaultTermGrace is how long a group gets between SIGTERM and SIGKILL.
	DefaultTermGrace = 10 * time.Second
	// DefaultOutputDrain is how long output is still read after the shell
	// exited and the rest of its group was killed. Only processes that left
	// the group (setsid) can keep the pipe open that long.
	DefaultOutputDrain = 2 * time.Second
)

// Cmd is one process to run.
type Cmd struct {
	Path string   // program, e.g. "/bin/bash"; looked up in PATH when relative
	Args []string // arguments after the program name
	Dir  string
	Env  []string // nil: the current process's environment
	// Stdin is the script's standard input; nil means /dev/null.
	Stdin io.Reader
	// Output receives stdout and stderr, interleaved as written. Writes come
	// from one goroutine, never after Run returned.
	Output io.Writer
	// TermGrace is the time between SIGTERM and SIGKILL when ctx is
	// cancelled; 0 means DefaultTermGrace, negative means SIGKILL at once.
	TermGrace time.Duration
	// Abort, when closed, kills the group at once (also during TermGrace).
	Abort <-chan struct{}
	// OutputDrain overrides DefaultOutputDrain.
	OutputDrain time.Duration
	// Started, if set, is called with the process group id once running.
	Started func(pgid int)
}

// Run starts c in a new process group, copies its output, and waits for the
// shell to exit. It returns the exit code (128+signal when killed by a
// signal, like shells report it).
//
// When ctx is cancelled the group gets SIGTERM and, after TermGrace,
// SIGKILL; closing Abort sends SIGKILL at once. When the shell exits, the
// processes it left in its group (e.g. "sleep 1000 &") are killed, so a
// background process never holds the stage open.
//
// err is non-nil only when the process could not be run; a cancelled run
// returns the exit code of the killed shell and a nil error.
func Run(ctx context.Context, c Cmd) (exitCode int, err error) {
	if c.Output == nil {
		c.Output = io.Discard
	}
	path, err := exec.LookPath(c.Path)
	if err != nil {
		return -1, fmt.Errorf("find shell %q: %w", c.Path, err)
	}
	cmd := exec.Command(path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.Stdin = c.Stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	// Our own pipe rather than exec's: we decide how long to read after
	// the shell has gone.
	pr, pw, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("create output pipe: %w", err)
	}
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return -1, fmt.Errorf("start %s: %w", path, err)
	}
	pw.Close()
	pgid := cmd.Process.Pid
	if c.Started != nil {
		c.Started(pgid)
	}

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// Errors: the writer failed (keep draining so the script does not
		// block on a full pipe) or pr was closed by us.
		if _, err := io.Copy(c.Output, pr); err != nil {
			_, _ = io.Copy(io.Discard, pr)
		}
	}()

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var waitErr error
	select {
	case waitErr = <-waited:
	case <-c.Abort:
		Kill(pgid)
		waitErr = <-waited
	case <-ctx.Done():
		waitErr = terminate(pgid, c, waited)
	}
	// The shell is gone; whatever it left in its group goes too.
	Kill(pgid)

	drain := c.OutputDrain
	if drain <= 0 {
		drain = DefaultOutputDrain
	}
	t := time.NewTimer(drain)
	select {
	case <-copied:
	case <-t.C:
		// A process outside the group still holds the pipe.
		pr.Close()
		<-copied
	}
	t.Stop()
	pr.Close()
	return exitStatus(cmd, waitErr)
}

// terminate sends SIGTERM, then SIGKILL after the grace (or at once on Abort).
func terminate(pgid int, c Cmd, waited <-chan error) error {
	grace := c.TermGrace
	if grace == 0 {
		grace = DefaultTermGrace
	}
	if grace < 0 {
		Kill(pgid)
		return <-waited
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-waited:
		return err
	case <-t.C:
	case <-c.Abort:
	}
	Kill(pgid)
	return <-waited
}

// Kill sends SIGKILL to process group pgid; a gone group is not an error.
func Kill(pgid int) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// GroupAlive reports whether process group pgid still has live members.
// Zombies do not count: they hold no resources and only wait for their
// (possibly slow) reaper, e.g. a container's PID 1.
func GroupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	live, ok := liveMembers(pgid)
	return !ok || live
}

// liveMembers scans /proc for a non-zombie process of group pgid; ok is
// false when /proc cannot be read.
func liveMembers(pgid int) (live, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false, false
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …; comm may contain spaces and ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid && f[0] != "Z" && f[0] != "X" {
			return true, true
		}
	}
	return false, true
}

func exitStatus(cmd *exec.Cmd, waitErr error) (int, error) {
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return -1, fmt.Errorf("wait for %s: %w", cmd.Path, waitErr)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return cmd.ProcessState.ExitCode(), nil
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// stat reads /proc/<pid>/stat: state, process group and start time (clock
// ticks after boot). Together, pid and start time name one process: pids
// are reused, start times of a pid are not.
func stat(pid int) (state string, pgrp int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, 0, err
	}
	// pid (comm) state ppid pgrp … starttime is field 22; comm may
	// contain spaces and ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, 0, fmt.Errorf("/proc/%d/stat: no command end", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	if pgrp, err = strconv.Atoi(f[2]); err != nil {
		return "", 0, 0, fmt.Errorf("/proc/%d/stat: process group: %w", pid, err)
	}
	if start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return "", 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return f[0], pgrp, start, nil
}

// StartTime is the start time of process pid (an opaque value, clock
// ticks after boot); an error when it does not exist.
func StartTime(pid int) (uint64, error) {
	_, _, start, err := stat(pid)
	return start, err
}

// Alive reports whether process pid lives (not a zombie) and is the one
// that started at start.
func Alive(pid int, start uint64) bool {
	state, _, st, err := stat(pid)
	return err == nil && st == start && state != "Z" && state != "X"
}

// KillGroupOf kills process group pgid with SIGKILL only if it is still
// the group whose leader started at leaderStart: the leader, if alive,
// must be that very process, and every member must have started no
// earlier than it (a group id is only free for reuse once all members of
// the old group are gone). It reports whether it sent the signal.
func KillGroupOf(pgid int, leaderStart uint64) (bool, error) {
	if pgid <= 1 {
		return false, fmt.Errorf("process group %d is not a job's group", pgid)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false, fmt.Errorf("list processes: %w", err)
	}
	members := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, g, start, err := stat(pid)
		if err != nil || g != pgid || state == "Z" || state == "X" {
			continue
		}
		if start < leaderStart || (pid == pgid && start != leaderStart) {
			return false, fmt.Errorf("process group %d belongs to another process now (pid %d started at %d, the job's at %d)", pgid, pid, start, leaderStart)
		}
		members++
	}
	if members == 0 {
		return false, nil
	}
	Kill(pgid)
	return true, nil
}
