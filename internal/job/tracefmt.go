package job

import (
	"fmt"
	"io"
	"time"
)

// ANSI sequences GitLab Runner uses in job logs.
const (
	ansiBoldGreen = "\x1b[32;1m"
	ansiBoldRed   = "\x1b[31;1m"
	ansiBoldCyan  = "\x1b[36;1m"
	ansiYellow    = "\x1b[0;33m"
	ansiReset     = "\x1b[0;m"
	ansiClear     = "\x1b[0K"
)

// Section markers are written here rather than through internal/trace so the
// sequencer (which also runs inside a pod) has no dependency on it.
func sectionStart(w io.Writer, now time.Time, name, header string) {
	fmt.Fprintf(w, "section_start:%d:%s\r%s%s%s%s%s\n", now.Unix(), name, ansiClear, ansiClear, ansiBoldCyan, header, ansiReset)
}

func sectionEnd(w io.Writer, now time.Time, name string) {
	fmt.Fprintf(w, "section_end:%d:%s\r%s", now.Unix(), name, ansiClear)
}

// Notice, Warning and Error write one coloured log line like GitLab Runner's.
func Notice(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%s%s%s\n", ansiBoldGreen, fmt.Sprintf(format, args...), ansiReset)
}

func Warning(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%sWARNING: %s%s\n", ansiYellow, fmt.Sprintf(format, args...), ansiReset)
}

func Error(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%sERROR: %s%s\n", ansiBoldRed, fmt.Sprintf(format, args...), ansiReset)
}

// Section writes a whole collapsible section around fn.
func Section(w io.Writer, name, header string, fn func()) {
	sectionStart(w, time.Now(), name, header)
	fn()
	sectionEnd(w, time.Now(), name)
}
