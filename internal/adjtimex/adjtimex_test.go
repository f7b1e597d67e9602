package adjtimex

import (
	"testing"
	"time"
)

func TestStamps(t *testing.T) {
	for _, c := range []struct {
		name, log string
		want      []time.Time
	}{
		{"microseconds, no status line", "$ adjtimex | grep time.tv\n    time.tv_sec:  1700000000\n    time.tv_usec: 250000\n", []time.Time{time.Unix(1700000000, 250000000)}},
		{"microseconds", "    status:       64 (UNSYNC)\n    time.tv_sec:  1700000000\n    time.tv_usec: 250000\n", []time.Time{time.Unix(1700000000, 250000000)}},
		{"STA_NANO: nanoseconds", "    status:       8256 (UNSYNC)\n    time.tv_sec:  1700000000\n    time.tv_usec: 250000\n", []time.Time{time.Unix(1700000000, 250000)}},
		{"no status line, too big for microseconds", "    time.tv_sec:  1700000000\n    time.tv_usec: 194669356\n", []time.Time{time.Unix(1700000000, 194669356)}},
		{"two stamps", "    status:       8256 (UNSYNC)\n    time.tv_sec:  1700000000\n    time.tv_usec: 5\nhi\n    status:       8256 (UNSYNC)\n    time.tv_sec:  1700000001\n    time.tv_usec: 7\n", []time.Time{time.Unix(1700000000, 5), time.Unix(1700000001, 7)}},
		{"none", "hi\n", nil},
	} {
		got := Stamps([]byte(c.log))
		if len(got) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
			continue
		}
		for i := range got {
			if !got[i].Equal(c.want[i]) {
				t.Errorf("%s: stamp %d = %v, want %v", c.name, i, got[i], c.want[i])
			}
		}
	}
}
