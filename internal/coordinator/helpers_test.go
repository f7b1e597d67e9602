package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/job"
)

func newServer(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// makeRepo creates a git repository with .gitlab-ci.yml on branch main.
func makeRepo(t *testing.T, ci string) string {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ann", "GIT_AUTHOR_EMAIL=ann@example.com",
			"GIT_COMMITTER_NAME=Ann", "GIT_COMMITTER_EMAIL=ann@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("add", ".")
	run("commit", "-q", "-m", "first commit\n\nbody line")
	return dir
}

type client struct {
	t    *testing.T
	base string
}

type resp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (c client) do(method, path string, hdr map[string]string, body []byte) resp {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{Code: r.StatusCode, Header: r.Header, Body: b}
}

func (c client) json(method, path string, v any) resp {
	c.t.Helper()
	b, _ := json.Marshal(v)
	return c.do(method, path, map[string]string{"Content-Type": "application/json"}, b)
}

func (c client) requestJob(token, lastUpdate string, features map[string]bool) resp {
	c.t.Helper()
	body := map[string]any{"token": token, "system_id": "s_test00000001",
		"info": map[string]any{"name": "podrunner", "features": features}}
	if lastUpdate != "" {
		body["last_update"] = lastUpdate
	}
	return c.json("POST", "/api/v4/jobs/request", body)
}

func (c client) payload(r resp) *job.Payload {
	c.t.Helper()
	if r.Code != http.StatusCreated {
		c.t.Fatalf("jobs/request = %d %s, want 201", r.Code, r.Body)
	}
	var p job.Payload
	if err := json.Unmarshal(r.Body, &p); err != nil {
		c.t.Fatal(err)
	}
	return &p
}

func (c client) patch(id int64, token string, start int, data string) resp {
	c.t.Helper()
	return c.do("PATCH", fmt.Sprintf("/api/v4/jobs/%d/trace?debug_trace=false", id), map[string]string{
		"JOB-TOKEN": token, "Content-Range": fmt.Sprintf("%d-%d", start, start+len(data)-1), "Content-Type": "text/plain",
	}, []byte(data))
}

func (c client) update(id int64, token, state string, extra map[string]any) resp {
	c.t.Helper()
	body := map[string]any{"token": token, "state": state}
	for k, v := range extra {
		body[k] = v
	}
	return c.json("PUT", fmt.Sprintf("/api/v4/jobs/%d", id), body)
}

func finalOK(trace string) map[string]any {
	return map[string]any{"output": map[string]any{
		"checksum": fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE([]byte(trace))), "bytesize": len(trace)}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const simpleCI = `
stages: [build, test]
variables:
  GLOBAL: g
build:
  stage: build
  tags: [k8s]
  image: alpine:3.20
  services:
    - name: redis:7
      alias: cache
  before_script: [echo before]
  script: [echo hi]
  after_script: [echo after]
  timeout: 10 minutes
  variables:
    JOBVAR: j
test:
  stage: test
  script: [echo test]
`

// setup creates a server with one project and a runner tagged k8s.
func setup(t *testing.T, o Options, ci string) (*Server, client, string) {
	t.Helper()
	s := newServer(t, o)
	if _, err := s.AddProject("group/demo", makeRepo(t, ci)); err != nil {
		t.Fatal(err)
	}
	_, tok := s.CreateRunner(RunnerOptions{Description: "test runner", Tags: []string{"k8s"}, RunUntagged: true})
	return s, client{t: t, base: s.URL()}, tok
}
