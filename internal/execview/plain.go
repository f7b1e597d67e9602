package execview

import (
	"bytes"
	"fmt"
	"io"
	"time"
)

// Plain prints one line per job state change ("job build: running",
// "job build: success (1.2s)") and, unless Quiet, every job log line
// prefixed with its job ("[build] $ make"), ANSI removed: output meant
// for CI logs and grep.
type Plain struct {
	w io.Writer
	// Quiet leaves the job logs out (state lines only).
	Quiet bool

	seen    map[int64]string // job id → last status printed
	partial map[int64][]byte // job id → log bytes after the last newline
	jobs    map[int64]Job    // job id → job, for flushing at Close
	status  string           // pipeline status printed
}

// NewPlain returns a plain view writing to w.
func NewPlain(w io.Writer) *Plain {
	return &Plain{w: w, seen: map[int64]string{}, partial: map[int64][]byte{}, jobs: map[int64]Job{}}
}

// Log prints the complete lines of data, prefixed with the job's label;
// an unfinished last line waits for the rest (or for the job's end).
func (p *Plain) Log(j Job, data []byte) {
	if len(data) == 0 {
		return
	}
	p.running(j)
	if p.Quiet {
		return
	}
	p.jobs[j.ID] = j
	buf := append(p.partial[j.ID], data...)
	last := bytes.LastIndexByte(buf, '\n')
	if last < 0 {
		p.partial[j.ID] = buf
		return
	}
	p.writeLines(j, buf[:last+1])
	p.partial[j.ID] = append([]byte(nil), buf[last+1:]...)
}

func (p *Plain) writeLines(j Job, b []byte) {
	text := Clean(b)
	var out bytes.Buffer
	for len(text) > 0 {
		line, rest, _ := bytes.Cut(text, []byte{'\n'})
		fmt.Fprintf(&out, "[%s] %s\n", j.Label(), line)
		text = rest
	}
	p.w.Write(out.Bytes())
}

// Update prints a line for every job whose status changed, then the
// pipeline's status once it is final.
// Jobs that ended come first: a job that needs one may start in the
// same snapshot, and its "running" must not precede the producer's end.
func (p *Plain) Update(pl Pipeline, now time.Time) {
	for _, final := range []bool{true, false} {
		for _, g := range pl.ByStage() {
			for _, j := range g.Jobs {
				if j.Final() != final || p.seen[j.ID] == j.Status {
					continue
				}
				if final {
					p.running(j) // it may have started and ended between snapshots
					if rest := p.partial[j.ID]; len(rest) > 0 {
						p.writeLines(j, append(rest, '\n'))
						delete(p.partial, j.ID)
					}
				}
				p.seen[j.ID] = j.Status
				if line := p.stateLine(j, now); line != "" {
					fmt.Fprintln(p.w, line)
				}
			}
		}
	}
	if IsPipelineFinal(pl.Status) && p.status != pl.Status {
		p.status = pl.Status
		fmt.Fprintf(p.w, "pipeline: %s\n", pl.Status)
	}
}

// running prints a started job's "running" line once, before its log or
// its end.
func (p *Plain) running(j Job) {
	if j.Started.IsZero() {
		return
	}
	switch p.seen[j.ID] {
	case StatusRunning, StatusCanceling:
		return
	case "", StatusCreated, StatusPending, StatusScheduled, StatusManual:
		p.seen[j.ID] = StatusRunning
		fmt.Fprintf(p.w, "job %s: running\n", j.Label())
	}
}

func (p *Plain) stateLine(j Job, now time.Time) string {
	prefix := fmt.Sprintf("job %s: ", j.Label())
	switch j.Status {
	case StatusCreated, StatusPending:
		return "" // waiting is no news; running is
	case StatusRunning, StatusCanceling:
		return prefix + j.Status
	case StatusManual:
		return prefix + "manual (not run: name it with --job " + j.Name + ")"
	case StatusSkipped:
		return prefix + "skipped"
	case StatusScheduled:
		if in := j.startsIn(now); in != "" {
			return prefix + "scheduled (" + in + ")"
		}
		return prefix + "scheduled"
	default:
		if j.Started.IsZero() {
			return prefix + j.Outcome()
		}
		return fmt.Sprintf("%s%s (%s)", prefix, j.Outcome(), FormatDuration(j.Duration(now)))
	}
}

// Close prints unfinished log lines (of jobs still running when the
// pipeline was interrupted).
func (p *Plain) Close() {
	for id, rest := range p.partial {
		if len(rest) > 0 {
			p.writeLines(p.jobs[id], append(rest, '\n'))
		}
		delete(p.partial, id)
	}
}

// IsPipelineFinal reports whether a pipeline status is final (blocked
// and manual: waiting for a manual job nobody will play).
func IsPipelineFinal(status string) bool {
	switch status {
	case StatusSuccess, StatusFailed, StatusCanceled, StatusSkipped, StatusManual, "blocked":
		return true
	}
	return false
}
