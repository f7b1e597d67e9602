package execview

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Summary prints the table of every job, by stage: stage, job, status
// (with failure reason and exit code), duration and notes (allowed to
// fail, retried, attempt), then the pipeline's status.
func Summary(w io.Writer, p Pipeline, now time.Time) {
	groups := p.ByStage()
	stageW, jobW, statusW := len("STAGE"), len("JOB"), len("STATUS")
	// Minimum widths keep short pipelines' tables steady to read.
	stageW, jobW = max(stageW, 10), max(jobW, 30)
	for _, g := range groups {
		stageW = max(stageW, utf8.RuneCountInString(g.Stage))
		for _, j := range g.Jobs {
			jobW = max(jobW, utf8.RuneCountInString(shortName(j.Name)))
			statusW = max(statusW, utf8.RuneCountInString(j.StatusText()))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n  %-*s %-*s %-*s %8s  %s\n", stageW, "STAGE", jobW, "JOB", statusW, "STATUS", "DURATION", "NOTES")
	for _, g := range groups {
		for _, j := range g.Jobs {
			dur := "-"
			if d := j.Duration(now); d > 0 {
				dur = FormatDuration(d)
			}
			var notes []string
			if j.Attempt > 1 {
				notes = append(notes, fmt.Sprintf("attempt %d", j.Attempt))
			}
			if n := j.Note(); n != "" {
				notes = append(notes, n)
			} else if j.AllowFailure && j.Status != StatusManual {
				notes = append(notes, "allow_failure")
			}
			line := fmt.Sprintf("  %-*s %-*s %-*s %8s  %s", stageW, g.Stage, jobW, shortName(j.Name), statusW, j.StatusText(), dur, strings.Join(notes, ", "))
			b.WriteString(strings.TrimRight(line, " ") + "\n")
		}
	}
	fmt.Fprintf(&b, "\nPipeline %s\n", p.Status)
	io.WriteString(w, b.String())
}

// maxJobW bounds the JOB column: a long matrix name would push status and
// duration off the screen. The logs keep the whole name.
const maxJobW = 60

// shortName cuts a name longer than maxJobW in its middle, keeping its
// start and its end (where matrix values differ).
func shortName(name string) string {
	r := []rune(name)
	if len(r) <= maxJobW {
		return name
	}
	head := maxJobW * 2 / 3
	tail := maxJobW - head - 1
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
