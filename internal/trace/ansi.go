package trace

import (
	"fmt"
	"strings"
	"time"
)

// ANSI sequences as GitLab Runner writes them into job logs.
const (
	ANSIBoldRed    = "\x1b[31;1m"
	ANSIBoldGreen  = "\x1b[32;1m"
	ANSIBoldYellow = ansiBoldYellow
	ANSIBoldCyan   = "\x1b[36;1m"
	ANSIYellow     = "\x1b[0;33m"
	ANSIReset      = ansiReset
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
