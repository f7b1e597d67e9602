package execview

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Terminal control sequences the live view uses (VT100, understood by
// every terminal emulator in use).
const (
	csiUp         = "\x1b[%dA"
	csiClearBelow = "\x1b[J"
	hideCursor    = "\x1b[?25l"
	showCursor    = "\x1b[?25h"
)

const (
	// logTailBytes is how much of each running job's log the live view
	// keeps, to show the end of it when the job fails.
	logTailBytes = 64 << 10
	// LogTailLines is how many lines of a failed job's log are shown.
	LogTailLines = 30
)

// Live redraws the jobs, grouped by stage with status and duration, in
// place at the bottom of a terminal; the end of the log of each job that
// fails is printed above it and stays.
type Live struct {
	w     io.Writer
	width func() int
	// Color adds ANSI colours.
	Color bool

	lines  int // lines of the frame on screen
	frames int
	logs   map[int64][]byte // job id → end of its log
	shown  map[int64]bool   // failed jobs whose log was printed
}

// NewLive returns a live view writing to the terminal w; width returns
// the terminal's width in columns (lines are cut to fit, so that the
// frame never wraps and can be redrawn), or 0 when unknown.
func NewLive(w io.Writer, width func() int) *Live {
	if width == nil {
		width = func() int { return 0 }
	}
	return &Live{w: w, width: width, Color: true, logs: map[int64][]byte{}, shown: map[int64]bool{}}
}

// Log keeps the end of the job's log.
func (l *Live) Log(j Job, data []byte) {
	b := append(l.logs[j.ID], data...)
	if len(b) > logTailBytes {
		b = append([]byte(nil), b[len(b)-logTailBytes:]...)
	}
	l.logs[j.ID] = b
}

// Update redraws the frame; the logs of jobs that failed since the last
// frame are printed above it first.
func (l *Live) Update(p Pipeline, now time.Time) {
	var out bytes.Buffer
	if l.frames == 0 {
		out.WriteString(hideCursor)
	}
	l.frames++
	if l.lines > 0 {
		fmt.Fprintf(&out, csiUp, l.lines)
	}
	out.WriteString("\r" + csiClearBelow)
	for _, j := range p.Jobs {
		if !j.Final() {
			continue
		}
		if j.Status == StatusFailed && !l.shown[j.ID] {
			l.shown[j.ID] = true
			l.writeFailedLog(&out, j, now)
		}
		if j.Status != StatusFailed {
			delete(l.logs, j.ID) // nothing will show it
		}
	}
	frame := l.frame(p, now)
	for _, line := range frame {
		out.WriteString(line)
		out.WriteByte('\n')
	}
	l.lines = len(frame)
	l.w.Write(out.Bytes())
}

func (l *Live) writeFailedLog(out *bytes.Buffer, j Job, now time.Time) {
	title := fmt.Sprintf("── job %s (stage %s): %s, %s ──", j.Label(), j.Stage, j.Outcome(), FormatDuration(j.Duration(now)))
	out.WriteString(l.paint(bold, l.fit(title)) + "\n")
	text := Clean(l.logs[j.ID])
	delete(l.logs, j.ID)
	lines := strings.Split(strings.TrimRight(string(text), "\n"), "\n")
	if len(lines) > LogTailLines {
		fmt.Fprintf(out, "… (%d earlier lines in the saved log)\n", len(lines)-LogTailLines)
		lines = lines[len(lines)-LogTailLines:]
	}
	for _, line := range lines {
		out.WriteString(l.fit(line) + "\n")
	}
}

// Close shows the cursor again; the last frame stays on screen.
func (l *Live) Close() {
	if l.frames > 0 {
		io.WriteString(l.w, showCursor)
	}
}

const (
	bold   = "1"
	dim    = "2"
	red    = "31"
	green  = "32"
	yellow = "33"
	blue   = "34"
)

func (l *Live) paint(code, s string) string {
	if !l.Color || code == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// fit cuts s (plain text) to the terminal width so it never wraps.
func (l *Live) fit(s string) string {
	w := l.width()
	if w <= 1 || utf8.RuneCountInString(s) < w {
		return s
	}
	r := []rune(s)
	return string(r[:w-2]) + "…"
}

// frame renders the pipeline, one string per line.
func (l *Live) frame(p Pipeline, now time.Time) []string {
	var lines []string
	var started time.Time
	for _, j := range p.Jobs {
		if !j.Started.IsZero() && (started.IsZero() || j.Started.Before(started)) {
			started = j.Started
		}
	}
	head := fmt.Sprintf("Pipeline #%d %s", p.ID, p.Status)
	if !started.IsZero() {
		head += " " + FormatDuration(now.Sub(started))
	}
	lines = append(lines, l.paint(bold, l.fit(head)))
	nameWidth := 0
	for _, j := range p.Jobs {
		nameWidth = max(nameWidth, utf8.RuneCountInString(j.Label()))
	}
	for _, g := range p.ByStage() {
		lines = append(lines, l.paint(bold, l.fit(g.Stage)))
		for _, j := range g.Jobs {
			sym, code := symbol(j)
			text := fmt.Sprintf("  %s %-*s %-9s", sym, nameWidth, j.Label(), j.Status)
			if d := j.Duration(now); d > 0 {
				text += " " + FormatDuration(d)
			}
			switch {
			case j.Status == StatusFailed && j.Retried:
				text += "  retried"
			case j.Status == StatusFailed && j.AllowFailure:
				text += "  allowed to fail"
			case j.Status == StatusManual:
				text += "  (name it with --job to run it)"
			case j.Status == StatusScheduled:
				text += "  " + j.startsIn(now)
			}
			lines = append(lines, l.paint(code, l.fit(strings.TrimRight(text, " "))))
		}
	}
	return lines
}

// symbol is the status mark of a job and its colour.
func symbol(j Job) (string, string) {
	switch j.Status {
	case StatusSuccess:
		return "✔", green
	case StatusFailed:
		if j.AllowFailure || j.Retried {
			return "!", yellow
		}
		return "✖", red
	case StatusRunning:
		return "●", blue
	case StatusPending, StatusScheduled:
		return "○", ""
	case StatusManual:
		return "▶", dim
	case StatusSkipped, StatusCanceled, StatusCanceling:
		return "⊘", dim
	default:
		return "·", dim
	}
}
