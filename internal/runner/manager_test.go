package runner

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// fakeAPI is a minimal GitLab: a queue of job bodies, a trace store and the
// updates received.
type fakeAPI struct {
	mu       sync.Mutex
	queue    [][]byte
	traces   map[int64]*bytes.Buffer
	updates  map[int64][]gitlab.UpdateJobRequest
	requests int
	// confirm answers the two-phase confirmation.
	confirm gitlab.UpdateState
	// cancelAfter makes responses carry Job-Status: canceling once the
	// trace holds this many bytes (0 = never).
	cancelAfter int
	forbidden   bool
}

func newFakeAPI(bodies ...[]byte) *fakeAPI {
	return &fakeAPI{queue: bodies, traces: map[int64]*bytes.Buffer{}, updates: map[int64][]gitlab.UpdateJobRequest{}}
}

func (f *fakeAPI) RequestJob(ctx context.Context, systemID string) gitlab.RequestJobResult {
	f.mu.Lock()
	f.requests++
	if f.forbidden {
		f.mu.Unlock()
		return gitlab.RequestJobResult{Status: gitlab.JobForbidden, Healthy: false}
	}
	if len(f.queue) > 0 {
		b := f.queue[0]
		f.queue = f.queue[1:]
		f.mu.Unlock()
		return gitlab.RequestJobResult{Status: gitlab.JobReceived, Healthy: true, Body: b}
	}
	f.mu.Unlock()
	select { // a short long-poll
	case <-time.After(5 * time.Millisecond):
	case <-ctx.Done():
	}
	return gitlab.RequestJobResult{Status: gitlab.NoJob, Healthy: true}
}

func (f *fakeAPI) canceling(id int64) bool {
	return f.cancelAfter > 0 && f.traces[id] != nil && f.traces[id].Len() >= f.cancelAfter
}

func (f *fakeAPI) UpdateJob(ctx context.Context, id int64, token string, req gitlab.UpdateJobRequest) gitlab.UpdateResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates[id] = append(f.updates[id], req)
	if len(f.updates[id]) == 1 && req.State == gitlab.StateRunning && f.confirm != gitlab.UpdateSucceeded {
		return gitlab.UpdateResult{State: f.confirm}
	}
	if req.State != gitlab.StateRunning {
		tr := f.traces[id]
		if tr == nil {
			tr = &bytes.Buffer{}
		}
		want := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(tr.Bytes()))
		if req.Checksum != want {
			return gitlab.UpdateResult{State: gitlab.UpdateTraceValidationFailed}
		}
	}
	return gitlab.UpdateResult{State: gitlab.UpdateSucceeded, CancelRequested: f.canceling(id)}
}

func (f *fakeAPI) PatchTrace(ctx context.Context, id int64, token string, content []byte, offset int64, debug bool) gitlab.PatchResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	tr := f.traces[id]
	if tr == nil {
		tr = &bytes.Buffer{}
		f.traces[id] = tr
	}
	if int64(tr.Len()) != offset {
		return gitlab.PatchResult{State: gitlab.PatchRangeMismatch, NewOffset: int64(tr.Len())}
	}
	tr.Write(content)
	return gitlab.PatchResult{State: gitlab.PatchSucceeded, NewOffset: offset + int64(len(content)), CancelRequested: f.canceling(id)}
}

func (f *fakeAPI) final(id int64) (gitlab.UpdateJobRequest, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.updates[id]
	if len(u) == 0 || u[len(u)-1].State == gitlab.StateRunning {
		return gitlab.UpdateJobRequest{}, false
	}
	return u[len(u)-1], true
}

func (f *fakeAPI) trace(id int64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.traces[id] == nil {
		return ""
	}
	return f.traces[id].String()
}

// fakeExec runs a function as the job.
type fakeExec struct {
	run func(ctx context.Context, j *executor.Job) (executor.Result, error)
}

func (e fakeExec) Run(ctx context.Context, j *executor.Job) (executor.Result, error) {
	return e.run(ctx, j)
}

func payload(id int64, extra string) []byte {
	return []byte(fmt.Sprintf(`{"id":%d,"token":"glcbt-job%d","job_info":{"project_id":7},
		"steps":[{"name":"script","script":["true"],"when":"on_success"}],
		"variables":[{"key":"SECRET","value":"hunter2-secret","masked":true}]%s}`, id, id, extra))
}

func newTestManager(t *testing.T, api *fakeAPI, ex executor.Executor, opts Options) *Manager {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.TraceUpdateInterval = 10 * time.Millisecond
	opts.TraceDir = t.TempDir()
	m, err := New(Settings{
		Concurrent: 2, CheckInterval: 10 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		Runners: []*Runner{{Name: "test", ShortToken: "abc", Key: "k", API: api, Executor: ex, ExecutorName: "fake"}},
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func runUntil(t *testing.T, m *Manager, cond func() bool) {
	t.Helper()
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-deadline:
			m.Abort()
			<-done
			t.Fatal("condition not reached within 10 s")
		case <-time.After(5 * time.Millisecond):
		}
	}
	m.Stop()
	<-done
}

func TestJobSuccessAndMasking(t *testing.T) {
	api := newFakeAPI(payload(1, ""))
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		io.WriteString(j.Trace, "the secret is hunter2-")
		io.WriteString(j.Trace, "secret, ok\n")
		return executor.Result{Success: true}, nil
	}}
	m := newTestManager(t, api, ex, Options{})
	runUntil(t, m, func() bool { _, ok := api.final(1); return ok })
	f, _ := api.final(1)
	if f.State != gitlab.StateSuccess {
		t.Fatalf("final state = %q; want success", f.State)
	}
	tr := api.trace(1)
	if strings.Contains(tr, "hunter2-secret") || !strings.Contains(tr, "the secret is [MASKED], ok") {
		t.Fatalf("trace not masked as expected:\n%s", tr)
	}
}

func TestMalformedPayloadFailsThatJobOnly(t *testing.T) {
	bad := []byte(`{"id":2,"token":"glcbt-job2","steps":"not a list"}`)
	api := newFakeAPI(bad, payload(3, ""))
	ran := make(chan int64, 2)
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		ran <- j.Payload.ID
		return executor.Result{Success: true}, nil
	}}
	m := newTestManager(t, api, ex, Options{})
	runUntil(t, m, func() bool {
		_, ok2 := api.final(2)
		_, ok3 := api.final(3)
		return ok2 && ok3
	})
	f2, _ := api.final(2)
	if f2.State != gitlab.StateFailed || f2.FailureReason != "runner_system_failure" {
		t.Fatalf("malformed job: final = %+v; want failed runner_system_failure", f2)
	}
	if !strings.Contains(api.trace(2), "steps") {
		t.Fatalf("trace of the malformed job does not name the bad field:\n%s", api.trace(2))
	}
	if f3, _ := api.final(3); f3.State != gitlab.StateSuccess {
		t.Fatalf("next job: final = %+v; want success", f3)
	}
	if id := <-ran; id != 3 {
		t.Fatalf("executor ran job %d; want only 3", id)
	}
}

func TestConfirmAbortDropsJob(t *testing.T) {
	api := newFakeAPI(payload(4, ""))
	api.confirm = gitlab.UpdateAbort
	var ran bool
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		ran = true
		return executor.Result{Success: true}, nil
	}}
	m := newTestManager(t, api, ex, Options{MaxBuilds: 1})
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run-single with max-builds 1 did not stop")
	}
	if ran {
		t.Fatal("a job GitLab took back at confirmation was run")
	}
	if len(api.updates[4]) != 1 {
		t.Fatalf("updates = %d; want only the confirmation", len(api.updates[4]))
	}
}

func TestGracefulCancelReachesExecutor(t *testing.T) {
	api := newFakeAPI(payload(5, ""))
	api.cancelAfter = 1
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		io.WriteString(j.Trace, "working\n")
		select {
		case <-j.GracefulCancel:
			return executor.Result{FailureReason: "job_canceled"}, nil
		case <-time.After(10 * time.Second):
			return executor.Result{Success: true}, nil
		}
	}}
	m := newTestManager(t, api, ex, Options{})
	runUntil(t, m, func() bool { _, ok := api.final(5); return ok })
	if f, _ := api.final(5); f.State != gitlab.StateFailed {
		t.Fatalf("final = %+v; want failed", f)
	}
}

func TestAbortReportsRunningJobsFailed(t *testing.T) {
	api := newFakeAPI(payload(6, ""))
	started := make(chan struct{})
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		close(started)
		<-ctx.Done()
		return executor.Result{FailureReason: "script_failure", ExitCode: 143}, nil
	}}
	m := newTestManager(t, api, ex, Options{})
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	<-started
	m.Abort()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("manager did not stop after Abort")
	}
	f, ok := api.final(6)
	if !ok || f.State != gitlab.StateFailed || f.FailureReason != "runner_system_failure" {
		t.Fatalf("final = %+v (%v); want failed runner_system_failure", f, ok)
	}
}

func TestUnhealthyRunnerStopsAsking(t *testing.T) {
	api := newFakeAPI()
	api.forbidden = true
	m := newTestManager(t, api, fakeExec{}, Options{})
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	time.Sleep(300 * time.Millisecond)
	m.Stop()
	<-done
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.requests != 3 {
		t.Fatalf("requests = %d; want 3 (unhealthy_requests_limit) then a pause", api.requests)
	}
}

// A job another manager took over is neither failed nor reported: no
// final update, no error in its log.
func TestHandedOverJobIsNotReported(t *testing.T) {
	api := newFakeAPI(payload(9, ""))
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		io.WriteString(j.Trace, "part one\n")
		return executor.Result{}, fmt.Errorf("pod p: %w", executor.ErrHandedOver)
	}}
	m := newTestManager(t, api, ex, Options{MaxBuilds: 1})
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.Abort()
		<-done
		t.Fatal("the manager did not stop after its one job")
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, u := range api.updates[9] {
		if u.State != gitlab.StateRunning {
			t.Fatalf("a handed-over job was reported %q", u.State)
		}
	}
	if tr := api.traces[9]; tr != nil && strings.Contains(tr.String(), "ERROR") {
		t.Fatalf("a handed-over job's log got an error:\n%s", tr)
	}
}
