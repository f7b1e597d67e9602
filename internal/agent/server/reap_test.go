//go:build linux

package server

import (
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/job"
)

// waitZombie waits until pid is a zombie child of this process.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(zombieChildren(os.Getpid()), pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not become a zombie", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The agent reaps only as PID 1; here the same sweep runs on this test
// process's own children: an unregistered zombie (what an orphan
// re-parented to PID 1 looks like) is reaped, a registered child keeps its
// exit status for its own Wait.
func TestReaperReapsStrangersOnly(t *testing.T) {
	r := newReaper()

	stranger, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 0"}, &syscall.ProcAttr{Env: os.Environ()})
	if err != nil {
		t.Fatal(err)
	}
	started := r.startChild()
	own := exec.Command("/bin/sh", "-c", "exit 7")
	if err := own.Start(); err != nil {
		started(0)
		t.Fatal(err)
	}
	started(own.Process.Pid)

	waitZombie(t, stranger)
	waitZombie(t, own.Process.Pid)
	if n := r.reapOnce(); n != 1 {
		t.Errorf("reaped %d processes, want 1", n)
	}
	if slices.Contains(zombieChildren(os.Getpid()), stranger) {
		t.Error("the stranger is still a zombie")
	}
	err = own.Wait()
	r.childDone(own.Process.Pid)
	if own.ProcessState == nil || own.ProcessState.ExitCode() != 7 {
		t.Errorf("own child's exit status was stolen: %v %v", err, own.ProcessState)
	}
	if len(r.own) != 0 {
		t.Errorf("registrations left: %v", r.own)
	}
}

// A nil reaper (not PID 1) is a no-op.
func TestNilReaper(t *testing.T) {
	var r *reaper
	r.startChild()(5)
	r.childDone(5)
}

// The agent with Reap in a process that is a child subreaper (what PID 1
// is): the orphans its job leaves behind are reaped, the stage shells'
// exit statuses are not stolen. Runs in a child test process because the
// subreaper setting cannot be undone.
func TestReaperOrphansEndToEnd(t *testing.T) {
	if os.Getenv("PODRUNNER_AGENT_REAP_HELPER") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReaperOrphansEndToEnd$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PODRUNNER_AGENT_REAP_HELPER=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return
	}
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Skipf("prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	spec := testJob{strategy: "none", steps: []job.Step{script(
		`(setsid sleep 0.3 &)`, // leaves the group: outlives the stage
		`(sleep 0.2 &)`,        // killed with the group when the stage ends
		`for i in 1 2 3 4 5; do sh -c 'exit 3' || true; done`,
		`echo done`)}}.spec(t)
	a := startAgent(t, spec, Options{Reap: true})
	log, st := a.waitDone(t)
	if !st.Result.Success {
		t.Fatalf("%+v\n%s", st.Result, log)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		z := zombieChildren(os.Getpid())
		if len(z) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombies left: %v", z)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
