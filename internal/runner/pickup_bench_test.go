package runner

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// BenchmarkPickupLatency measures how long a job queued in the coordinator
// takes to reach the executor through long polling: pipeline created →
// executor.Run called. It reports p50/p95 in ms.
func BenchmarkPickupLatency(b *testing.B) {
	if _, err := exec.LookPath("git"); err != nil {
		b.Skip("git not installed")
	}
	dir := b.TempDir()
	repo := filepath.Join(dir, "repo")
	for _, args := range [][]string{
		{"init", "-q", "-b", "main", repo},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte("j:\n  script: [echo]\n"), 0o644)
	for _, args := range [][]string{{"add", "-A"}, {"-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "ci"}} {
		c := exec.Command("git", args...)
		c.Dir = repo
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	coord, err := coordinator.New(coordinator.Options{DataDir: filepath.Join(dir, "coord"), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer coord.Close()
	if _, err := coord.AddProject("g/p", repo); err != nil {
		b.Fatal(err)
	}
	_, token := coord.CreateRunner(coordinator.RunnerOptions{RunUntagged: true})
	client, err := gitlab.NewClient(gitlab.Credentials{URL: coord.URL(), Token: token}, gitlab.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	received := make(chan time.Time, 1)
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		received <- time.Now()
		return executor.Result{Success: true}, nil
	}}
	m, err := New(Settings{Concurrent: 1, Runners: []*Runner{{Name: "bench", ShortToken: "bench", Key: "k", API: client, Executor: ex}}},
		Options{Logger: quiet, TraceDir: dir, SystemID: "s_000000000000"})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	defer func() { m.Stop(); <-done }()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// Wait until the runner's request is held by the long poll, and
		// the previous job has ended.
		for coord.HeldRequests() == 0 {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
		pl, err := coord.CreatePipeline("g/p", "main")
		if err != nil {
			b.Fatal(err)
		}
		got := <-received
		// From the moment the job entered the queue (pipeline creation
		// itself, a git fetch in the coordinator, is not the runner's).
		jv, _ := coord.Job(pl.Jobs["j"])
		lat = append(lat, got.Sub(jv.QueuedAt))
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		coord.WaitPipeline(ctx, pl.ID)
		cancel()
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1000, "p95-ms")
}
