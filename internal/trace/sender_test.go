package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
)

const testToken = "glcbt-SECRET-job-token"

// fakeGitLab reassembles the trace as GitLab does: a PATCH must start at
// the end of what it has (else 416 with its size), the final PUT is checked
// against the CRC and size of what it has (else 412, and it drops its copy
// so the runner resends from byte 0).
type fakeGitLab struct {
	mu    sync.Mutex
	rng   *rand.Rand
	trace []byte

	failRate   float64 // PATCH/PUT answered "failed", nothing applied
	lostRate   float64 // PATCH applied but the answer lost (failed)
	rewindRate float64 // server lost a tail: 416 to an earlier offset
	force412   int     // final PUTs answered 412 first
	force202   int     // final PUTs answered 202 first
	cancelOn   int     // calls after which Job-Status: canceling is sent (0: never)
	abortOn    int     // calls after which the job is aborted (0: never)
	interval   time.Duration
	blockPatch bool // PATCH blocks until its context ends

	calls      int
	patches    []string // "start-end"
	puts       []gitlab.UpdateJobRequest
	putTimes   []time.Time
	tokenSeen  []string
	afterAbort int
}

func (f *fakeGitLab) common() (cancel, abort bool) {
	f.calls++
	if f.abortOn > 0 && f.calls >= f.abortOn {
		if f.calls > f.abortOn {
			f.afterAbort++
		}
		return false, true
	}
	return f.cancelOn > 0 && f.calls >= f.cancelOn, false
}

func (f *fakeGitLab) chance(p float64) bool { return p > 0 && f.rng.Float64() < p }

func (f *fakeGitLab) PatchTrace(ctx context.Context, jobID int64, jobToken string, content []byte, offset int64, debugTrace bool) gitlab.PatchResult {
	if f.blockPatch {
		<-ctx.Done()
		return gitlab.PatchResult{State: gitlab.PatchFailed, Err: ctx.Err()}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenSeen = append(f.tokenSeen, jobToken)
	cancel, abort := f.common()
	res := gitlab.PatchResult{CancelRequested: cancel, UpdateInterval: f.interval}
	if abort {
		res.State, res.StatusCode, res.Err = gitlab.PatchAbort, 403, errors.New("403 Forbidden")
		return res
	}
	if len(content) == 0 {
		panic("empty PATCH sent")
	}
	f.patches = append(f.patches, fmt.Sprintf("%d-%d", offset, offset+int64(len(content))-1))
	switch {
	case f.chance(f.failRate):
		res.State, res.StatusCode, res.Err = gitlab.PatchFailed, 500, errors.New("500 Internal Server Error")
		return res
	case f.chance(f.rewindRate) && len(f.trace) > 0:
		f.trace = f.trace[:max(0, len(f.trace)-1-f.rng.IntN(3000))]
		res.State, res.StatusCode, res.NewOffset = gitlab.PatchRangeMismatch, 416, int64(len(f.trace))
		return res
	case offset != int64(len(f.trace)):
		res.State, res.StatusCode, res.NewOffset = gitlab.PatchRangeMismatch, 416, int64(len(f.trace))
		return res
	}
	f.trace = append(f.trace, content...)
	if f.chance(f.lostRate) {
		res.State, res.StatusCode, res.Err = gitlab.PatchFailed, 502, errors.New("502 Bad Gateway")
		return res
	}
	res.State, res.StatusCode, res.NewOffset = gitlab.PatchSucceeded, 202, int64(len(f.trace))
	return res
}

func (f *fakeGitLab) UpdateJob(ctx context.Context, jobID int64, jobToken string, req gitlab.UpdateJobRequest) gitlab.UpdateResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenSeen = append(f.tokenSeen, jobToken)
	f.puts = append(f.puts, req)
	f.putTimes = append(f.putTimes, time.Now())
	cancel, abort := f.common()
	res := gitlab.UpdateResult{CancelRequested: cancel, UpdateInterval: f.interval}
	switch {
	case abort:
		res.State, res.StatusCode, res.Err = gitlab.UpdateAbort, 403, errors.New("403 Forbidden")
	case f.chance(f.failRate):
		res.State, res.StatusCode, res.Err = gitlab.UpdateFailed, 500, errors.New("500 Internal Server Error")
	case req.State == gitlab.StateRunning:
		res.State, res.StatusCode = gitlab.UpdateSucceeded, 200
	case f.force202 > 0:
		f.force202--
		res.State, res.StatusCode = gitlab.UpdateAcceptedNotComplete, 202
	case req.Checksum != "" && // as GitLab: no checksum, no validation
		(f.force412 > 0 || req.Checksum != fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(f.trace)) || req.Bytesize != int64(len(f.trace))):
		if f.force412 > 0 {
			f.force412--
		}
		f.trace = nil // trace_reset: the runner sends everything again
		res.State, res.StatusCode = gitlab.UpdateTraceValidationFailed, 412
	default:
		res.State, res.StatusCode = gitlab.UpdateSucceeded, 200
	}
	return res
}

func (f *fakeGitLab) finals() []gitlab.UpdateJobRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gitlab.UpdateJobRequest
	for _, p := range f.puts {
		if p.State != gitlab.StateRunning {
			out = append(out, p)
		}
	}
	return out
}

func fastOpts() SenderOptions {
	return SenderOptions{
		JobID: 42, JobToken: testToken,
		UpdateInterval: time.Millisecond, ForceSendInterval: time.Hour,
		PatchLimit: 777, RetryBackoff: time.Millisecond, MaxRetryBackoff: 5 * time.Millisecond,
	}
}

func newTestBuffer(t *testing.T) *Buffer {
	t.Helper()
	b, err := NewBuffer(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func assertDelivered(t *testing.T, f *fakeGitLab, b *Buffer) {
	t.Helper()
	want := readAll(t, b)
	f.mu.Lock()
	got := append([]byte(nil), f.trace...)
	f.mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatalf("GitLab has %d bytes, buffer %d; equal prefix %d", len(got), len(want), commonPrefix(got, want))
	}
	finals := f.finals()
	if len(finals) == 0 {
		t.Fatal("no final PUT")
	}
	last := finals[len(finals)-1]
	size, sum := b.Snapshot()
	if last.Checksum != sum || last.Bytesize != size || sum != fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(got)) {
		t.Fatalf("final PUT checksum %s/%d, buffer %s/%d", last.Checksum, last.Bytesize, sum, size)
	}
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

func TestSenderExactReassemblyUnderFaults(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			f := &fakeGitLab{rng: rand.New(rand.NewPCG(seed, 7)), failRate: 0.3, lostRate: 0.1, rewindRate: 0.02, force412: 1}
			b := newTestBuffer(t)
			opts := fastOpts()
			opts.PatchLimit = 4096
			s := NewSender(f, b, opts)
			s.Start(context.Background())
			r := rand.New(rand.NewPCG(seed, 8))
			for i := range 300 {
				fmt.Fprintf(b, "line %d %s\n", i, strings.Repeat("✅x", r.IntN(200)))
				if i%20 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := s.Finish(ctx, gitlab.UpdateJobRequest{State: gitlab.StateSuccess}); err != nil {
				t.Fatal(err)
			}
			assertDelivered(t, f, b)
			if f.finals()[len(f.finals())-1].State != gitlab.StateSuccess {
				t.Fatal("final state lost")
			}
		})
	}
}

func TestSenderFinal412ResendsWholeTrace(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), force412: 1}
	b := newTestBuffer(t)
	mustWrite(t, b, strings.Repeat("0123456789", 200)) // 2000 bytes: 3 patches of 777
	s := NewSender(f, b, fastOpts())
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateFailed, FailureReason: "script_failure", ExitCode: 3}); err != nil {
		t.Fatal(err)
	}
	assertDelivered(t, f, b)
	want := []string{"0-776", "777-1553", "1554-1999", "0-776", "777-1553", "1554-1999"}
	if fmt.Sprint(f.patches) != fmt.Sprint(want) {
		t.Fatalf("patches %v, want %v", f.patches, want)
	}
	finals := f.finals()
	if len(finals) != 2 || finals[1].ExitCode != 3 || finals[1].FailureReason != "script_failure" {
		t.Fatalf("final PUTs %+v", finals)
	}
}

func TestSenderFinal202Repeats(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), force202: 2}
	b := newTestBuffer(t)
	mustWrite(t, b, "hello\n")
	s := NewSender(f, b, fastOpts())
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.finals()); n != 3 {
		t.Fatalf("%d final PUTs, want 3 (202, 202, 200)", n)
	}
	if len(f.patches) != 1 {
		t.Fatalf("patches %v, want the log once", f.patches)
	}
}

func TestSenderFinalRetriesUntilContext(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), failRate: 1}
	b := newTestBuffer(t)
	mustWrite(t, b, "x")
	s := NewSender(f, b, fastOpts())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Finish(ctx, gitlab.UpdateJobRequest{State: gitlab.StateSuccess})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if len(f.patches) < 3 {
		t.Fatalf("%d attempts, want retries until the deadline", len(f.patches))
	}
}

func TestSenderFinalRetryLimit(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), failRate: 1}
	b := newTestBuffer(t)
	opts := fastOpts()
	opts.FinalRetryLimit = 3
	s := NewSender(f, b, opts) // empty log: only PUTs
	err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateSuccess})
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("err = %v", err)
	}
	if len(f.puts) != 3 {
		t.Fatalf("%d PUTs, want 3", len(f.puts))
	}
}

func TestSenderFinalPatch404StillSubmitsState(t *testing.T) {
	b := newTestBuffer(t)
	mustWrite(t, b, "log")
	api := &notFoundAPI{}
	s := NewSender(api, b, fastOpts())
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	if api.patches != 1 || api.puts != 1 {
		t.Fatalf("patches %d puts %d, want 1 and 1", api.patches, api.puts)
	}
}

type notFoundAPI struct{ patches, puts int }

func (a *notFoundAPI) PatchTrace(context.Context, int64, string, []byte, int64, bool) gitlab.PatchResult {
	a.patches++
	return gitlab.PatchResult{State: gitlab.PatchNotFound, StatusCode: 404}
}

func (a *notFoundAPI) UpdateJob(context.Context, int64, string, gitlab.UpdateJobRequest) gitlab.UpdateResult {
	a.puts++
	return gitlab.UpdateResult{State: gitlab.UpdateSucceeded, StatusCode: 200}
}

func TestSenderKeepAlive(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1))}
	b := newTestBuffer(t)
	opts := fastOpts()
	opts.UpdateInterval = 2 * time.Millisecond
	opts.ForceSendInterval = 40 * time.Millisecond
	s := NewSender(f, b, opts)
	start := time.Now()
	s.Start(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.puts)
		f.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keep-alives after 5s, want 3", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := start
	for i, p := range f.puts[:3] {
		if p.State != gitlab.StateRunning || p.Checksum != "crc32:00000000" {
			t.Fatalf("keep-alive %d = %+v", i, p)
		}
		// Never earlier than the force-send interval after the previous
		// success (lower bound only: the machine may be slow).
		if gap := f.putTimes[i].Sub(prev); gap < opts.ForceSendInterval {
			t.Fatalf("keep-alive %d after %v, want >= %v", i, gap, opts.ForceSendInterval)
		}
		prev = f.putTimes[i]
	}
}

func TestSenderCancelAndAbort(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), cancelOn: 2, abortOn: 4}
	b := newTestBuffer(t)
	opts := fastOpts()
	opts.PatchLimit = 1
	s := NewSender(f, b, opts)
	mustWrite(t, b, "abcdefgh")
	s.Start(context.Background())
	select {
	case <-s.Canceling():
	case <-time.After(5 * time.Second):
		t.Fatal("Canceling not closed")
	}
	select {
	case <-s.Aborted():
	case <-time.After(5 * time.Second):
		t.Fatal("Aborted not closed")
	}
	// The loop stops on abort: no more calls until Finish.
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("loop still running after abort")
	}
	f.mu.Lock()
	if f.afterAbort != 0 {
		t.Errorf("%d calls after the abort answer", f.afterAbort)
	}
	f.mu.Unlock()
	err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateFailed})
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("Finish = %v, want ErrAborted", err)
	}
}

func TestSenderCancelOnUpdate(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), cancelOn: 1}
	s := NewSender(f, newTestBuffer(t), fastOpts())
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Canceling():
	default:
		t.Fatal("Canceling not closed by a PUT answer")
	}
	select {
	case <-s.Aborted():
		t.Fatal("Aborted closed")
	default:
	}
}

// TestSenderFinishWaitsForLoop: a PATCH in flight is interrupted and the
// loop has exited when Finish returns.
func TestSenderFinishWaitsForLoop(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), blockPatch: true}
	b := newTestBuffer(t)
	mustWrite(t, b, "x")
	s := NewSender(f, b, fastOpts())
	s.Start(context.Background())
	time.Sleep(20 * time.Millisecond) // let the loop block in PATCH
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = s.Finish(ctx, gitlab.UpdateJobRequest{State: gitlab.StateSuccess})
	select {
	case <-s.done:
	default:
		t.Fatal("loop goroutine still running after Finish")
	}
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{}); err == nil {
		t.Fatal("second Finish accepted")
	}
}

func TestSenderUpdateIntervalFromGitLab(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1)), interval: 20 * time.Minute}
	b := newTestBuffer(t)
	mustWrite(t, b, "x")
	s := NewSender(f, b, fastOpts())
	s.tick(context.Background())
	if s.interval != MaxUpdateInterval {
		t.Fatalf("interval %v, want capped at %v", s.interval, MaxUpdateInterval)
	}
	f.interval = 0
	s.tick(context.Background())
	if s.interval != MaxUpdateInterval {
		t.Fatalf("interval %v changed by an answer without the header", s.interval)
	}
}

type recordHandler struct {
	mu   sync.Mutex
	recs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h } // test only: attrs folded below
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.recs = append(h.recs, sb.String())
	h.mu.Unlock()
	return nil
}

func TestSenderLogsStoryWithoutToken(t *testing.T) {
	f := &fakeGitLab{rng: rand.New(rand.NewPCG(1, 1))}
	b := newTestBuffer(t)
	mustWrite(t, b, strings.Repeat("y", 100))
	h := &recordHandler{}
	var text bytes.Buffer
	opts := fastOpts()
	opts.Logger = slog.New(multiHandler{h, slog.NewTextHandler(&text, nil)}).With("job", 42)
	s := NewSender(f, b, opts)
	if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Count(line, "job=42") != 1 {
			t.Errorf("job attribute not exactly once: %s", line)
		}
	}
	for _, want := range []string{"job=42", "sent-log=0-99", "status=202", "kind=final", "status=200", "checksum=crc32:"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "SECRET") {
		t.Errorf("token in log:\n%s", out)
	}
	if f.tokenSeen[0] != testToken {
		t.Errorf("API got token %q", f.tokenSeen[0])
	}
}

type multiHandler []slog.Handler

func (m multiHandler) Enabled(context.Context, slog.Level) bool { return true }
func (m multiHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range m {
		_ = h.Handle(ctx, r.Clone())
	}
	return nil
}
func (m multiHandler) WithAttrs(a []slog.Attr) slog.Handler {
	out := make(multiHandler, len(m))
	for i, h := range m {
		out[i] = h.WithAttrs(a)
	}
	return out
}
func (m multiHandler) WithGroup(g string) slog.Handler {
	out := make(multiHandler, len(m))
	for i, h := range m {
		out[i] = h.WithGroup(g)
	}
	return out
}

// The real client and buffer fit the consumer interfaces.
var (
	_ API    = (*gitlab.Client)(nil)
	_ Source = (*Buffer)(nil)
)
