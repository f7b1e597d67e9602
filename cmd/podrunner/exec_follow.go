package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/execview"
)

// followInterval is how often exec looks at the coordinator: often enough
// for a live view, rarely enough to cost nothing.
const followInterval = 150 * time.Millisecond

// pipelineSource is what exec follows a pipeline with (the coordinator).
type pipelineSource interface {
	Pipeline(id int64) (coordinator.PipelineView, bool)
	Trace(id int64) []byte
	Play(id int64) error
}

// follower feeds the view from the coordinator until the pipeline ends.
type follower struct {
	coord  pipelineSource
	id     int64
	cfg    *ciyaml.Config
	view   execview.View
	logs   *logStore
	play   []string // --job names: manual ones are played
	errOut io.Writer

	sent   map[int64]int  // job id → log bytes handed to the view
	played map[int64]bool // manual jobs played
}

// run follows the pipeline and returns its final snapshot; on ctx's end
// it returns what it has with an error.
func (f *follower) run(ctx context.Context) (execview.Pipeline, error) {
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		p, again, err := f.step()
		if err != nil {
			return p, err
		}
		if again {
			continue
		}
		if execview.IsPipelineFinal(p.Status) {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("interrupted: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// step looks at the pipeline once: it plays named manual jobs (again:
// look once more at once), hands new log bytes and the snapshot to the
// view, and saves the logs of finished jobs.
func (f *follower) step() (p execview.Pipeline, again bool, err error) {
	if f.sent == nil {
		f.sent, f.played = map[int64]int{}, map[int64]bool{}
	}
	v, ok := f.coord.Pipeline(f.id)
	if !ok {
		return execview.Pipeline{}, false, fmt.Errorf("pipeline %d vanished from the coordinator", f.id)
	}
	p = f.snapshot(v)
	if f.playNamed(p) {
		return p, true, nil // the pipeline is running once more
	}
	// The logs of jobs that ended, then the states, then the logs of
	// running jobs: a job's lines never precede the end of a job it needs.
	logs := func(final bool) {
		for _, j := range p.Jobs {
			if j.Started.IsZero() || j.Final() != final {
				continue
			}
			tr := f.coord.Trace(j.ID)
			if n := f.sent[j.ID]; len(tr) > n {
				f.view.Log(j, tr[n:])
				f.sent[j.ID] = len(tr)
			}
			if final {
				if err := f.logs.save(j, tr); err != nil {
					fmt.Fprintf(f.errOut, "WARNING: save the log of job %s: %v\n", j.Label(), err)
				}
			}
		}
	}
	logs(true)
	f.view.Update(p, time.Now())
	logs(false)
	return p, false, nil
}

// playNamed plays the manual jobs named with --job (the coordinator plays
// them itself when it knows PipelineOptions.Jobs; then none is manual).
func (f *follower) playNamed(p execview.Pipeline) bool {
	played := false
	for _, j := range p.Jobs {
		if j.Status != execview.StatusManual || f.played[j.ID] || !f.named(j.Name) {
			continue
		}
		f.played[j.ID] = true
		if err := f.coord.Play(j.ID); err != nil {
			fmt.Fprintf(f.errOut, "WARNING: play manual job %s: %v\n", j.Name, err)
			continue
		}
		played = true
	}
	return played
}

func (f *follower) named(job string) bool {
	if slices.Contains(f.play, job) {
		return true
	}
	if d := f.cfg.Job(job); d != nil && d.ParallelOf != "" {
		return slices.Contains(f.play, d.ParallelOf)
	}
	return false
}

// snapshot turns the coordinator's view into the view's: stages from the
// CI file, and the attempts of retried jobs (a retry is a new job of the
// same name) numbered.
func (f *follower) snapshot(v coordinator.PipelineView) execview.Pipeline {
	p := execview.Pipeline{ID: v.ID, Status: v.Status, Stages: f.cfg.Stages}
	jobs := slices.Clone(v.Jobs)
	// The first attempts in file order, each followed by its retries.
	first := map[string]int{}
	for i, j := range jobs {
		if _, ok := first[j.Name]; !ok {
			first[j.Name] = i
		}
	}
	slices.SortStableFunc(jobs, func(a, b coordinator.JobView) int {
		if d := first[a.Name] - first[b.Name]; d != 0 {
			return d
		}
		return int(a.ID - b.ID)
	})
	attempts := map[string]int{}
	for _, j := range jobs {
		attempts[j.Name]++
	}
	seen := map[string]int{}
	for _, j := range jobs {
		seen[j.Name]++
		// allow_failure as the coordinator evaluated it (rules, and
		// exit_codes against the real exit code).
		p.Jobs = append(p.Jobs, execview.Job{
			ID: j.ID, Name: j.Name, Stage: j.Stage, Status: j.Status,
			Attempt: seen[j.Name], Retried: j.Retried || seen[j.Name] < attempts[j.Name],
			AllowFailure: j.AllowFailure, FailureReason: string(j.FailureReason), ExitCode: j.ExitCode,
			Started: j.StartedAt, Finished: j.FinishedAt, ScheduledAt: j.ScheduledAt,
		})
	}
	return p
}

// logStore saves job logs, one directory per run: <base>/<n>/<job>.log
// (plain text) and <job>.ansi.log (as the runner sent it, colours kept:
// view it with `less -R`). <base>/latest points at the newest run.
type logStore struct {
	dir   string
	saved map[int64]bool
	names map[string]int64 // file name → job id, against collisions
}

func newLogStore(base string) (*logStore, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, fmt.Errorf("logs directory: %w", err)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, fmt.Errorf("logs directory: %w", err)
	}
	n := 0
	for _, e := range entries {
		if k, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() {
			n = max(n, k)
		}
	}
	// Another exec may run in the same directory: take the next free number.
	for {
		n++
		dir := filepath.Join(base, strconv.Itoa(n))
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("logs directory: %w", err)
		}
		latest := filepath.Join(base, "latest")
		os.Remove(latest)
		os.Symlink(strconv.Itoa(n), latest) // a convenience: no error if the filesystem has no symlinks
		return &logStore{dir: dir, saved: map[int64]bool{}, names: map[string]int64{}}, nil
	}
}

// save writes a finished job's log once.
func (s *logStore) save(j execview.Job, trace []byte) error {
	if s == nil || s.saved[j.ID] {
		return nil
	}
	s.saved[j.ID] = true
	name := logFileName(j)
	if id, taken := s.names[name]; taken && id != j.ID {
		name += "-" + strconv.FormatInt(j.ID, 10)
	}
	s.names[name] = j.ID
	if err := os.WriteFile(filepath.Join(s.dir, name+".log"), execview.Clean(trace), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, name+".ansi.log"), trace, 0o644)
}

const maxLogBase = 200

// logFileName is a file name for the job: characters a path cannot hold
// (parallel jobs are named "test 1/3") become "_"; retries get
// ".attempt<N>".
func logFileName(j execview.Job) string {
	var b strings.Builder
	for _, r := range j.Name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := strings.TrimLeft(b.String(), ".")
	if name == "" {
		name = "job"
	}
	// File names hold 255 bytes; long matrix names are cut and keep a hash
	// of the whole name, leaving room for the suffixes added here and by
	// save ("-<id>", ".ansi.log").
	if len(name) > maxLogBase {
		sum := sha256.Sum256([]byte(j.Name))
		name = name[:maxLogBase-11] + "-" + hex.EncodeToString(sum[:5])
	}
	if j.Attempt > 1 {
		name += ".attempt" + strconv.Itoa(j.Attempt)
	}
	return name
}
