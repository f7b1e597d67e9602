package trace

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// ANSI sequences as GitLab Runner writes them into job logs.
const (
	ANSIBoldRed    = "\x1b[31;1m"
	ANSIBoldGreen  = "\x1b[32;1m"
	ANSIBoldYellow = "\x1b[33;1m"
	ANSIBoldCyan   = "\x1b[36;1m"
	ANSIYellow     = "\x1b[0;33m"
	ANSIReset      = "\x1b[0;m"
	ANSIClear      = "\x1b[0K" // erase to end of line; ends section markers
)

// SectionOptions are the options GitLab's log viewer reads from a
// section_start marker.
type SectionOptions struct {
	Collapsed    bool // [collapsed=true]: shown folded
	HideDuration bool // [hide_duration=true]: no duration badge
}

// SectionName turns s into a valid section name: GitLab only recognises
// [A-Za-z0-9_.-]; any other byte becomes '_'.
func SectionName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "section"
	}
	return string(b)
}

// SectionStart returns the marker that opens a collapsible section:
// "section_start:<unix ts>:<name>[opts]\r\x1b[0K" followed by the header in
// bold cyan and a newline (GitLab Runner's layout). An empty header gives
// the bare marker.
func SectionStart(at time.Time, name, header string, opts SectionOptions) string {
	var o []string
	if opts.Collapsed {
		o = append(o, "collapsed=true")
	}
	if opts.HideDuration {
		o = append(o, "hide_duration=true")
	}
	optStr := ""
	if len(o) > 0 {
		optStr = "[" + strings.Join(o, ",") + "]"
	}
	line := fmt.Sprintf("section_start:%d:%s%s\r%s", at.Unix(), SectionName(name), optStr, ANSIClear)
	if header != "" {
		line += ANSIBoldCyan + header + ANSIReset + "\n"
	}
	return line
}

// SectionEnd returns the marker that closes a section:
// "section_end:<unix ts>:<name>\r\x1b[0K".
func SectionEnd(at time.Time, name string) string {
	return fmt.Sprintf("section_end:%d:%s\r%s", at.Unix(), SectionName(name), ANSIClear)
}

// The runner's own log lines, as GitLab Runner prints them: each ends with
// a colour reset and a newline.

// Header is a section's header on its own line, as GitLab Runner writes
// it after a bare SectionStart marker: an erase-line, then bold cyan.
func Header(msg string) string { return Plain(ANSIBoldCyan + msg) }

// Banner is the first two lines of every job log: which runner runs the
// job and on which of its registrations.
func Banner(version, revision, runnerName, shortToken, systemID string) string {
	return fmt.Sprintf("%sRunning with podrunner %s (%s)\n%s  on %s %s, system ID: %s\n",
		ANSIClear, version, revision, ANSIClear, runnerName, shortToken, systemID)
}

// Plain is an uncoloured line (e.g. "Running with podrunner …"); like
// GitLab Runner it starts with an erase-line so it overwrites any partial
// line drawn with \r.
func Plain(msg string) string { return ANSIClear + msg + ANSIReset + "\n" }

// Info is a bold green line (e.g. "Job succeeded", "$ echo hi").
func Info(msg string) string { return ANSIBoldGreen + msg + ANSIReset + "\n" }

// Warning is a yellow "WARNING: " line.
func Warning(msg string) string { return ANSIYellow + "WARNING: " + msg + ANSIReset + "\n" }

// Error is a bold red "ERROR: " line (e.g. "ERROR: Job failed: exit code 1").
func Error(msg string) string { return ANSIBoldRed + "ERROR: " + msg + ANSIReset + "\n" }

// Command is how a script line is echoed before it runs: "$ <cmd>" in bold
// green.
func Command(cmd string) string { return Info("$ " + cmd) }

// Infof, Warningf and Errorf write one Info, Warning or Error line to w.
func Infof(w io.Writer, format string, args ...any) {
	io.WriteString(w, Info(fmt.Sprintf(format, args...)))
}

func Warningf(w io.Writer, format string, args ...any) {
	io.WriteString(w, Warning(fmt.Sprintf(format, args...)))
}

func Errorf(w io.Writer, format string, args ...any) {
	io.WriteString(w, Error(fmt.Sprintf(format, args...)))
}

// Section writes a whole collapsible section around fn: a bare marker, the
// header on its own line, fn's output, the end marker.
func Section(w io.Writer, name, header string, fn func()) {
	io.WriteString(w, SectionStart(time.Now(), name, "", SectionOptions{})+Header(header))
	fn()
	io.WriteString(w, SectionEnd(time.Now(), name))
}
