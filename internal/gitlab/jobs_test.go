package gitlab

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const payload = `{"id":4711,"token":"glcbt-JOBSECRET456","steps":[{"name":"script","script":["echo hi"]}]}`

func TestGitLabClient_RequestJob(t *testing.T) {
	tests := []struct {
		name        string
		answer      answer
		status      RequestJobStatus
		healthy     bool
		wantBody    bool
		wantErr     string
		forbidden   bool
		pushedBack  bool
		wantAttempt int
	}{
		{name: "201", answer: answer{status: 201, contentType: jsonCT, body: payload, header: map[string]string{"X-Request-Id": "srv-req-1"}}, status: JobReceived, healthy: true, wantBody: true, wantAttempt: 1},
		{name: "201 charset", answer: answer{status: 201, contentType: "application/json; charset=utf-8", body: payload}, status: JobReceived, healthy: true, wantBody: true, wantAttempt: 1},
		{name: "201 non-JSON content type", answer: answer{status: 201, contentType: "text/plain", body: payload}, status: JobFailed, healthy: true, wantErr: "expected application/json", wantAttempt: 1},
		{name: "201 undecodable", answer: answer{status: 201, contentType: jsonCT, body: `{"id":4711,`}, status: JobFailed, healthy: true, wantErr: "not a JSON object", wantAttempt: 1},
		{name: "201 JSON array", answer: answer{status: 201, contentType: jsonCT, body: `[1]`}, status: JobFailed, healthy: true, wantErr: "not a JSON object", wantAttempt: 1},
		{name: "201 empty", answer: answer{status: 201, contentType: jsonCT}, status: JobFailed, healthy: true, wantErr: "not a JSON object", wantAttempt: 1},
		{name: "204", answer: answer{status: 204}, status: NoJob, healthy: true, wantAttempt: 1},
		{name: "403", answer: answer{status: 403, contentType: jsonCT, body: `{"message":"403 Forbidden"}`}, status: JobForbidden, healthy: false, wantErr: "403 Forbidden", forbidden: true, wantAttempt: 1},
		{name: "503 after retries", answer: answer{status: 503}, status: JobUnavailable, healthy: true, wantErr: "unavailable", pushedBack: true, wantAttempt: 5},
		{name: "200 unused", answer: answer{status: 200}, status: JobFailed, healthy: true, wantErr: "200 OK", wantAttempt: 1},
		{name: "202", answer: answer{status: 202}, status: JobFailed, healthy: true, wantErr: "202 Accepted", wantAttempt: 1},
		{name: "400", answer: answer{status: 400}, status: JobFailed, healthy: true, wantErr: "400", wantAttempt: 1},
		{name: "404", answer: answer{status: 404}, status: JobFailed, healthy: true, wantErr: "404", wantAttempt: 1},
		{name: "409 not special", answer: answer{status: 409, contentType: jsonCT, body: `{"message":"409 Conflict"}`}, status: JobFailed, healthy: true, wantErr: "409 Conflict", wantAttempt: 1},
		{name: "412", answer: answer{status: 412}, status: JobFailed, healthy: true, wantErr: "412", wantAttempt: 1},
		{name: "415", answer: answer{status: 415}, status: JobFailed, healthy: true, wantErr: "415", wantAttempt: 1},
		{name: "416", answer: answer{status: 416}, status: JobFailed, healthy: true, wantErr: "416", wantAttempt: 1},
		{name: "422", answer: answer{status: 422}, status: JobFailed, healthy: true, wantErr: "422", wantAttempt: 1},
		{name: "429 after retries", answer: answer{status: 429}, status: JobFailed, healthy: true, wantErr: "429", pushedBack: true, wantAttempt: 5},
		{name: "500 after retries", answer: answer{status: 500}, status: JobFailed, healthy: true, wantErr: "500", pushedBack: true, wantAttempt: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			res := c.RequestJob(context.Background(), "s_0123456789ab")
			if res.Status != tt.status || res.Healthy != tt.healthy || res.PushedBack != tt.pushedBack {
				t.Fatalf("got status %v healthy %v pushedBack %v (err %v); want %v %v %v", res.Status, res.Healthy, res.PushedBack, res.Err, tt.status, tt.healthy, tt.pushedBack)
			}
			if res.StatusCode != tt.answer.status {
				t.Errorf("StatusCode = %d", res.StatusCode)
			}
			if n := len(f.requests()); n != tt.wantAttempt {
				t.Errorf("%d attempts, want %d", n, tt.wantAttempt)
			}
			if tt.wantBody != (string(res.Body) == payload) {
				t.Errorf("Body = %q", res.Body)
			}
			if tt.wantErr == "" {
				if res.Err != nil {
					t.Fatalf("Err = %v", res.Err)
				}
			} else if res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantErr) {
				t.Fatalf("Err = %v, want containing %q", res.Err, tt.wantErr)
			}
			if errors.Is(res.Err, ErrForbidden) != tt.forbidden {
				t.Errorf("errors.Is(ErrForbidden) = %v", !tt.forbidden)
			}
			want := tt.answer.header["X-Request-Id"]
			if want == "" {
				want = f.last().Header.Get("X-Request-Id")
			}
			if res.RequestID != want {
				t.Errorf("RequestID = %q, want %q", res.RequestID, want)
			}
		})
	}
}

func TestRequestJobConnectionErrorIsHealthyFailure(t *testing.T) {
	f := serveAnswer(t, answer{status: 204})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	f.srv.Close()
	res := c.RequestJob(context.Background(), "s")
	if res.Status != JobFailed || !res.Healthy || res.Err == nil || res.StatusCode != 0 {
		t.Fatalf("got %+v", res)
	}
}

// TestRequestJobHungServerCostsOnePoll: a proxy that never answers
// jobs/request must not blind the runner for the transport's 10 minutes.
func TestRequestJobHungServerCostsOnePoll(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c, _ := newTestClient(t, srv.URL, testRunnerToken, func(o *Options) { o.JobRequestTimeout = 300 * time.Millisecond })
	done := make(chan RequestJobResult, 1)
	go func() { done <- c.RequestJob(context.Background(), "s") }()
	select {
	case res := <-done:
		if res.Status != JobFailed || !res.Healthy || res.Err == nil || !strings.Contains(res.Err.Error(), "no answer within 300ms") {
			t.Fatalf("got %+v", res)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing assertion
		t.Fatal("RequestJob still waiting after a minute on a hung server")
	}
	if DefaultJobRequestTimeout <= 50*time.Second {
		t.Errorf("DefaultJobRequestTimeout %v must exceed GitLab's 50 s long poll", DefaultJobRequestTimeout)
	}
}

func TestSetLastUpdate(t *testing.T) {
	var n atomic.Int32
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("X-GitLab-Last-Update", "v1")
			w.WriteHeader(http.StatusNoContent)
		case 2:
			w.WriteHeader(http.StatusNoContent) // no header: keep v1
		case 3:
			w.Header().Set("X-GitLab-Last-Update", "v2")
			w.WriteHeader(http.StatusForbidden) // any status updates it
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	for range 4 {
		c.RequestJob(context.Background(), "s")
	}
	reqs := f.requests()
	for i, want := range []any{nil, "v1", "v1", "v2"} {
		got, ok := decodeBody(t, reqs[i].Body)["last_update"]
		if want == nil && ok || want != nil && got != want {
			t.Errorf("request %d last_update = %v (present %v), want %v", i+1, got, ok, want)
		}
	}
	// Per client: a second client starts without it.
	c2, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	c2.RequestJob(context.Background(), "s")
	if _, ok := decodeBody(t, f.last().Body)["last_update"]; ok {
		t.Error("a new client echoed another client's last_update")
	}
}

func TestUpdateJob(t *testing.T) {
	tests := []struct {
		name      string
		answer    answer
		state     UpdateState
		cancel    bool
		interval  time.Duration
		wantErr   bool
		forbidden bool
		sent      JobState // the state sent; StateFailed when ""
	}{
		{name: "200", answer: answer{status: 200}, state: UpdateSucceeded},
		{name: "200 running", answer: answer{status: 200, header: map[string]string{"Job-Status": "running"}}, state: UpdateSucceeded},
		{name: "200 canceling", answer: answer{status: 200, header: map[string]string{"Job-Status": "canceling"}}, state: UpdateSucceeded, cancel: true},
		{name: "200 canceled", answer: answer{status: 200, header: map[string]string{"Job-Status": "canceled"}}, state: UpdateAbort, wantErr: true},
		// GitLab answers a final update with the state it now holds: the
		// one sent is an acceptance, any other means GitLab ended the job.
		{name: "200 failed as sent", answer: answer{status: 200, header: map[string]string{"Job-Status": "failed"}}, state: UpdateSucceeded},
		{name: "200 failed, running sent", answer: answer{status: 200, header: map[string]string{"Job-Status": "failed"}}, state: UpdateAbort, wantErr: true, sent: StateRunning},
		{name: "200 failed, success sent", answer: answer{status: 200, header: map[string]string{"Job-Status": "failed"}}, state: UpdateAbort, wantErr: true, sent: StateSuccess},
		{name: "202 canceled wins", answer: answer{status: 202, header: map[string]string{"Job-Status": "Canceled"}}, state: UpdateAbort, wantErr: true},
		{name: "202", answer: answer{status: 202}, state: UpdateAcceptedNotComplete},
		{name: "412", answer: answer{status: 412}, state: UpdateTraceValidationFailed},
		{name: "403", answer: answer{status: 403}, state: UpdateAbort, wantErr: true, forbidden: true},
		{name: "404", answer: answer{status: 404}, state: UpdateAbort, wantErr: true},
		{name: "400", answer: answer{status: 400}, state: UpdateFailed, wantErr: true},
		{name: "409", answer: answer{status: 409}, state: UpdateFailed, wantErr: true},
		{name: "413", answer: answer{status: 413}, state: UpdateFailed, wantErr: true},
		{name: "416", answer: answer{status: 416}, state: UpdateFailed, wantErr: true},
		{name: "422", answer: answer{status: 422}, state: UpdateFailed, wantErr: true},
		{name: "500 after retries", answer: answer{status: 500}, state: UpdateFailed, wantErr: true},
		{name: "503 after retries", answer: answer{status: 503}, state: UpdateFailed, wantErr: true},
		{name: "interval", answer: answer{status: 200, header: map[string]string{"X-GitLab-Trace-Update-Interval": "30"}}, state: UpdateSucceeded, interval: 30 * time.Second},
		{name: "interval capped", answer: answer{status: 200, header: map[string]string{"X-GitLab-Trace-Update-Interval": "3600"}}, state: UpdateSucceeded, interval: 15 * time.Minute},
		{name: "interval zero ignored", answer: answer{status: 200, header: map[string]string{"X-GitLab-Trace-Update-Interval": "0"}}, state: UpdateSucceeded},
		{name: "interval negative ignored", answer: answer{status: 200, header: map[string]string{"X-GitLab-Trace-Update-Interval": "-5"}}, state: UpdateSucceeded},
		{name: "interval on 202 with canceling", answer: answer{status: 202, header: map[string]string{"X-GitLab-Trace-Update-Interval": "7", "Job-Status": "canceling"}}, state: UpdateAcceptedNotComplete, cancel: true, interval: 7 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			sent := tt.sent
			if sent == "" {
				sent = StateFailed
			}
			res := c.UpdateJob(context.Background(), 4711, testJobToken, UpdateJobRequest{State: sent, FailureReason: "script_failure", ExitCode: 3, Checksum: "crc32:1a2b3c4d", Bytesize: 12})
			if res.State != tt.state || res.CancelRequested != tt.cancel || res.UpdateInterval != tt.interval {
				t.Fatalf("got state %v cancel %v interval %v (err %v); want %v %v %v", res.State, res.CancelRequested, res.UpdateInterval, res.Err, tt.state, tt.cancel, tt.interval)
			}
			if (res.Err != nil) != tt.wantErr || errors.Is(res.Err, ErrForbidden) != tt.forbidden {
				t.Fatalf("Err = %v", res.Err)
			}
			if res.StatusCode != tt.answer.status {
				t.Errorf("StatusCode = %d", res.StatusCode)
			}
		})
	}
}

func TestUpdateJobBody(t *testing.T) {
	f := serveAnswer(t, answer{status: 200})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	ctx := context.Background()
	tests := []struct {
		name string
		call func() UpdateResult
		want map[string]string // key → raw JSON; "" means absent
	}{
		{"final failed", func() UpdateResult {
			return c.UpdateJob(ctx, 1, testJobToken, UpdateJobRequest{State: StateFailed, FailureReason: "script_failure", ExitCode: 3, Checksum: "crc32:1a2b3c4d", Bytesize: 12345})
		}, map[string]string{
			"state": `"failed"`, "failure_reason": `"script_failure"`, "exit_code": `3`, "checksum": `"crc32:1a2b3c4d"`,
			"output": `{"checksum":"crc32:1a2b3c4d","bytesize":12345}`, "token": `"` + testJobToken + `"`,
		}},
		{"final success", func() UpdateResult {
			return c.UpdateJob(ctx, 1, testJobToken, UpdateJobRequest{State: StateSuccess, Checksum: "crc32:00000000", Bytesize: 0})
		}, map[string]string{
			"state": `"success"`, "failure_reason": "", "exit_code": "", "checksum": `"crc32:00000000"`,
			"output": `{"checksum":"crc32:00000000"}`,
		}},
		{"two-phase confirm", func() UpdateResult { return c.ConfirmJob(ctx, 1, testJobToken) }, map[string]string{
			"state": `"running"`, "failure_reason": "", "exit_code": "", "checksum": "", "output": `{}`,
		}},
		{"keep-alive", func() UpdateResult {
			return c.UpdateJob(ctx, 1, testJobToken, UpdateJobRequest{State: StateRunning, Checksum: "crc32:deadbeef", Bytesize: 9})
		}, map[string]string{
			"state": `"running"`, "output": `{"checksum":"crc32:deadbeef","bytesize":9}`, "exit_code": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := tt.call(); res.State != UpdateSucceeded {
				t.Fatalf("state %v: %v", res.State, res.Err)
			}
			raw := rawFields(t, f.last().Body)
			if _, ok := raw["info"]; !ok {
				t.Error("info missing")
			}
			for k, want := range tt.want {
				got, ok := raw[k]
				if want == "" {
					if ok {
						t.Errorf("%s = %s, want absent", k, got)
					}
					continue
				}
				if string(got) != want {
					t.Errorf("%s = %s, want %s", k, got, want)
				}
			}
		})
	}
}

func TestPatchTrace(t *testing.T) {
	tests := []struct {
		name      string
		answer    answer
		state     PatchState
		offset    int64
		cancel    bool
		interval  time.Duration
		wantErr   bool
		forbidden bool
	}{
		{name: "202", answer: answer{status: 202}, state: PatchSucceeded, offset: 110},
		{name: "202 running", answer: answer{status: 202, header: map[string]string{"Job-Status": "running"}}, state: PatchSucceeded, offset: 110},
		{name: "202 canceling", answer: answer{status: 202, header: map[string]string{"Job-Status": "canceling"}}, state: PatchSucceeded, offset: 110, cancel: true},
		{name: "202 canceled aborts", answer: answer{status: 202, header: map[string]string{"Job-Status": "canceled"}}, state: PatchAbort, offset: 100, wantErr: true},
		{name: "202 failed aborts", answer: answer{status: 202, header: map[string]string{"Job-Status": "failed"}}, state: PatchAbort, offset: 100, wantErr: true},
		{name: "403", answer: answer{status: 403}, state: PatchAbort, offset: 100, wantErr: true, forbidden: true},
		{name: "404", answer: answer{status: 404}, state: PatchNotFound, offset: 100, wantErr: true},
		{name: "416 with Range", answer: answer{status: 416, header: map[string]string{"Range": "0-64"}}, state: PatchRangeMismatch, offset: 64},
		{name: "416 without Range", answer: answer{status: 416}, state: PatchRangeMismatch, offset: 0},
		{name: "416 garbage Range", answer: answer{status: 416, header: map[string]string{"Range": "zero-x"}}, state: PatchRangeMismatch, offset: 0},
		{name: "416 canceled aborts", answer: answer{status: 416, header: map[string]string{"Range": "0-64", "Job-Status": "canceled"}}, state: PatchAbort, offset: 100, wantErr: true},
		{name: "200 unused", answer: answer{status: 200}, state: PatchFailed, offset: 100, wantErr: true},
		{name: "400", answer: answer{status: 400}, state: PatchFailed, offset: 100, wantErr: true},
		{name: "409", answer: answer{status: 409}, state: PatchFailed, offset: 100, wantErr: true},
		{name: "412", answer: answer{status: 412}, state: PatchFailed, offset: 100, wantErr: true},
		{name: "413", answer: answer{status: 413}, state: PatchFailed, offset: 100, wantErr: true},
		{name: "500 after retries", answer: answer{status: 500}, state: PatchFailed, offset: 100, wantErr: true},
		{name: "interval", answer: answer{status: 202, header: map[string]string{"X-GitLab-Trace-Update-Interval": "10"}}, state: PatchSucceeded, offset: 110, interval: 10 * time.Second},
		{name: "interval capped", answer: answer{status: 202, header: map[string]string{"X-GitLab-Trace-Update-Interval": "901"}}, state: PatchSucceeded, offset: 110, interval: 15 * time.Minute},
		{name: "interval garbage", answer: answer{status: 202, header: map[string]string{"X-GitLab-Trace-Update-Interval": "soon"}}, state: PatchSucceeded, offset: 110},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			res := c.PatchTrace(context.Background(), 4711, testJobToken, []byte("0123456789"), 100, false)
			if res.State != tt.state || res.NewOffset != tt.offset || res.CancelRequested != tt.cancel || res.UpdateInterval != tt.interval {
				t.Fatalf("got state %v offset %d cancel %v interval %v (err %v); want %v %d %v %v",
					res.State, res.NewOffset, res.CancelRequested, res.UpdateInterval, res.Err, tt.state, tt.offset, tt.cancel, tt.interval)
			}
			if (res.Err != nil) != tt.wantErr || errors.Is(res.Err, ErrForbidden) != tt.forbidden {
				t.Fatalf("Err = %v", res.Err)
			}
			r := f.last()
			if r.Method != http.MethodPatch || r.Path != "/api/v4/jobs/4711/trace" || r.Query != "debug_trace=false" {
				t.Fatalf("%s %s?%s", r.Method, r.Path, r.Query)
			}
			if r.Header.Get("Content-Range") != "100-109" || r.Header.Get("Content-Type") != "text/plain" ||
				string(r.Body) != "0123456789" || r.Header.Get("Content-Length") != "10" {
				t.Fatalf("headers %v body %q", r.Header, r.Body)
			}
		})
	}
}

func TestPatchTraceContentRangeHeaderValues(t *testing.T) {
	f := serveAnswer(t, answer{status: 202})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	tests := []struct {
		offset  int64
		content string
		want    string
	}{
		{0, "a", "0-0"},
		{0, "hello", "0-4"},
		{5, "world", "5-9"},
		{1 << 20, strings.Repeat("x", 1<<20), "1048576-2097151"},
	}
	for _, tt := range tests {
		res := c.PatchTrace(context.Background(), 1, testJobToken, []byte(tt.content), tt.offset, true)
		r := f.last()
		if got := r.Header.Get("Content-Range"); got != tt.want {
			t.Errorf("offset %d len %d: Content-Range %q, want %q", tt.offset, len(tt.content), got, tt.want)
		}
		if r.Query != "debug_trace=true" {
			t.Errorf("query %q", r.Query)
		}
		if res.NewOffset != tt.offset+int64(len(tt.content)) {
			t.Errorf("NewOffset %d", res.NewOffset)
		}
	}
}

func TestPatchTraceEmptyIsNotSent(t *testing.T) {
	f := serveAnswer(t, answer{status: 202})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	res := c.PatchTrace(context.Background(), 1, testJobToken, nil, 42, false)
	if res.State != PatchSucceeded || res.NewOffset != 42 || res.Err != nil {
		t.Fatalf("got %+v", res)
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("%d requests sent for empty content", n)
	}
}

// TestRangeMismatchPatchTrace resumes from the server's offset as the
// trace sender would.
func TestRangeMismatchPatchTrace(t *testing.T) {
	var have atomic.Int64
	have.Store(3)
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var start, end int64
		parts := strings.SplitN(r.Header.Get("Content-Range"), "-", 2)
		start, _ = strconv.ParseInt(parts[0], 10, 64)
		end, _ = strconv.ParseInt(parts[1], 10, 64)
		if start != have.Load() {
			w.Header().Set("Range", "0-"+strconv.FormatInt(have.Load(), 10))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		have.Store(end + 1)
		w.WriteHeader(http.StatusAccepted)
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	trace := []byte("abcdefghij")
	res := c.PatchTrace(context.Background(), 1, testJobToken, trace[6:], 6, false)
	if res.State != PatchRangeMismatch || res.NewOffset != 3 {
		t.Fatalf("first patch: %+v", res)
	}
	res = c.PatchTrace(context.Background(), 1, testJobToken, trace[res.NewOffset:], res.NewOffset, false)
	if res.State != PatchSucceeded || res.NewOffset != 10 || have.Load() != 10 {
		t.Fatalf("resent patch: %+v, server has %d", res, have.Load())
	}
}
