package execview

import (
	"bytes"
	"regexp"
)

var (
	// GitLab's collapsible section markers: section_start:<ts>:<name>[opts]\r\e[0K.
	sectionMarker = regexp.MustCompile(`section_(?:start|end):[0-9]+:[^\r\n\x1b]*\r\x1b\[0K`)
	// CSI sequences (colours, erase line) and OSC sequences (titles, links).
	ansiSequence = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]`)
)

// Clean turns a job log as the runner sends it into plain text: section
// markers and ANSI escape sequences removed, CRLF turned into LF, and of
// a line rewritten with bare carriage returns (progress bars) only what
// was written last.
func Clean(b []byte) []byte {
	b = sectionMarker.ReplaceAll(b, nil)
	b = ansiSequence.ReplaceAll(b, nil)
	if bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		line, rest, found := bytes.Cut(b, []byte{'\n'})
		line = bytes.TrimRight(line, "\r")
		if i := bytes.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		out = append(out, line...)
		if found {
			out = append(out, '\n')
		}
		b = rest
	}
	return out
}
