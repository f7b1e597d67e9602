package gitlab

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// uploadSeen is what the fake saw of one multipart upload.
type uploadSeen struct {
	path, query, jobToken, field, filename, content string
	chunked                                         bool
}

func parseUpload(t *testing.T, r *http.Request, body []byte) uploadSeen {
	t.Helper()
	s := uploadSeen{path: r.URL.Path, query: r.URL.RawQuery, jobToken: r.Header.Get("Job-Token")}
	s.chunked = len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		return s
	}
	mr := multipart.NewReader(strings.NewReader(string(body)), params["boundary"])
	p, err := mr.NextPart()
	if err != nil {
		t.Errorf("multipart: %v", err)
		return s
	}
	b, _ := io.ReadAll(p)
	s.field, s.filename, s.content = p.FormName(), p.FileName(), string(b)
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("more than one part: %v", err)
	}
	return s
}

func opener(content string, opens *atomic.Int32) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		opens.Add(1)
		return io.NopCloser(strings.NewReader(content)), nil
	}
}

func TestUploadArtifacts(t *testing.T) {
	var mu sync.Mutex
	var seen []uploadSeen
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		s := parseUpload(t, r, body)
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
		writeJSON(w, http.StatusCreated, map[string]any{})
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	tests := []struct {
		opts      ArtifactsOptions
		wantQuery string
		wantFile  string
	}{
		{ArtifactsOptions{Name: "build", Format: "zip", Type: "archive", ExpireIn: "1 week"}, "artifact_format=zip&artifact_type=archive&expire_in=1+week", "build.zip"},
		{ArtifactsOptions{}, "", "artifacts.zip"},
		{ArtifactsOptions{Name: "junit", Format: "gzip", Type: "junit"}, "artifact_format=gzip&artifact_type=junit", "junit.gz"},
		{ArtifactsOptions{Name: "report.json", Format: "raw", Type: "dotenv"}, "artifact_format=raw&artifact_type=dotenv", "report.json"},
		{ArtifactsOptions{Name: "../../etc/x", Format: "tarzstd"}, "artifact_format=tarzstd", "x.tar.zst"},
	}
	for _, tt := range tests {
		if err := c.UploadArtifacts(context.Background(), 4711, testJobToken, tt.opts, strings.NewReader("PK-archive")); err != nil {
			t.Fatalf("%+v: %v", tt.opts, err)
		}
		mu.Lock()
		s := seen[len(seen)-1]
		mu.Unlock()
		want := uploadSeen{path: "/api/v4/jobs/4711/artifacts", query: tt.wantQuery, jobToken: testJobToken,
			field: "file", filename: tt.wantFile, content: "PK-archive", chunked: true}
		if s != want {
			t.Errorf("%+v: server saw %+v, want %+v", tt.opts, s, want)
		}
	}
}

func TestUploadArtifactsStatuses(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		oneShot   bool
		attempts  int
		opens     int32
		target    error
		wantErr   string
		noRetries bool
	}{
		{name: "201", status: 201, attempts: 1, opens: 1},
		{name: "403 no retry", status: 403, attempts: 1, opens: 1, target: ErrForbidden, wantErr: "403"},
		{name: "413 no retry", status: 413, attempts: 1, opens: 1, target: ErrTooLarge, wantErr: "artifacts too large: raise the project's maximum artifacts size or upload less"},
		{name: "400 no retry", status: 400, attempts: 1, opens: 1, wantErr: "400"},
		{name: "404 no retry", status: 404, attempts: 1, opens: 1, wantErr: "404"},
		{name: "429 three tries of five attempts", status: 429, attempts: 15, opens: 15, wantErr: "429"},
		{name: "500 three tries of five attempts", status: 500, attempts: 15, opens: 15, wantErr: "500"},
		{name: "503 six tries of five attempts", status: 503, attempts: 30, opens: 30, wantErr: "service unavailable"},
		{name: "500 one-shot body", status: 500, oneShot: true, attempts: 1, wantErr: "500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got atomic.Int32
			f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				got.Add(1)
				if s := parseUpload(t, r, body); s.content != "data" {
					t.Errorf("attempt sent %q", s.content)
				}
				w.WriteHeader(tt.status)
			})
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			var opens atomic.Int32
			var err error
			if tt.oneShot {
				err = c.UploadArtifacts(context.Background(), 1, testJobToken, ArtifactsOptions{}, strings.NewReader("data"))
			} else {
				err = c.UploadArtifactsFrom(context.Background(), 1, testJobToken, ArtifactsOptions{}, opener("data", &opens))
			}
			if int(got.Load()) != tt.attempts {
				t.Errorf("%d attempts, want %d", got.Load(), tt.attempts)
			}
			if !tt.oneShot && opens.Load() != tt.opens {
				t.Errorf("body opened %d times, want %d", opens.Load(), tt.opens)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Fatalf("err %v is not %v", err, tt.target)
			}
		})
	}
}

func TestUploadArtifactsRedirect(t *testing.T) {
	var other uploadSeen
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		other = parseUpload(t, r, body)
		w.WriteHeader(http.StatusCreated)
	}))
	defer target.Close()
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Location", target.URL+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	var opens atomic.Int32
	err := c.UploadArtifactsFrom(context.Background(), 9, testJobToken, ArtifactsOptions{Name: "a", Type: "archive"}, opener("zipdata", &opens))
	if err != nil {
		t.Fatal(err)
	}
	if other.content != "zipdata" || other.path != "/api/v4/jobs/9/artifacts" || other.query != "artifact_type=archive" || other.jobToken != testJobToken {
		t.Fatalf("re-upload seen as %+v", other)
	}
	// A one-shot body cannot follow the redirect.
	if err := c.UploadArtifacts(context.Background(), 9, testJobToken, ArtifactsOptions{}, strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "cannot be sent again") {
		t.Fatalf("one-shot redirect: %v", err)
	}
}

func TestUploadArtifactsOpenError(t *testing.T) {
	f := serveAnswer(t, answer{status: 201})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	err := c.UploadArtifactsFrom(context.Background(), 1, testJobToken, ArtifactsOptions{}, func() (io.ReadCloser, error) {
		return nil, errors.New("archive missing")
	})
	if err == nil || !strings.Contains(err.Error(), "archive missing") {
		t.Fatalf("err = %v", err)
	}
}

func TestDownloadArtifacts(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		attempts int
		target   error
	}{
		{name: "200", status: 200, attempts: 1},
		{name: "401", status: 401, attempts: 1, target: ErrForbidden},
		{name: "403", status: 403, attempts: 1, target: ErrForbidden},
		{name: "404", status: 404, attempts: 1, target: ErrNotFound},
		{name: "400 three tries", status: 400, attempts: 3},
		{name: "502 three tries of five attempts", status: 502, attempts: 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				w.WriteHeader(tt.status)
				if tt.status == 200 {
					_, _ = w.Write([]byte("archive-bytes"))
				}
			})
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			rc, err := c.DownloadArtifacts(context.Background(), 77, "glcbt-DEPTOKEN")
			if n := len(f.requests()); n != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
			r := f.last()
			if r.Method != http.MethodGet || r.Path != "/api/v4/jobs/77/artifacts" || r.Header.Get("Job-Token") != "glcbt-DEPTOKEN" {
				t.Fatalf("request %s %s token %q", r.Method, r.Path, r.Header.Get("Job-Token"))
			}
			if tt.status == 200 {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(rc)
				_ = rc.Close()
				if string(b) != "archive-bytes" {
					t.Fatalf("body %q", b)
				}
				return
			}
			if err == nil || (tt.target != nil && !errors.Is(err, tt.target)) {
				t.Fatalf("err = %v, want %v", err, tt.target)
			}
		})
	}
}

// TestDownloadArtifactsRedirectDropsToken: object storage on another host
// must not see the job token.
func TestDownloadArtifactsRedirectDropsToken(t *testing.T) {
	var storageToken atomic.Value
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageToken.Store(r.Header.Get("Job-Token") + r.Header.Get("Runner-Token"))
		_, _ = w.Write([]byte("from-storage"))
	}))
	defer storage.Close()
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		http.Redirect(w, r, storage.URL+"/bucket/obj?sig=1", http.StatusFound)
	})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	rc, err := c.DownloadArtifacts(context.Background(), 1, testJobToken)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if string(b) != "from-storage" {
		t.Fatalf("body %q", b)
	}
	if got, _ := storageToken.Load().(string); got != "" {
		t.Fatalf("object storage received token %q", got)
	}
}

func TestArtifactBackoff(t *testing.T) {
	for _, tt := range []struct {
		retry int
		want  time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {10, 30 * time.Second}} {
		if got := artifactBackoff(time.Second, tt.retry); got != tt.want {
			t.Errorf("retry %d: wait %v, want %v", tt.retry, got, tt.want)
		}
	}
}
