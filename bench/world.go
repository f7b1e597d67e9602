package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

const benchProject = "bench/demo"

// world is one scenario's coordinator, in the bench process, with one
// project and one runner token.
type world struct {
	dir   string
	coord *coordinator.Server
	token string
}

// newWorld starts a coordinator listening on listen (host:port) with a
// project whose .gitlab-ci.yml is ci. Every scenario gets its own, so no
// state (queue, recorded requests, runner managers) leaks between them.
func newWorld(ctx context.Context, dir, listen, ci string, opts coordinator.Options) (*world, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	repo := filepath.Join(dir, "repo")
	if err := gitRun("", "init", "-q", "-b", "main", repo); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
		return nil, err
	}
	if err := gitRun(repo, "add", "-A"); err != nil {
		return nil, err
	}
	if err := gitRun(repo, "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "ci"); err != nil {
		return nil, err
	}
	opts.ListenAddr = listen
	opts.DataDir = filepath.Join(dir, "coordinator")
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	coord, err := coordinator.New(opts)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	if err := coord.Start(ctx); err != nil {
		return nil, fmt.Errorf("start coordinator on %s: %w", listen, err)
	}
	if _, err := coord.AddProject(benchProject, repo); err != nil {
		coord.Close()
		return nil, fmt.Errorf("add project: %w", err)
	}
	_, token := coord.CreateRunner(coordinator.RunnerOptions{Description: "bench", RunUntagged: true})
	return &world{dir: dir, coord: coord, token: token}, nil
}

func (w *world) Close() { w.coord.Close() }

// pipeline creates a pipeline (ci replaces the committed .gitlab-ci.yml
// when not empty).
func (w *world) pipeline(ci string) (*coordinator.Pipeline, error) {
	o := coordinator.PipelineOptions{}
	if ci != "" {
		o.CIConfig = []byte(ci)
	}
	pl, err := w.coord.CreatePipelineWith(benchProject, o)
	if err != nil {
		return nil, fmt.Errorf("create pipeline: %w", err)
	}
	return pl, nil
}

// wait waits for a pipeline to end; every job must have succeeded.
func (w *world) wait(ctx context.Context, id int64, timeout time.Duration) (coordinator.PipelineView, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := w.coord.WaitPipeline(ctx, id)
	if err != nil {
		return v, fmt.Errorf("pipeline %d: %w (status %q)", id, err, v.Status)
	}
	for _, j := range v.Jobs {
		if j.Status != coordinator.StatusSuccess {
			return v, fmt.Errorf("job %d (%s) %s (%s); end of its log:\n%s", j.ID, j.Name, j.Status, j.FailureReason, tail(w.coord.Trace(j.ID), 1500))
		}
	}
	return v, nil
}

// waitHeld waits until the runner holds a long-polled jobs/request, so a
// job queued now is picked up through long polling.
func (w *world) waitHeld(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for w.coord.HeldRequests() == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the runner held no jobs/request within %v (is it running and registered?)", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func gitRun(dir string, args ...string) error {
	c := exec.Command("git", args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("git %v: %v\n%s", args, err, out)
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Shell job stamps: the script prints "BENCH_T0 <ns>" and "BENCH_T1 <ns>"
// (GNU date +%s%N) around its own work.
var shellStampRE = regexp.MustCompile(`(?m)^BENCH_T([01]) (\d{10,})\s*$`)

// shellStamps returns the two stamps of a shell job's log.
func shellStamps(log []byte) (t0, t1 time.Time, err error) {
	var got [2]time.Time
	for _, m := range shellStampRE.FindAllSubmatch(log, -1) {
		ns, _ := strconv.ParseInt(string(m[2]), 10, 64)
		i := m[1][0] - '0'
		if got[i].IsZero() {
			got[i] = time.Unix(0, ns)
		}
	}
	if got[0].IsZero() || got[1].IsZero() {
		return got[0], got[1], fmt.Errorf("the job log lacks the BENCH_T0/BENCH_T1 stamps")
	}
	return got[0], got[1], nil
}
