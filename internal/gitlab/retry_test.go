package gitlab

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetryStatuses(t *testing.T) {
	tests := []struct {
		status   int
		attempts int
	}{
		{408, 5}, {429, 5}, {500, 5}, {502, 5}, {503, 5}, {504, 5}, {512, 5}, {599, 5},
		{400, 1}, {401, 1}, {403, 1}, {404, 1}, {409, 1}, {412, 1}, {501, 1}, {505, 1}, {511, 1},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			f := serveAnswer(t, answer{status: tt.status})
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			res := c.UpdateJob(context.Background(), 1, testJobToken, UpdateJobRequest{State: StateRunning, Checksum: "crc32:00000001", Bytesize: 1})
			reqs := f.requests()
			if len(reqs) != tt.attempts {
				t.Fatalf("%d attempts, want %d", len(reqs), tt.attempts)
			}
			for i, r := range reqs {
				if !bytes.Equal(r.Body, reqs[0].Body) || len(r.Body) == 0 {
					t.Fatalf("attempt %d body %q differs from first %q", i+1, r.Body, reqs[0].Body)
				}
			}
			if res.PushedBack != (tt.attempts > 1) {
				t.Errorf("PushedBack = %v", res.PushedBack)
			}
		})
	}
}

func TestRetryThenSuccess(t *testing.T) {
	var n atomic.Int32
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if n.Add(1) <= 2 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	res := c.PatchTrace(context.Background(), 1, testJobToken, []byte("abc"), 0, false)
	if res.State != PatchSucceeded || res.NewOffset != 3 || !res.PushedBack || res.StatusCode != 202 {
		t.Fatalf("got %+v", res)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts", len(reqs))
	}
	for _, r := range reqs {
		if string(r.Body) != "abc" || r.Header.Get("Content-Range") != "0-2" {
			t.Fatalf("retried attempt sent %q with range %q", r.Body, r.Header.Get("Content-Range"))
		}
	}
	if reqs[0].Header.Get("X-Request-Id") == reqs[1].Header.Get("X-Request-Id") {
		t.Error("X-Request-Id reused across attempts")
	}
}

func TestRetryWait(t *testing.T) {
	c, _ := newTestClient(t, "https://gitlab.example.com", "t", func(o *Options) {
		o.MinBackoff, o.MaxBackoff = 100*time.Millisecond, 60*time.Second
	})
	future := time.Now().Add(30 * time.Second).UTC().Format(time.RFC1123)
	past := time.Now().Add(-30 * time.Second).UTC().Format(time.RFC1123)
	tests := []struct {
		name     string
		header   map[string]string
		min, max time.Duration
	}{
		{"Retry-After", map[string]string{"Retry-After": "7"}, 7 * time.Second, 7 * time.Second},
		{"RateLimit-ResetTime", map[string]string{"RateLimit-ResetTime": future}, 28 * time.Second, 30 * time.Second},
		{"ResetTime wins", map[string]string{"RateLimit-ResetTime": future, "Retry-After": "3"}, 28 * time.Second, 30 * time.Second},
		{"past ResetTime falls back", map[string]string{"RateLimit-ResetTime": past, "Retry-After": "3"}, 3 * time.Second, 3 * time.Second},
		{"bad ResetTime falls back", map[string]string{"RateLimit-ResetTime": "tomorrow", "Retry-After": "2"}, 2 * time.Second, 2 * time.Second},
		{"bad Retry-After backs off", map[string]string{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 100 * time.Millisecond, 100 * time.Millisecond},
		{"zero Retry-After backs off", map[string]string{"Retry-After": "0"}, 100 * time.Millisecond, 100 * time.Millisecond},
		{"huge Retry-After capped", map[string]string{"Retry-After": "999999"}, time.Hour, time.Hour},
		{"none", nil, 50 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{Header: http.Header{}}
			for k, v := range tt.header {
				resp.Header.Set(k, v)
			}
			got := c.retryWait(resp, 1)
			if got < tt.min || got > tt.max {
				t.Fatalf("wait %v, want in [%v, %v]", got, tt.min, tt.max)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	minD, maxD := 100*time.Millisecond, 60*time.Second
	for attempt := 1; attempt <= 15; attempt++ {
		full := minD << (attempt - 1)
		if full > maxD {
			full = maxD
		}
		for range 50 {
			d := backoff(minD, maxD, attempt)
			if d < minD || d < full/2 || d > full {
				t.Fatalf("attempt %d: backoff %v outside [%v, %v]", attempt, d, max(minD, full/2), full)
			}
		}
	}
}

// TestRetryAfterHonoured checks through the log that the server's wait was
// used (no timing assertion).
func TestRetryAfterHonoured(t *testing.T) {
	var n atomic.Int32
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c, logs := newTestClient(t, f.srv.URL, testRunnerToken)
	res := c.RequestJob(context.Background(), "s")
	if res.Status != NoJob || !res.PushedBack || len(f.requests()) != 2 {
		t.Fatalf("got %+v after %d requests", res, len(f.requests()))
	}
	if !strings.Contains(logs.String(), "status=429") || !strings.Contains(logs.String(), "wait=1s") {
		t.Fatalf("retry wait not logged as 1s: %s", logs.String())
	}
}

func TestContextCancelDuringBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
		cancel() // the runner shuts down while waiting
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	done := make(chan RequestJobResult, 1)
	go func() { done <- c.RequestJob(ctx, "s") }()
	select {
	case res := <-done:
		if !errors.Is(res.Err, context.Canceled) || res.Status != JobFailed {
			t.Fatalf("got %+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RequestJob kept waiting after the context was canceled")
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("%d attempts after cancel", n)
	}
}

func TestContextCanceledBeforeRequest(t *testing.T) {
	f := serveAnswer(t, answer{status: 204})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := c.PatchTrace(ctx, 1, testJobToken, []byte("x"), 0, false)
	if res.State != PatchFailed || !errors.Is(res.Err, context.Canceled) {
		t.Fatalf("got %+v", res)
	}
}
