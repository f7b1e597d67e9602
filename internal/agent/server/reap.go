//go:build unix

package server

import (
	"context"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// reaper reaps orphaned processes that the kernel re-parents to the agent
// when it runs as PID 1 (a container's first process), so they do not pile
// up as zombies.
//
// It must never reap a child the agent waits for itself (the stage shells,
// waited for by os/exec): that would steal their exit status. So it never
// calls wait4(-1): it lists the agent's zombie children in /proc and reaps
// each by pid unless the pid is one of its own. A child is registered
// between its start and its registration under mu, which the sweep holds
// too, so a child that exits at once cannot be taken for an orphan.
type reaper struct {
	mu  sync.Mutex
	own map[int]bool
}

func newReaper() *reaper { return &reaper{own: map[int]bool{}} }

// startChild must be called before starting a child; the returned function
// registers its pid (pid <= 0: it did not start) and must be called once.
// A nil reaper does nothing.
func (r *reaper) startChild() (started func(pid int)) {
	if r == nil {
		return func(int) {}
	}
	r.mu.Lock()
	var once sync.Once
	return func(pid int) {
		once.Do(func() {
			if pid > 0 {
				r.own[pid] = true
			}
			r.mu.Unlock()
		})
	}
}

// childDone unregisters pid once it was waited for.
func (r *reaper) childDone(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.own, pid)
	r.mu.Unlock()
}

// reapOnce reaps every zombie child of this process that is not its own;
// it returns how many.
func (r *reaper) reapOnce() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, pid := range zombieChildren(os.Getpid()) {
		if r.own[pid] {
			continue
		}
		var ws syscall.WaitStatus
		if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == pid {
			n++
		}
	}
	return n
}

// run reaps on every SIGCHLD until ctx ends.
func (r *reaper) run(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	r.reapOnce()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			r.reapOnce()
		}
	}
}

// zombieChildren lists the zombie processes whose parent is ppid (Linux
// /proc; nothing elsewhere).
func zombieChildren(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may contain spaces and ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if p, err := strconv.Atoi(f[1]); err == nil && p == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}
