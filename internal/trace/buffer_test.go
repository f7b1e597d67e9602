package trace

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func readAll(t *testing.T, b *Buffer) []byte {
	t.Helper()
	got, err := io.ReadAll(b.Reader(0))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func checkSum(t *testing.T, b *Buffer, content []byte) {
	t.Helper()
	size, sum := b.Snapshot()
	if size != int64(len(content)) {
		t.Errorf("size %d, want %d", size, len(content))
	}
	if want := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(content)); sum != want {
		t.Errorf("checksum %s, want %s", sum, want)
	}
}

func TestBufferStoresAndChecksums(t *testing.T) {
	b, err := NewBuffer(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var want []byte
	for i := range 1000 {
		line := fmt.Sprintf("line %d ✅\n", i)
		mustWrite(t, b, line)
		want = append(want, line...)
	}
	got := readAll(t, b)
	if !bytes.Equal(got, want) {
		t.Fatalf("content differs")
	}
	checkSum(t, b, want)
	p := make([]byte, 10)
	n, err := b.ReadAt(p, int64(len(want)-4))
	if n != 4 || !errors.Is(err, io.EOF) || string(p[:n]) != string(want[len(want)-4:]) {
		t.Fatalf("ReadAt near end = %d, %v, %q", n, err, p[:n])
	}
	if _, err := b.ReadAt(p, int64(len(want))); !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt at end: %v, want EOF", err)
	}
}

func TestBufferLimit(t *testing.T) {
	tests := []struct {
		name   string
		limit  int64
		writes []string
		want   string
	}{
		{"exact fit: no notice", 6, []string{"abc", "def"}, "abcdef"},
		{"cut ascii", 5, []string{"abc", "def", "ghi"}, "abcde" + LimitNotice(5)},
		{"next write after full", 3, []string{"abc", "d", "e"}, "abc" + LimitNotice(3)},
		// "✅" is 3 bytes: never stored in part.
		{"utf8 boundary", 5, []string{"ab✅cd"}, "ab✅" + LimitNotice(5)},
		{"utf8 cut inside", 4, []string{"ab✅cd"}, "ab" + LimitNotice(4)},
		{"utf8 4-byte", 3, []string{"a😀b"}, "a" + LimitNotice(3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBuffer(t.TempDir(), tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, w := range tt.writes {
				mustWrite(t, b, w) // reported fully written even when dropped
			}
			got := readAll(t, b)
			if string(got) != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			checkSum(t, b, got)
			if b.LimitExceeded() != strings.Contains(tt.want, "exceeded") {
				t.Fatalf("LimitExceeded = %v", b.LimitExceeded())
			}
		})
	}
}

func TestLimitNoticeWording(t *testing.T) {
	want := "\n\x1b[33;1mJob's log exceeded limit of 4194304 bytes.\n" +
		"Job execution will continue but no more output will be collected.\x1b[0;m\n"
	if got := LimitNotice(DefaultLimit); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBufferCloseRemovesFile(t *testing.T) {
	dir := t.TempDir()
	b, err := NewBuffer(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, "x")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files left: %v", entries)
	}
	if _, err := b.Write([]byte("y")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestBufferBadDir(t *testing.T) {
	_, err := NewBuffer("/nonexistent/dir", 0)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/dir") {
		t.Fatalf("err = %v, want one naming the directory", err)
	}
}

// TestBufferConcurrent: concurrent writers and a concurrent reader; every
// line arrives whole and the checksum matches the stored bytes.
func TestBufferConcurrent(t *testing.T) {
	b, err := NewBuffer(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readErr error
	wg.Add(1)
	go func() { // reader, like the sender
		defer wg.Done()
		var off int64
		p := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := b.ReadAt(p, off)
			off += int64(n)
			if err != nil && !errors.Is(err, io.EOF) {
				readErr = err
				return
			}
		}
	}()
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 500 {
				fmt.Fprintf(b, "writer %d line %d\n", w, i)
			}
		}()
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	got := readAll(t, b)
	checkSum(t, b, got)
	if n := bytes.Count(got, []byte("\n")); n != 2000 {
		t.Fatalf("%d lines, want 2000", n)
	}
}

func TestTraceMasksAndFinishes(t *testing.T) {
	tr, err := New(Options{
		MaskValues:   []string{"hunter2hunter2"},
		JobToken:     "glcbt-64_jobtokenvalue",
		MaskPrefixes: []string{"glcbt-"},
		TempDir:      t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	stdout, stderr := tr.NewStream(), tr.NewStream()
	mustWrite(t, stdout, "pass=hunter2")
	mustWrite(t, stderr, "err: glcbt-64_job") // interleaved, other stream
	mustWrite(t, stdout, "hunter2\n")
	mustWrite(t, stderr, "tokenvalue\n")
	mustWrite(t, tr, "token glpat-abcdef and hunter2hunt")
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, tr, "er2 after finish is dropped")
	got := string(readAll(t, tr.Buffer()))
	for _, secret := range []string{"hunter2hunter2", "jobtokenvalue", "abcdef"} {
		if strings.Contains(got, secret) {
			t.Errorf("secret %q in %q", secret, got)
		}
	}
	// Each stream passes on what is safe at once and holds only a possible
	// secret, so "pass=" comes before stderr's line.
	want := "pass=" + "err: [MASKED]\n" + "[MASKED]\n" + "token glpat-[MASKED] and hunter2hunt"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTraceConcurrentWrites(t *testing.T) {
	tr, err := New(Options{MaskValues: []string{"SECRETSECRET"}, TempDir: t.TempDir(), Limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				mustWrite(t, tr, "line SECRETSECRET\n")
			}
		}()
	}
	wg.Wait()
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	got := string(readAll(t, tr.Buffer()))
	if strings.Contains(got, "SECRET") || strings.Count(got, "line [MASKED]\n") != 800 {
		t.Fatalf("unexpected content (%d bytes)", len(got))
	}
}

func TestSections(t *testing.T) {
	at := time.Unix(1700000000, 0)
	tests := []struct {
		got, want string
	}{
		{SectionStart(at, "step_script", "Executing \"step_script\" stage of the job script", SectionOptions{}),
			"section_start:1700000000:step_script\r\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\n"},
		{SectionStart(at, "prepare", "", SectionOptions{Collapsed: true}),
			"section_start:1700000000:prepare[collapsed=true]\r\x1b[0K"},
		{SectionStart(at, "x", "", SectionOptions{Collapsed: true, HideDuration: true}),
			"section_start:1700000000:x[collapsed=true,hide_duration=true]\r\x1b[0K"},
		{SectionEnd(at, "step script:1"), "section_end:1700000000:step_script_1\r\x1b[0K"},
		{Info("Job succeeded"), "\x1b[32;1mJob succeeded\x1b[0;m\n"},
		{Command("echo hi"), "\x1b[32;1m$ echo hi\x1b[0;m\n"},
		{Warning("w"), "\x1b[0;33mWARNING: w\x1b[0;m\n"},
		{Error("Job failed: exit code 3"), "\x1b[31;1mERROR: Job failed: exit code 3\x1b[0;m\n"},
		{Plain("Running with podrunner"), "\x1b[0KRunning with podrunner\x1b[0;m\n"},
		{SectionName(""), "section"},
		{Header("Preparing environment"), "\x1b[0K\x1b[36;1mPreparing environment\x1b[0;m\n"},
		{Banner("1.2.3", "abc", "r1", "t0k3n", "s_1"),
			"\x1b[0KRunning with podrunner 1.2.3 (abc)\n\x1b[0K  on r1 t0k3n, system ID: s_1\n"},
		{written(func(w io.Writer) { Infof(w, "Job %s", "succeeded") }), "\x1b[32;1mJob succeeded\x1b[0;m\n"},
		{written(func(w io.Writer) { Warningf(w, "%d left", 2) }), "\x1b[0;33mWARNING: 2 left\x1b[0;m\n"},
		{written(func(w io.Writer) { Errorf(w, "Job failed: exit code %d", 3) }), "\x1b[31;1mERROR: Job failed: exit code 3\x1b[0;m\n"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func written(f func(io.Writer)) string {
	var b strings.Builder
	f(&b)
	return b.String()
}

// TestSection: a stage section as GitLab Runner writes it, the header on
// its own erase-line after the bare marker.
func TestSection(t *testing.T) {
	got := written(func(w io.Writer) {
		Section(w, "prepare_script", "Preparing environment", func() { io.WriteString(w, "Running on host...\n") })
	})
	re := regexp.MustCompile(`^section_start:[0-9]+:prepare_script\r\x1b\[0K\x1b\[0K\x1b\[36;1mPreparing environment\x1b\[0;m\n` +
		`Running on host\.\.\.\nsection_end:[0-9]+:prepare_script\r\x1b\[0K$`)
	if !re.MatchString(got) {
		t.Errorf("Section wrote %q", got)
	}
}
