// Package adjtimex reads wall-clock stamps that jobs print with busybox
// `adjtimex` (busybox date has no %N), for the benchmarks. Jobs print them
// with Script, so the status line comes with each stamp.
package adjtimex

import (
	"regexp"
	"strconv"
	"time"
)

// Script prints one stamp: the kernel's status and its wall clock.
const Script = "adjtimex | grep -e status -e time.tv"

// time.tv_usec holds nanoseconds while the kernel's STA_NANO status bit
// is set, which a time daemon may do at any moment.
var stampRE = regexp.MustCompile(`(?:status:\s+(\d+)[^\n]*\n\s*)?time\.tv_sec:\s+(\d+)\s+time\.tv_usec:\s+(\d+)`)

const staNano = 0x2000

// Stamps returns the stamps of a log, in order.
func Stamps(log []byte) []time.Time {
	var out []time.Time
	for _, m := range stampRE.FindAllSubmatch(log, -1) {
		status, _ := strconv.ParseInt(string(m[1]), 10, 64)
		s, _ := strconv.ParseInt(string(m[2]), 10, 64)
		frac, _ := strconv.ParseInt(string(m[3]), 10, 64)
		// Without a status line, a fraction of a second of 10^6 or more
		// can only be nanoseconds.
		if status&staNano == 0 && frac < 1e6 {
			frac *= 1000
		}
		out = append(out, time.Unix(s, frac))
	}
	return out
}
