package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// Acceptance of issue 4, item 9: the log from the pod to GitLab is
// lossless and ordered without exec/attach. A job prints 200 MiB of
// numbered lines in three parts; kube-apiserver is restarted in the middle:
// the job waits at a gate (a test HTTP server it polls with wget) until the
// API server is down, streams the second part during the outage, waits at
// a second gate until the API server is back (the pod must survive the
// informers' relist), then streams the rest. The coordinator must hold
// every line once, in order, with the runner's CRC.
const (
	bigLogLines   = 2097152 // × bigLogLineLen = 200 MiB
	bigLogLineLen = 100     // "%07d " + pad + "\n"
	bigLogGate1   = 699050  // last line before gate 1
	bigLogGate2   = 1398100 // last line before gate 2
)

var bigLogPad = strings.Repeat(".", bigLogLineLen-9)

// Not parallel: restarting the API server would disturb the other tests
// (sequential tests run before the parallel ones start).
func TestKubernetesBigLogAcrossAPIServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 200 MiB through the cluster")
	}
	c := testcluster.Get(t)
	if os.Geteuid() != 0 {
		t.Skip("restarting kube-apiserver needs root (run under hack/cluster/with-cluster)")
	}
	restartCmd, err := filepath.Abs("../../hack/cluster/restart")
	if err != nil {
		t.Fatal(err)
	}
	gates := newBigLogGates(t, c.NodeIP)
	// seq -w pads to the widest argument: 0000001 makes every line 7 digits.
	part := func(from, to int) string {
		return fmt.Sprintf("    - seq -w %07d %07d | sed 's/$/ %s/'\n", from, to, bigLogPad)
	}
	gate := func(n int) string {
		return fmt.Sprintf("    - until wget -q -O /dev/null %s/gate/%d 2>/dev/null; do sleep 0.1; done\n", gates.url, n)
	}
	ci := "biglog:\n  script:\n" + part(1, bigLogGate1) + gate(1) + part(bigLogGate1+1, bigLogGate2) + gate(2) +
		part(bigLogGate2+1, bigLogLines) + "    - echo biglog-done\n"
	e := newK8sEnv(t, ci, k8sOptions{external: true, maxTraceSize: 512 << 20})

	// The runner is its own process so its peak RSS is its own (the
	// coordinator in this process holds the 200 MiB trace twice).
	runner, runnerOut := e.startRunnerProcess(e.runnerProcessConfig("e2e-biglog", 1, 256<<10 /* KiB */))

	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["biglog"]
	deadline := time.Now().Add(3 * time.Minute)
	for waiting := true; waiting; {
		select {
		case <-gates.reached[0]:
			waiting = false
		case <-time.After(500 * time.Millisecond):
			j, _ := e.coord.Job(id)
			if (j.Status != coordinator.StatusPending && j.Status != coordinator.StatusRunning) || time.Now().After(deadline) {
				t.Fatalf("the job never reached gate 1 (job %s, %d bytes of log):\n%s", j.Status, j.TraceSize, tail(e.coord.Trace(id), 2000))
			}
		}
	}

	// Restart kube-apiserver: gate 1 opens once it is down, gate 2 once
	// it is back.
	var (
		restartOut lockedBuffer
		restartErr error
		restartWG  sync.WaitGroup
	)
	cmd := exec.Command(restartCmd, "kube-apiserver")
	cmd.Stdout = &restartOut
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	restartWG.Add(1)
	t.Cleanup(restartWG.Wait)
	go func() {
		defer restartWG.Done()
		defer gates.open(0) // whatever happens, let the job end
		defer gates.open(1)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(&restartOut, line)
			switch {
			case strings.Contains(line, "kube-apiserver stopped"):
				gates.open(0)
			case strings.Contains(line, "kube-apiserver ready again"):
				gates.open(1)
			}
		}
		restartErr = cmd.Wait()
	}()

	// Not e.waitPipeline: on failure it would log the whole 200 MiB.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	v, err := e.coord.WaitPipeline(ctx, pl.ID)
	cancel()
	if err != nil {
		t.Fatalf("%v; end of the log:\n%s", err, tail(e.coord.Trace(id), 4000))
	}
	restartWG.Wait()
	j := v.Jobs[0]
	rss, cpu := procPeak(runner.Process.Pid)
	t.Logf("restart kube-apiserver:\n%s", restartOut.String())
	if restartErr != nil {
		t.Fatalf("restart kube-apiserver: %v", restartErr)
	}
	held := gates.held()
	t.Logf("gates: %s", gates)

	runnerLog := runnerOut.String()
	total := j.FinishedAt.Sub(j.StartedAt) - held
	t.Logf("job %s, log %d bytes; job start to final update without the gate waits: %v = %.1f MB/s end to end",
		j.Status, j.TraceSize, total.Round(time.Millisecond), float64(j.TraceSize)/total.Seconds()/1e6)
	if d, ok := executorDuration(runnerLog); ok {
		d -= held
		t.Logf("pod created to the executor holding the whole log and result, without the gate waits: %v = %.1f MB/s pod to runner",
			d.Round(time.Millisecond), float64(j.TraceSize)/d.Seconds()/1e6)
	}
	t.Logf("runner process: peak RSS %s, CPU %s", rss, cpu)
	t.Logf("end of the log:\n%s", tail(e.coord.Trace(id), 400))
	// The runner's story without the ~200 "Appending trace ... ok" lines:
	// when the executor had the whole log, retries, the final update.
	var story strings.Builder
	for _, l := range strings.Split(runnerLog, "\n") {
		if l != "" && !strings.Contains(l, "Appending trace to coordinator... ok") {
			story.WriteString(l + "\n")
		}
	}
	t.Logf("runner log (PATCH successes left out):\n%s", story.String())

	if j.Status != coordinator.StatusSuccess {
		t.Fatalf("job %s (%s):\n%s", j.Status, j.FailureReason, tail(e.coord.Trace(id), 4000))
	}
	if j.Checksum == "" || j.Checksum != j.TraceChecksum || j.Bytesize != j.TraceSize {
		t.Errorf("runner sent %s / %d bytes, GitLab holds %s / %d bytes", j.Checksum, j.Bytesize, j.TraceChecksum, j.TraceSize)
	}
	tr := e.coord.Trace(id)
	if err := checkBigLog(tr, bigLogLines); err != nil {
		t.Error(err)
	}
	if bytes.Contains(tr, []byte("Job's log exceeded limit")) || !bytes.Contains(tr, []byte("\nbiglog-done\n")) {
		t.Errorf("the log was cut or misses the end:\n%s", tail(tr, 2000))
	}
	e.waitNoPods()
}

// bigLogGates is an HTTP server the job polls (GET /gate/N answers 200
// once gate N is open, 404 before), so the test decides when the job goes
// on without exec into the pod.
type bigLogGates struct {
	url     string
	reached [2]chan struct{} // closed on the first poll of each gate
	opened  [2]chan struct{}

	mu                  sync.Mutex
	firstHit, openedAt  [2]time.Time
	reachOnce, openOnce [2]sync.Once
}

func newBigLogGates(t *testing.T, nodeIP string) *bigLogGates {
	t.Helper()
	g := &bigLogGates{}
	for i := range 2 {
		g.reached[i], g.opened[i] = make(chan struct{}), make(chan struct{})
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	g.url = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(g.serve), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return g
}

func (g *bigLogGates) serve(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/gate/"))
	if err != nil || n < 1 || n > 2 {
		http.NotFound(w, r)
		return
	}
	i := n - 1
	g.reachOnce[i].Do(func() {
		g.mu.Lock()
		g.firstHit[i] = time.Now()
		g.mu.Unlock()
		close(g.reached[i])
	})
	select {
	case <-g.opened[i]:
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func (g *bigLogGates) open(i int) {
	g.openOnce[i].Do(func() {
		g.mu.Lock()
		g.openedAt[i] = time.Now()
		g.mu.Unlock()
		close(g.opened[i])
	})
}

// held is how long the job waited at the gates.
func (g *bigLogGates) held() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	var d time.Duration
	for i := range 2 {
		if !g.firstHit[i].IsZero() && g.openedAt[i].After(g.firstHit[i]) {
			d += g.openedAt[i].Sub(g.firstHit[i])
		}
	}
	return d
}

func (g *bigLogGates) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var b strings.Builder
	for i := range 2 {
		switch {
		case g.firstHit[i].IsZero():
			fmt.Fprintf(&b, "gate %d never reached; ", i+1)
		case g.openedAt[i].After(g.firstHit[i]):
			fmt.Fprintf(&b, "gate %d held the job %.1f s; ", i+1, g.openedAt[i].Sub(g.firstHit[i]).Seconds())
		default:
			fmt.Fprintf(&b, "gate %d reached %.1f s after it opened; ", i+1, g.firstHit[i].Sub(g.openedAt[i]).Seconds())
		}
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// executorDuration reads the duration of the executor's "job finished"
// line from the runner's log (pod creation to the result in hand).
func executorDuration(runnerLog string) (time.Duration, bool) {
	for _, l := range strings.Split(runnerLog, "\n") {
		if !strings.Contains(l, `msg="job finished"`) || !strings.Contains(l, "executor=kubernetes") {
			continue
		}
		_, v, ok := strings.Cut(l, " duration=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, " ")
		if d, err := time.ParseDuration(v); err == nil {
			return d, true
		}
	}
	return 0, false
}

// checkBigLog streams over the trace: every data line (seven digits and a
// space) must be the next expected one, each of the n exactly once.
func checkBigLog(tr []byte, n int) error {
	next := 1
	want := make([]byte, 0, bigLogLineLen)
	for off := 0; off < len(tr); {
		end := bytes.IndexByte(tr[off:], '\n')
		var line []byte
		if end < 0 {
			line = tr[off:]
		} else {
			line = tr[off : off+end+1]
		}
		at := off
		off += len(line)
		if !isBigLogLine(line) {
			continue
		}
		if next > n {
			return fmt.Errorf("data line after the last one at byte %d: %q", at, line)
		}
		want = fmt.Appendf(want[:0], "%07d %s\n", next, bigLogPad)
		if !bytes.Equal(line, want) {
			return fmt.Errorf("at byte %d: got %q, want line %d %q", at, line, next, want)
		}
		next++
	}
	if next != n+1 {
		return fmt.Errorf("%d of %d data lines in the log", next-1, n)
	}
	return nil
}

// The checker itself, without a cluster: it must catch a lost, repeated,
// swapped or damaged line.
func TestCheckBigLog(t *testing.T) {
	var good bytes.Buffer
	good.WriteString("\x1b[32;1m$ seq -w 1 5 | sed ...\x1b[0;m\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&good, "%07d %s\n", i, bigLogPad)
	}
	good.WriteString("biglog-done\n")
	line := func(i int) string { return fmt.Sprintf("%07d %s\n", i, bigLogPad) }
	g := good.String()
	for _, c := range []struct {
		name, trace string
		ok          bool
	}{
		{"intact", g, true},
		{"lost", strings.Replace(g, line(3), "", 1), false},
		{"lost last", strings.Replace(g, line(5), "", 1), false},
		{"repeated", strings.Replace(g, line(3), line(3)+line(3), 1), false},
		{"swapped", strings.Replace(g, line(2)+line(3), line(3)+line(2), 1), false},
		{"damaged", strings.Replace(g, line(4), line(4)[:50]+"x"+line(4)[51:], 1), false},
		{"cut", strings.Replace(g, line(4), line(4)[:60], 1), false},
		{"extra", g + line(6), false},
	} {
		if err := checkBigLog([]byte(c.trace), 5); (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func isBigLogLine(l []byte) bool {
	if len(l) < 8 || l[7] != ' ' {
		return false
	}
	for _, c := range l[:7] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// procPeak reads a live process's peak RSS (VmHWM) and its CPU time so far.
func procPeak(pid int) (rss, cpu string) {
	rss, cpu = "unknown", "unknown"
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				rss = strings.TrimSpace(v)
			}
		}
	}
	// Fields 14 and 15 of /proc/PID/stat (after the parenthesised name)
	// are utime and stime in clock ticks (100 per second on Linux).
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 13 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = fmt.Sprintf("%.1f s user + %.1f s system", float64(u)/100, float64(s)/100)
			}
		}
	}
	return rss, cpu
}
