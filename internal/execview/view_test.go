package execview

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func pipeline(status string, jobs ...Job) Pipeline {
	return Pipeline{ID: 7, Status: status, Stages: []string{".pre", "build", "test", "deploy", ".post"}, Jobs: jobs}
}

func TestClean(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "hello\nworld\n", "hello\nworld\n"},
		{"colours", "\x1b[32;1m$ echo hi\x1b[0;m\nhi\n", "$ echo hi\nhi\n"},
		{"section markers", "section_start:1700000000:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting\x1b[0;m\nsection_end:1700000001:step_script\r\x1b[0K\n", "Executing\n\n"},
		{"section with options", "section_start:1:build[collapsed=true]\r\x1b[0Kx\n", "x\n"},
		{"crlf", "a\r\nb\r\n", "a\nb\n"},
		{"progress bar keeps last write", "10%\r50%\r100%\ndone", "100%\ndone"},
		{"osc title", "\x1b]0;title\x07text\n", "text\n"},
		{"no newline at end", "partial", "partial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Clean([]byte(tt.in))); got != tt.want {
				t.Errorf("Clean(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		400 * time.Millisecond:       "0.4s",
		12300 * time.Millisecond:     "12.3s",
		125 * time.Second:            "2m05s",
		time.Hour + 2*time.Minute:    "1h02m",
		59*time.Minute + 59700*1e6:   "1h00m",
		0:                            "0.0s",
		61*time.Second + 400*1e6:     "1m01s",
		3*time.Hour + 29*time.Second: "3h00m",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestPlainLinesAndLogs(t *testing.T) {
	var out bytes.Buffer
	v := NewPlain(&out)
	build := Job{ID: 1, Name: "build", Stage: "build", Status: StatusRunning, Attempt: 1, Started: at(0)}
	lint := Job{ID: 2, Name: "lint", Stage: "test", Status: StatusCreated, Attempt: 1, AllowFailure: true}
	deploy := Job{ID: 3, Name: "deploy", Stage: "deploy", Status: StatusCreated, Attempt: 1}

	v.Update(pipeline(StatusRunning, build, lint, deploy), at(0.1))
	v.Log(build, []byte("\x1b[32;1m$ make\x1b[0;m\nbuil"))
	v.Update(pipeline(StatusRunning, build, lint, deploy), at(0.5)) // nothing changed: no line
	v.Log(build, []byte("ding"))
	build.Status, build.Finished = StatusSuccess, at(1.2)
	lint.Status, lint.Started = StatusRunning, at(1.3)
	v.Update(pipeline(StatusRunning, build, lint, deploy), at(1.3))
	v.Log(lint, []byte("lint says no\n"))
	lint.Status, lint.Finished, lint.FailureReason, lint.ExitCode = StatusFailed, at(2), "script_failure", 3
	deploy.Status = StatusManual
	v.Update(pipeline(StatusSuccess, build, lint, deploy), at(2))
	v.Update(pipeline(StatusSuccess, build, lint, deploy), at(3)) // final twice: printed once
	v.Close()

	want := `job build: running
[build] $ make
[build] building
job build: success (1.2s)
job lint: running
[lint] lint says no
job lint: failed (script_failure, exit code 3) [allowed to fail] (0.7s)
job deploy: manual (not run: name it with --job deploy)
pipeline: success
`
	if got := out.String(); got != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", got, want)
	}
}

func TestPlainQuietAndRetries(t *testing.T) {
	var out bytes.Buffer
	v := NewPlain(&out)
	v.Quiet = true
	first := Job{ID: 1, Name: "flaky", Stage: "test", Status: StatusFailed, Attempt: 1, Retried: true,
		FailureReason: "script_failure", ExitCode: 1, Started: at(0), Finished: at(1)}
	second := Job{ID: 4, Name: "flaky", Stage: "test", Status: StatusRunning, Attempt: 2, Started: at(1.5)}
	v.Log(first, []byte("boom\n"))
	v.Update(pipeline(StatusRunning, first, second), at(2))
	// A job that started and ended between two snapshots still says it ran.
	want := "job flaky: running\njob flaky: failed (script_failure, exit code 1) [retried] (1.0s)\njob flaky (attempt 2): running\n"
	if got := out.String(); got != want {
		t.Errorf("plain output:\n%q\nwant:\n%q", got, want)
	}
}

func TestPlainCloseFlushesPartialLines(t *testing.T) {
	var out bytes.Buffer
	v := NewPlain(&out)
	j := Job{ID: 1, Name: "build", Stage: "build", Status: StatusRunning, Attempt: 1}
	v.Log(j, []byte("no newline yet"))
	if out.Len() != 0 {
		t.Fatalf("partial line printed early: %q", out.String())
	}
	v.Close()
	if got, want := out.String(), "[build] no newline yet\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// screen is a minimal VT100 terminal: enough of it (text, \r, \n, cursor
// up, clear below, SGR and cursor visibility ignored) to see what a user
// sees after the live view's output.
type screen struct {
	t          *testing.T
	rows       []string
	row, col   int
	cursorShow bool
}

func (s *screen) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\n':
			s.row++
			s.col = 0
		case c == '\r':
			s.col = 0
		case c == 0x1b && i+1 < len(p) && p[i+1] == '[':
			j := i + 2
			for j < len(p) && (p[j] >= '0' && p[j] <= '9' || p[j] == ';' || p[j] == '?') {
				j++
			}
			if j >= len(p) {
				s.t.Fatalf("escape sequence cut at end of write: %q", p[i:])
			}
			arg, final := string(p[i+2:j]), p[j]
			switch final {
			case 'A':
				n, _ := strconv.Atoi(arg)
				s.row = max(0, s.row-max(n, 1))
			case 'J':
				s.grow()
				s.rows[s.row] = cut(s.rows[s.row], s.col)
				s.rows = s.rows[:s.row+1]
			case 'm':
			case 'h', 'l':
				if arg != "?25" {
					s.t.Fatalf("unexpected mode sequence %q", p[i:j+1])
				}
				s.cursorShow = final == 'h'
			default:
				s.t.Fatalf("unexpected escape sequence %q", p[i:j+1])
			}
			i = j
		default:
			r, size := rune(c), 1
			if c >= 0x80 {
				r, size = decodeRune(p[i:])
			}
			s.grow()
			line := []rune(s.rows[s.row])
			for len(line) < s.col {
				line = append(line, ' ')
			}
			if s.col < len(line) {
				line[s.col] = r
			} else {
				line = append(line, r)
			}
			s.rows[s.row] = string(line)
			s.col++
			i += size - 1
		}
	}
	return len(p), nil
}

func decodeRune(b []byte) (rune, int) {
	r := []rune(string(b[:min(len(b), 4)]))
	return r[0], len(string(r[0]))
}

func cut(s string, col int) string {
	r := []rune(s)
	if col < len(r) {
		return string(r[:col])
	}
	return s
}

func (s *screen) grow() {
	for len(s.rows) <= s.row {
		s.rows = append(s.rows, "")
	}
}

func (s *screen) text() string {
	rows := s.rows
	for len(rows) > 0 && rows[len(rows)-1] == "" {
		rows = rows[:len(rows)-1]
	}
	return strings.Join(rows, "\n")
}

func TestLiveRedrawsInPlace(t *testing.T) {
	scr := &screen{t: t}
	v := NewLive(scr, func() int { return 100 })
	v.Color = false
	build := Job{ID: 1, Name: "build", Stage: "build", Status: StatusRunning, Attempt: 1, Started: at(0)}
	unit := Job{ID: 2, Name: "unit", Stage: "test", Status: StatusCreated, Attempt: 1}
	lint := Job{ID: 3, Name: "lint", Stage: "test", Status: StatusCreated, Attempt: 1, AllowFailure: true}

	v.Update(pipeline(StatusRunning, build, unit, lint), at(0.5))
	if !strings.Contains(scr.text(), "● build running   0.5s") {
		t.Fatalf("first frame:\n%s", scr.text())
	}
	build.Status, build.Finished = StatusSuccess, at(1.2)
	unit.Status, unit.Started = StatusRunning, at(1.3)
	lint.Status, lint.Started = StatusRunning, at(1.3)
	v.Log(unit, []byte("section_start:1:step\r\x1b[0K\x1b[32m$ go test\x1b[0m\n"))
	for i := 1; i <= 40; i++ {
		v.Log(unit, fmt.Appendf(nil, "line %d\n", i))
	}
	v.Update(pipeline(StatusRunning, build, unit, lint), at(2))
	unit.Status, unit.Finished, unit.FailureReason, unit.ExitCode = StatusFailed, at(3), "script_failure", 1
	lint.Status, lint.Finished, lint.FailureReason = StatusFailed, at(3), "script_failure"
	v.Update(pipeline(StatusFailed, build, unit, lint), at(3))
	v.Close()

	var want strings.Builder
	want.WriteString("── job unit (stage test): failed (script_failure, exit code 1), 1.7s ──\n")
	want.WriteString("… (11 earlier lines in the saved log)\n")
	for i := 11; i <= 40; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	want.WriteString("── job lint (stage test): failed (script_failure) [allowed to fail], 1.7s ──\n")
	want.WriteString("\n") // lint logged nothing
	want.WriteString(`Pipeline #7 failed 3.0s
build
  ✔ build success   1.2s
test
  ✖ unit  failed    1.7s
  ! lint  failed    1.7s  allowed to fail`)
	if got := scr.text(); got != want.String() {
		t.Errorf("screen:\n%s\n\nwant:\n%s", got, want.String())
	}
	if !scr.cursorShow {
		t.Error("cursor left hidden after Close")
	}
}

func TestLiveCutsLinesToWidth(t *testing.T) {
	scr := &screen{t: t}
	v := NewLive(scr, func() int { return 20 })
	long := Job{ID: 1, Name: "a-job-with-a-very-long-name", Stage: "build", Status: StatusPending, Attempt: 1}
	v.Update(pipeline(StatusPending, long), at(0))
	v.Update(pipeline(StatusPending, long), at(1))
	for _, row := range scr.rows {
		if n := len([]rune(row)); n >= 20 {
			t.Errorf("row %q is %d columns wide on a 20-column terminal", row, n)
		}
	}
	if got := strings.Count(scr.text(), "Pipeline #7"); got != 1 {
		t.Errorf("the redrawn frame shows the header %d times:\n%s", got, scr.text())
	}
}

func TestSummary(t *testing.T) {
	jobs := []Job{
		{ID: 1, Name: "build", Stage: "build", Status: StatusSuccess, Attempt: 1, Started: at(0), Finished: at(1.25)},
		{ID: 2, Name: "flaky", Stage: "test", Status: StatusFailed, Attempt: 1, Retried: true, FailureReason: "script_failure", ExitCode: 1, Started: at(1), Finished: at(2)},
		{ID: 5, Name: "flaky", Stage: "test", Status: StatusSuccess, Attempt: 2, Started: at(2), Finished: at(3)},
		{ID: 3, Name: "lint", Stage: "test", Status: StatusFailed, Attempt: 1, AllowFailure: true, FailureReason: "script_failure", ExitCode: 2, Started: at(1), Finished: at(1.5)},
		{ID: 4, Name: "release", Stage: "deploy", Status: StatusManual, Attempt: 1, AllowFailure: true},
	}
	var out bytes.Buffer
	Summary(&out, pipeline(StatusSuccess, jobs...), at(4))
	want := `
  STAGE      JOB                            STATUS                               DURATION  NOTES
  build      build                          success                                  1.3s
  test       flaky                          failed (script_failure, exit code 1)     1.0s  retried
  test       flaky                          success                                  1.0s  attempt 2
  test       lint                           failed (script_failure, exit code 2)     0.5s  allowed to fail
  deploy     release                        manual                                      -

Pipeline success
`
	if got := out.String(); got != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}
}

func TestByStageOrder(t *testing.T) {
	p := Pipeline{Stages: []string{"build", "test"}, Jobs: []Job{
		{ID: 1, Name: "t", Stage: "test"}, {ID: 2, Name: "x", Stage: "extra"}, {ID: 3, Name: "b", Stage: "build"},
	}}
	var got []string
	for _, g := range p.ByStage() {
		got = append(got, g.Stage)
	}
	if strings.Join(got, ",") != "build,test,extra" {
		t.Errorf("stages %v, want build,test,extra (known stages in order, empty dropped, unknown last)", got)
	}
}

func TestPlainScheduledJob(t *testing.T) {
	var out bytes.Buffer
	v := NewPlain(&out)
	j := Job{ID: 1, Name: "later", Stage: "deploy", Status: StatusScheduled, Attempt: 1, ScheduledAt: at(5)}
	v.Update(pipeline(StatusRunning, j), at(1))
	j.Status, j.Started = StatusRunning, at(5)
	v.Update(pipeline(StatusRunning, j), at(5))
	want := "job later: scheduled (starts in 4.0s)\njob later: running\n"
	if got := out.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSummaryCutsLongNames: a long matrix name is cut in the middle (its
// distinguishing end kept) so the columns stay on screen.
func TestSummaryCutsLongNames(t *testing.T) {
	long := "integration: [" + strings.Repeat("x", 80) + ", postgres-16]"
	var out bytes.Buffer
	Summary(&out, pipeline(StatusSuccess, Job{ID: 1, Name: long, Stage: "test", Status: StatusSuccess, Attempt: 1, Started: at(0), Finished: at(1)}), at(2))
	for _, l := range strings.Split(out.String(), "\n") {
		if n := utf8.RuneCountInString(l); n > 2+10+1+maxJobW+1+7+1+8+2+5 {
			t.Errorf("line of %d characters: %q", n, l)
		}
	}
	if !strings.Contains(out.String(), "integration: [xxx") || !strings.Contains(out.String(), "…") || !strings.Contains(out.String(), "postgres-16]") {
		t.Errorf("summary does not keep the name's start and end:\n%s", out.String())
	}
}

// TestPlainOrderFollowsNeeds: in one snapshot where a producer ended and
// the job needing it started (listed first, same stage), the producer's
// end comes first; every job that ran says "running" before its end.
func TestPlainOrderFollowsNeeds(t *testing.T) {
	var out bytes.Buffer
	v := NewPlain(&out)
	consumer := Job{ID: 2, Name: "consumer", Stage: "test", Status: StatusPending, Attempt: 1}
	producer := Job{ID: 1, Name: "producer", Stage: "test", Status: StatusPending, Attempt: 1}
	v.Update(pipeline(StatusRunning, consumer, producer), at(0))
	producer.Status, producer.Started, producer.Finished = StatusSuccess, at(0.1), at(0.4)
	consumer.Status, consumer.Started = StatusRunning, at(0.5)
	v.Log(producer, []byte("made it\n"))
	v.Update(pipeline(StatusRunning, consumer, producer), at(0.6))
	v.Log(consumer, []byte("using it\n"))
	want := "job producer: running\n[producer] made it\njob producer: success (0.3s)\njob consumer: running\n[consumer] using it\n"
	if got := out.String(); got != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", got, want)
	}
}
