package trace

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
)

// fullDisk writes to f until room bytes are used, then fails as a full
// disk does: a short write and ENOSPC.
type fullDisk struct {
	f    *os.File
	room int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	n := min(len(p), d.room)
	n, err := d.f.Write(p[:n])
	d.room -= n
	if err == nil && n < len(p) {
		err = &os.PathError{Op: "write", Path: d.f.Name(), Err: syscall.ENOSPC}
	}
	return n, err
}

// newFullBuffer returns a Buffer whose file fills up after room bytes.
func newFullBuffer(t *testing.T, room int) *Buffer {
	t.Helper()
	b := newTestBuffer(t)
	b.w = bufio.NewWriterSize(&fullDisk{f: b.file, room: room}, 64*1024)
	return b
}

// TestBufferFullDisk: once the file cannot be written the log is what
// reached the file plus a line saying what is missing; later output is
// dropped without failing the writer, and the checksum is of exactly that.
func TestBufferFullDisk(t *testing.T) {
	for _, room := range []int{0, 1000, 100_000, 150_000} {
		t.Run(fmt.Sprint(room), func(t *testing.T) {
			b := newFullBuffer(t, room)
			line := []byte(strings.Repeat("x", 99) + "\n")
			for range 2000 { // 200 000 bytes
				if n, err := b.Write(line); err != nil || n != len(line) {
					t.Fatalf("Write = %d, %v; want the job's output accepted", n, err)
				}
			}
			got := readAll(t, b)
			durable := min(room, 200_000)
			if !bytes.Equal(got[:durable], bytes.Repeat(line, 2000)[:durable]) {
				t.Fatalf("the first %d bytes are not the job's output", durable)
			}
			rest := string(got[durable:])
			if !strings.Contains(rest, "ERROR: the runner could not store the job log") || !strings.Contains(rest, "no space left on device") ||
				!strings.Contains(rest, fmt.Sprintf("output after byte %d is missing", durable)) {
				t.Fatalf("log after the durable part: %q", rest)
			}
			checkSum(t, b, got)
			mustWrite(t, b, "more output after the disk filled up\n")
			if again := readAll(t, b); !bytes.Equal(again, got) {
				t.Fatal("output after the failure changed the stored log")
			}
		})
	}
}

// TestSenderFinishWithFullDisk: the final update is delivered, with what
// reached the disk and the line saying the rest is missing, instead of
// being retried until the runner is stopped.
func TestSenderFinishWithFullDisk(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1))}
	b := newFullBuffer(t, 70_000)
	s := NewSender(f, b, fastOpts())
	s.Start(context.Background())
	for i := range 3000 {
		fmt.Fprintf(b, "line %d %s\n", i, strings.Repeat("x", 40))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // safety net only
	defer cancel()
	if err := s.Finish(ctx, gitlab.UpdateJobRequest{State: gitlab.StateFailed, FailureReason: "script_failure", ExitCode: 2}); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	assertDelivered(t, f, b)
	if !bytes.Contains(f.trace, []byte("output after byte 70000 is missing")) {
		t.Fatal("GitLab's log does not say output is missing")
	}
}

// bogusRangeAPI answers every PATCH with 416 and a Range GitLab cannot
// mean, and accepts PUTs (checking the checksum when one is sent).
type bogusRangeAPI struct {
	patches int
	puts    []gitlab.UpdateJobRequest
}

func (a *bogusRangeAPI) PatchTrace(_ context.Context, _ int64, _ string, _ []byte, _ int64, _ bool) gitlab.PatchResult {
	a.patches++
	return gitlab.PatchResult{State: gitlab.PatchRangeMismatch, StatusCode: 416, NewOffset: int64(a.patches % 3)}
}

func (a *bogusRangeAPI) UpdateJob(_ context.Context, _ int64, _ string, req gitlab.UpdateJobRequest) gitlab.UpdateResult {
	a.puts = append(a.puts, req)
	if req.State == gitlab.StateRunning {
		return gitlab.UpdateResult{State: gitlab.UpdateSucceeded, StatusCode: 200}
	}
	if req.Checksum != "" && req.Checksum != fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(nil)) {
		return gitlab.UpdateResult{State: gitlab.UpdateTraceValidationFailed, StatusCode: 412}
	}
	return gitlab.UpdateResult{State: gitlab.UpdateSucceeded, StatusCode: 200}
}

// TestSenderFinishAgainstBogus416 and 412 storms: the final state is
// submitted without the log's checksum (GitLab keeps the log it has)
// after a bounded number of refusals, and the runner log says so.
func TestSenderFinishAgainstRefusedLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		api  API
	}{
		{"416 with bogus ranges", &bogusRangeAPI{}},
		{"412 on every final update", &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), force412: 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBuffer(t)
			mustWrite(t, b, strings.Repeat("log line\n", 500))
			var logs bytes.Buffer
			opts := fastOpts()
			opts.Logger = slogTo(&logs)
			s := NewSender(tc.api, b, opts)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // safety net only
			defer cancel()
			if err := s.Finish(ctx, gitlab.UpdateJobRequest{State: gitlab.StateFailed, FailureReason: "script_failure", ExitCode: 7}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			var puts []gitlab.UpdateJobRequest
			switch api := tc.api.(type) {
			case *bogusRangeAPI:
				puts = api.puts
			case *fakeGitLab:
				puts = api.finals()
			}
			last := puts[len(puts)-1]
			if last.State != gitlab.StateFailed || last.ExitCode != 7 || last.Checksum != "" || last.Bytesize != 0 {
				t.Fatalf("last final update %+v, want the state without a checksum", last)
			}
			if !strings.Contains(logs.String(), "The job log could not be sent completely") {
				t.Fatalf("runner log does not say the log is incomplete:\n%s", logs.String())
			}
		})
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
