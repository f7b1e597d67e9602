package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

const (
	scPickup    = "1 pickup"
	scShell     = "2 shell overhead"
	scTrace     = "4 trace"
	scFootprint = "5 footprint"
)

const msDist = "ms p50 / p95"

// shellStampCI is a job that stamps the wall clock around `true`.
const shellStampScript = `  script:
    - echo "BENCH_T0 $(date +%s%N)"
    - "true"
    - echo "BENCH_T1 $(date +%s%N)"
`

// runShellRunner starts the runner with a shell config for w and waits
// until it long-polls; then one unmeasured job warms it (first clone,
// first request).
func (b *bench) runShellRunner(ctx context.Context, spec runnerSpec, w *world, concurrent int, warm bool, extra ...string) (*runnerProc, error) {
	rdir := filepath.Join(w.dir, "runner-"+spec.Label)
	p, err := startRunner(spec, rdir, shellConfig(w, concurrent, rdir, strings.Join(extra, "")))
	if err != nil {
		return nil, err
	}
	if err := b.waitHeld(ctx, w, p); err != nil {
		p.Stop()
		return nil, err
	}
	if warm {
		pl, err := w.pipeline("warm:\n" + shellStampScript)
		if err == nil {
			_, err = w.wait(ctx, pl.ID, 2*time.Minute)
		}
		if err != nil {
			p.Stop()
			return nil, fmt.Errorf("warm-up job: %w", err)
		}
	}
	return p, nil
}

func (b *bench) waitHeld(ctx context.Context, w *world, p *runnerProc) error {
	if err := w.waitHeld(ctx, 60*time.Second); err != nil {
		if e := p.exited(); e != nil {
			return e
		}
		return fmt.Errorf("%w; end of the runner's log:\n%s", err, p.logTail(2000))
	}
	return nil
}

// pickup: a job queued while the runner's jobs/request is held by long
// polling; latency is the coordinator's queued → handed to the runner
// (the moment it assigns the job in the answer to jobs/request).
func (b *bench) pickup(ctx context.Context, spec runnerSpec) error {
	// No clone: what is measured ends when the job is handed over, and
	// the loop needs the runner back in its long poll soon after.
	ci := "j:\n  variables: {GIT_STRATEGY: none}\n  script: [\"true\"]\n"
	w, err := newWorld(ctx, b.tmpDir("pickup-"+spec.Label), b.listenLocal, ci, coordinator.Options{})
	if err != nil {
		return err
	}
	defer w.Close()
	// check_interval = 1: after each job the runner's first request
	// is answered at once (the queue changed) and it waits check_interval
	// before the request that is held; 1 s instead of 3 s makes the 100
	// samples take less time and changes nothing that is measured.
	p, err := b.runShellRunner(ctx, spec, w, 1, true, "check_interval = 1\n")
	if err != nil {
		return err
	}
	defer p.Stop()
	var lat []time.Duration
	for range b.n(100) {
		if err := b.waitHeld(ctx, w, p); err != nil {
			return err
		}
		pl, err := w.pipeline("")
		if err != nil {
			return err
		}
		v, err := w.wait(ctx, pl.ID, time.Minute)
		if err != nil {
			return err
		}
		lat = append(lat, v.Jobs[0].StartedAt.Sub(v.Jobs[0].QueuedAt))
	}
	b.rep.Add(spec.Label, scPickup, "job queued -> handed to the runner (long poll held)", msDist, &Target{Below: 50}, DistMS(lat))
	return nil
}

// shellOverhead: n `true` jobs queued at once in one pipeline, at the
// given concurrency.
func (b *bench) shellOverhead(ctx context.Context, spec runnerSpec, concurrent int) error {
	n := b.n(100)
	var ci strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&ci, "j%03d:\n%s", i, shellStampScript)
	}
	w, err := newWorld(ctx, b.tmpDir(fmt.Sprintf("shell%d-%s", concurrent, spec.Label)), b.listenLocal, ci.String(), coordinator.Options{})
	if err != nil {
		return err
	}
	defer w.Close()
	p, err := b.runShellRunner(ctx, spec, w, concurrent, true)
	if err != nil {
		return err
	}
	defer p.Stop()
	pl, err := w.pipeline("")
	if err != nil {
		return err
	}
	v, err := w.wait(ctx, pl.ID, 5*time.Minute)
	if err != nil {
		return err
	}
	var over, script, wall []time.Duration
	var first, last time.Time
	for _, j := range v.Jobs {
		t0, t1, err := shellStamps(w.coord.Trace(j.ID))
		if err != nil {
			return fmt.Errorf("job %d: %w", j.ID, err)
		}
		d := j.FinishedAt.Sub(j.StartedAt)
		wall = append(wall, d)
		script = append(script, t1.Sub(t0))
		over = append(over, d-t1.Sub(t0))
		if first.IsZero() || j.QueuedAt.Before(first) {
			first = j.QueuedAt
		}
		if j.FinishedAt.After(last) {
			last = j.FinishedAt
		}
	}
	sc := fmt.Sprintf("%s, concurrent=%d", scShell, concurrent)
	b.rep.Add(spec.Label, sc, fmt.Sprintf("overhead per job: (handed -> final state) - script, %d jobs", n), msDist, nil, DistMS(over))
	b.rep.Add(spec.Label, sc, "wall per job: handed -> final state accepted", msDist, nil, DistMS(wall))
	b.rep.Add(spec.Label, sc, "script time (stamps around `true`)", msDist, nil, DistMS(script))
	b.rep.Add(spec.Label, sc, "throughput: queued -> last final state", "jobs/s", nil, Val(float64(n)/last.Sub(first).Seconds()))
	return nil
}

// Trace: 200 MiB of 100-byte lines, each holding both masked values.
const (
	traceLines   = 2097152
	traceLineLen = 100
	secretA      = "bench-secret-AAAA-0001"
	secretB      = "bench-secret-BBBB-0002"
)

func traceCI(lines int) string {
	// print adds the newline; the pad fills the line to traceLineLen.
	// awk, not `yes | head`: yes would die of SIGPIPE and fail the job
	// under pipefail.
	pad := strings.Repeat("x", traceLineLen-1-len(secretA)-len(secretB)-2)
	return fmt.Sprintf(`big:
  script:
    - >-
      awk -v n=%d 'BEGIN { l = ENVIRON["BENCH_SECRET_A"] " %s " ENVIRON["BENCH_SECRET_B"]; for (i = 0; i < n; i++) print l }'
    - echo bench-done
`, lines, pad)
}

// trace: one job printing 200 MiB through the runner.
func (b *bench) trace(ctx context.Context, spec runnerSpec) error {
	lines := traceLines
	if b.opts.quick {
		lines /= 8
	}
	printed := int64(lines) * traceLineLen
	w, err := newWorld(ctx, b.tmpDir("trace-"+spec.Label), b.listenLocal, traceCI(lines), coordinator.Options{MaxTraceSize: 1 << 30})
	if err != nil {
		return err
	}
	defer w.Close()
	for k, v := range map[string]string{"BENCH_SECRET_A": secretA, "BENCH_SECRET_B": secretB} {
		if err := w.coord.SetProjectVariable(benchProject, coordinator.ProjectVariable{Key: k, Value: v, Masked: true}); err != nil {
			return err
		}
	}
	// output_limit (KiB): GitLab Runner's default, 4 MiB, would cut the log.
	p, err := b.runShellRunner(ctx, spec, w, 1, false, "  output_limit = 1048576\n")
	if err != nil {
		return err
	}
	defer p.Stop()
	idle, _, err := memKiB(p.Pid())
	if err != nil {
		return err
	}
	pl, err := w.pipeline("")
	if err != nil {
		return err
	}
	v, err := w.wait(ctx, pl.ID, 8*time.Minute)
	if err != nil {
		return err
	}
	_, hwm, err := memKiB(p.Pid())
	if err != nil {
		return err
	}
	j := v.Jobs[0]
	secs := j.FinishedAt.Sub(j.StartedAt).Seconds()
	label := fmt.Sprintf("%d MiB printed", printed>>20)
	b.rep.Add(spec.Label, scTrace, "end to end: printed bytes / (handed -> final state), "+label, "MB/s", nil, Val(float64(printed)/1e6/secs))
	b.rep.Add(spec.Label, scTrace, "runner RSS before the job", "MiB", nil, Val(float64(idle)/1024))
	b.rep.Add(spec.Label, scTrace, "runner peak RSS (VmHWM) after the job", "MiB", nil, Val(float64(hwm)/1024))
	crc := "match"
	if j.Checksum == "" || j.Checksum != j.TraceChecksum || j.Bytesize != j.TraceSize {
		crc = fmt.Sprintf("MISMATCH: runner sent %q/%d B, coordinator holds %s/%d B", j.Checksum, j.Bytesize, j.TraceChecksum, j.TraceSize)
	}
	b.rep.Add(spec.Label, scTrace, "CRC sent by the runner vs trace stored", "", nil, Text(crc))
	tr := w.coord.Trace(j.ID)
	masked := "ok"
	switch {
	case bytes.Contains(tr, []byte(secretA)) || bytes.Contains(tr, []byte(secretB)):
		masked = "LEAKED: a masked value is in the trace"
	case bytes.Count(tr, []byte("[MASKED]")) < 2*lines:
		masked = fmt.Sprintf("%d [MASKED] for %d values printed", bytes.Count(tr, []byte("[MASKED]")), 2*lines)
	case !bytes.Contains(tr, []byte("\nbench-done\n")):
		masked = "the log misses its end"
	}
	b.rep.Add(spec.Label, scTrace, "masking (both values, every line) and log complete", "", nil, Text(masked))
	b.rep.Add(spec.Label, scTrace, "trace stored by the coordinator", "MB", nil, Val(float64(j.TraceSize)/1e6))
	return nil
}

// footprint: the runner's resident memory idle, then with 50 shell jobs
// waiting in `sleep` at once.
func (b *bench) footprint(ctx context.Context, spec runnerSpec) error {
	n := 50
	if b.opts.quick {
		n = 10
	}
	dir := b.tmpDir("footprint-" + spec.Label)
	marks := filepath.Join(dir, "marks")
	gate := filepath.Join(dir, "gate")
	if err := os.MkdirAll(marks, 0o755); err != nil {
		return err
	}
	var ci strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&ci, "s%02d:\n  script:\n    - touch %s/$CI_JOB_ID\n    - while [ ! -e %s ]; do sleep 0.5; done\n", i, marks, gate)
	}
	// Polls answer within 2 s so "a few polls" take seconds, not minutes
	// (GitLab holds them 50 s); it changes how often the runner asks,
	// nothing it holds.
	w, err := newWorld(ctx, dir, b.listenLocal, ci.String(), coordinator.Options{LongPollTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer w.Close()
	p, err := b.runShellRunner(ctx, spec, w, n, false)
	if err != nil {
		return err
	}
	defer p.Stop()
	for len(w.coord.RequestsTo(coordinator.EndpointRequestJob)) < 4 {
		if err := p.exited(); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	idle, _, err := memKiB(p.Pid())
	if err != nil {
		return err
	}
	pl, err := w.pipeline("")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		ents, _ := os.ReadDir(marks)
		if len(ents) >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d jobs started their script within 4 minutes", len(ents), n)
		}
		if err := p.exited(); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Let every job settle into its loop, then sample for 3 s.
	var busy int64
	for range 6 {
		time.Sleep(500 * time.Millisecond)
		rss, _, err := memKiB(p.Pid())
		if err != nil {
			return err
		}
		busy = max(busy, rss)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		return err
	}
	if _, err := w.wait(ctx, pl.ID, 3*time.Minute); err != nil {
		return err
	}
	_, hwm, err := memKiB(p.Pid())
	if err != nil {
		return err
	}
	b.rep.Add(spec.Label, scFootprint, "RSS idle (registered, after 4 job requests)", "MiB", &Target{Below: 30}, Val(float64(idle)/1024))
	b.rep.Add(spec.Label, scFootprint, fmt.Sprintf("RSS with %d shell jobs running (max of 6 samples)", n), "MiB", &Target{Below: 100}, Val(float64(busy)/1024))
	b.rep.Add(spec.Label, scFootprint, fmt.Sprintf("peak RSS (VmHWM) over start, %d jobs and their end", n), "MiB", nil, Val(float64(hwm)/1024))
	return nil
}
