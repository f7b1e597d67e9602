package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/podrunner/podrunner/internal/adjtimex"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
)

const scManagers = "7 managers on one token"

// managerCount and managerConcurrent shape scenario 7: the production
// layout of the chart with replicas 3.
const (
	managerCount      = 3
	managerConcurrent = 4
)

// kubeManagers runs scenario 7 for one runner: managerCount processes with
// the same token (each its own config directory, so its own system_id),
// concurrent = managerConcurrent each, and m short jobs queued at once;
// then the same with one manager killed (SIGKILL) once a third of the jobs
// have ended, counting what GitLab lost.
func (b *bench) kubeManagers(ctx context.Context, spec runnerSpec) error {
	k := b.kube
	k.token = k.tokens["other-runner"]
	if spec.Label == labelPodrunner {
		k.token = k.tokens["podrunner"]
	}
	m := b.n(60)
	var ci strings.Builder
	for i := 1; i <= m; i++ {
		fmt.Fprintf(&ci, "m-%02d:\n%s", i, kubeScript)
	}
	sc := fmt.Sprintf("%s, %d × concurrent=%d, %d jobs at once", scManagers, managerCount, managerConcurrent, m)
	for _, kill := range []bool{false, true} {
		name := "managers"
		if kill {
			name = "managers-kill"
		}
		w, err := newWorld(ctx, b.tmpDir(name+"-"+spec.Label), k.listen(), ci.String(), coordinator.Options{})
		if err != nil {
			return err
		}
		res, err := b.runManagers(ctx, w, spec, kill)
		w.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !kill {
			b.rep.Add(spec.Label, sc, "throughput: first queued -> last final state", "jobs/min", nil, Val(res.rate))
			b.rep.Add(spec.Label, sc, "handed -> final state", msDist, nil, DistMS(res.whole))
			b.rep.Add(spec.Label, sc, "jobs per manager", "", nil, Text(res.share))
			if res.apiJobs > 0 {
				b.addAPIRows(spec.Label, fmt.Sprintf("%d managers, %d jobs at once", managerCount, res.apiJobs), res.api, res.apiJobs)
			}
			continue
		}
		ksc := sc + ", one manager killed (SIGKILL) after a third"
		b.rep.Add(spec.Label, ksc, "jobs lost (not success)", "", &Target{Below: 0.5}, Val(float64(res.lost)))
		b.rep.Add(spec.Label, ksc, "traces truncated (checksum or lines)", "", &Target{Below: 0.5}, Val(float64(res.truncated)))
		b.rep.Add(spec.Label, ksc, "jobs without exactly one final update sent", "", &Target{Below: 0.5}, Val(float64(res.notOnce)))
		b.rep.Add(spec.Label, ksc, "jobs of the killed manager (taken over)", "", nil, Val(float64(res.orphaned)))
		b.rep.Add(spec.Label, ksc, "kill -> last final state of its jobs", "s", nil, Val(res.takeover.Seconds()))
		b.rep.Add(spec.Label, ksc, "jobs per manager", "", nil, Text(res.share))
	}
	return nil
}

type managersResult struct {
	rate                     float64
	whole                    []time.Duration
	share                    string
	api                      reqCounts
	apiJobs                  int
	lost, truncated, notOnce int
	orphaned                 int
	takeover                 time.Duration
}

func (b *bench) runManagers(ctx context.Context, w *world, spec runnerSpec, kill bool) (*managersResult, error) {
	k := b.kube
	var procs []*runnerProc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	for i := range managerCount {
		dir := filepath.Join(w.dir, fmt.Sprintf("manager-%d-%s", i, spec.Label))
		// One host, so one machine id: without a state file of its own
		// each process would derive the same system_id (GitLab Runner
		// and podrunner alike) and be one manager, not three.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, config.SystemIDFile), fmt.Appendf(nil, "r_benchmanage%d", i), 0o600); err != nil {
			return nil, err
		}
		p, err := startRunner(spec, dir, kubeConfig(w, managerConcurrent, k, spec))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	// Every manager holds a long poll: all are registered and idle.
	deadline := time.Now().Add(time.Minute)
	for w.coord.HeldRequests() < managerCount {
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d managers hold a jobs/request after a minute", w.coord.HeldRequests(), managerCount)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before, berr := scrapeRequests(ctx, k.cs)
	pl, err := w.pipeline("")
	if err != nil {
		return nil, err
	}
	res := &managersResult{}
	var killed time.Time
	var victim string // system_id of the killed manager
	if kill {
		// Once a third of the jobs have ended, kill the manager that runs
		// the most jobs right now.
		for {
			v, ok := w.coord.Pipeline(pl.ID)
			if !ok {
				return nil, fmt.Errorf("pipeline %d vanished", pl.ID)
			}
			ended, running := 0, map[string]int{}
			for _, j := range v.Jobs {
				switch j.Status {
				case coordinator.StatusSuccess, coordinator.StatusFailed, coordinator.StatusCanceled:
					ended++
				case coordinator.StatusRunning:
					running[j.RunnerManager]++
				}
			}
			if ended >= len(v.Jobs)/3 {
				for id, n := range running {
					if victim == "" || n > running[victim] {
						victim = id
					}
				}
				break
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			time.Sleep(20 * time.Millisecond)
		}
		p, err := b.managerOf(procs, victim)
		if err != nil {
			return nil, err
		}
		killed = time.Now()
		if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("kill manager %s: %w", victim, err)
		}
	}
	var v coordinator.PipelineView
	if !kill {
		if v, err = w.wait(ctx, pl.ID, 10*time.Minute); err != nil {
			return nil, err
		}
	} else {
		// A job handed to the manager in the instant before the kill, with
		// no pod yet, is in nobody's hands: GitLab ends it only at its
		// stuck-job timeout. Such jobs are counted as lost, not waited for.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		v, err = w.coord.WaitPipeline(wctx, pl.ID)
		cancel()
		if err != nil {
			for _, j := range v.Jobs {
				if j.Status == coordinator.StatusRunning || j.Status == coordinator.StatusPending {
					b.note("%s, managers-kill: job %d still %s in GitLab 5 min after the kill (picked up by %s, the killed manager: %v); log:\n%s",
						spec.Label, j.ID, j.Status, j.RunnerManager, j.RunnerManager == victim, tail(w.coord.Trace(j.ID), 400))
				}
			}
		}
	}
	after, aerr := scrapeRequests(ctx, k.cs)
	if berr == nil && aerr == nil {
		res.api, res.apiJobs = after.sub(before), len(v.Jobs)
	}

	var first, last time.Time
	perManager := map[string]int{}
	for _, j := range v.Jobs {
		perManager[j.RunnerManager]++
		if j.Status != coordinator.StatusSuccess {
			res.lost++
		}
		tr := w.coord.Trace(j.ID)
		if j.Checksum == "" || j.Checksum != j.TraceChecksum || bytes.Count(tr, []byte("\nhi\n")) != 1 || len(adjtimex.Stamps(tr)) != 2 {
			res.truncated++
		}
		if finalUpdates(w.coord, j.ID) != 1 {
			res.notOnce++
		}
		if first.IsZero() || j.QueuedAt.Before(first) {
			first = j.QueuedAt
		}
		if j.FinishedAt.After(last) {
			last = j.FinishedAt
		}
		if !j.FinishedAt.IsZero() {
			res.whole = append(res.whole, j.FinishedAt.Sub(j.StartedAt))
		}
		if kill && b.ranOn(j, victim, killed) {
			res.orphaned++
			if d := j.FinishedAt.Sub(killed); d > res.takeover {
				res.takeover = d
			}
		}
	}
	if d := last.Sub(first); d > 0 {
		res.rate = float64(len(v.Jobs)) / d.Minutes()
	}
	var shares []string
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for id := range perManager {
			if !yield(id) {
				return
			}
		}
	}) {
		shares = append(shares, fmt.Sprint(perManager[id]))
	}
	res.share = strings.Join(shares, " / ")
	return res, nil
}

// ranOn reports whether job j was picked up by manager systemID and was
// still running when it was killed.
func (b *bench) ranOn(j coordinator.JobView, systemID string, killed time.Time) bool {
	return j.RunnerManager == systemID && j.StartedAt.Before(killed) && j.FinishedAt.After(killed)
}

// managerOf finds the process of systemID: GitLab Runner and podrunner
// both keep it in .runner_system_id next to config.toml.
func (b *bench) managerOf(procs []*runnerProc, systemID string) (*runnerProc, error) {
	for _, p := range procs {
		if id, err := os.ReadFile(filepath.Join(p.dir, config.SystemIDFile)); err == nil && strings.TrimSpace(string(id)) == systemID {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no manager has system id %q", systemID)
}

// finalUpdates counts the final updates (state success or failed) sent for
// the job, whatever GitLab answered.
func finalUpdates(coord *coordinator.Server, id int64) int {
	n := 0
	path := fmt.Sprintf("/api/v4/jobs/%d", id)
	for _, r := range coord.RequestsTo(coordinator.EndpointUpdateJob) {
		if r.Path != path {
			continue
		}
		if bytes.Contains(r.BodyPrefix, []byte(`"state":"success"`)) || bytes.Contains(r.BodyPrefix, []byte(`"state":"failed"`)) {
			n++
		}
	}
	return n
}
