package gitlab

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

const (
	testRunnerToken = "glrt-RUNNERSECRET123"
	testJobToken    = "glcbt-JOBSECRET456"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorded is one request as the fake GitLab saw it.
type recorded struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

// fakeGitLab records requests and answers with a handler.
type fakeGitLab struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []recorded
	handle func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newFakeGitLab(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeGitLab {
	t.Helper()
	f := &fakeGitLab{t: t, handle: handle}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeGitLab) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.t.Errorf("read request body: %v", err)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
	f.mu.Unlock()
	f.handle(w, r, body)
}

func (f *fakeGitLab) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func (f *fakeGitLab) last() recorded {
	f.t.Helper()
	r := f.requests()
	if len(r) == 0 {
		f.t.Fatal("no request reached the fake GitLab")
	}
	return r[len(r)-1]
}

// newTestClient builds a client for url with fast retries and a captured
// debug log.
func newTestClient(t *testing.T, url, token string, mod ...func(*Options)) (*Client, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts := Options{
		Version:    VersionInfo{Name: "podrunner", Version: "1.2.3", Revision: "abcdef01", Branch: "main"},
		Executor:   "shell",
		Shell:      "bash",
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MinBackoff: time.Millisecond,
		MaxBackoff: 4 * time.Millisecond,
		// Tests check the token-free log separately; keep the transport stable.
		ArtifactRetryWait: time.Millisecond,
	}
	for _, m := range mod {
		m(&opts)
	}
	c, err := NewClient(Credentials{URL: url, Token: token}, opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	return c, logs
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func decodeBody(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("request body is not JSON: %v: %q", err, b)
	}
	return m
}

func rawFields(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("request body is not a JSON object: %v: %q", err, b)
	}
	return m
}
