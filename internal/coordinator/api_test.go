package coordinator

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/job"
)

func TestRegistrationAndVerify(t *testing.T) {
	t.Parallel()
	s := newServer(t, Options{RegistrationToken: "reg-token"})
	c := client{t: t, base: s.URL()}

	tests := []struct {
		name   string
		method string
		path   string
		body   map[string]any
		want   int
	}{
		{"register wrong token", "POST", "/api/v4/runners", map[string]any{"token": "nope"}, 403},
		{"register no token", "POST", "/api/v4/runners", map[string]any{}, 400},
		{"verify unknown", "POST", "/api/v4/runners/verify", map[string]any{"token": "glrt-nope"}, 403},
		{"unregister unknown", "DELETE", "/api/v4/runners", map[string]any{"token": "nope"}, 403},
		{"unregister manager unknown", "DELETE", "/api/v4/runners/managers", map[string]any{"token": "nope", "system_id": "s_1"}, 403},
		{"reset unknown", "POST", "/api/v4/runners/reset_authentication_token", map[string]any{"token": "nope"}, 403},
		{"request unknown", "POST", "/api/v4/jobs/request", map[string]any{"token": "nope"}, 403},
		{"request no token", "POST", "/api/v4/jobs/request", map[string]any{}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := c.json(tt.method, tt.path, tt.body); r.Code != tt.want {
				t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, r.Code, r.Body, tt.want)
			}
		})
	}

	r := c.json("POST", "/api/v4/runners", map[string]any{"token": "reg-token", "description": "d", "tag_list": "a, b", "run_untagged": false})
	if r.Code != 201 {
		t.Fatalf("register = %d %s", r.Code, r.Body)
	}
	var reg struct {
		ID    int64  `json:"id"`
		Token string `json:"token"`
	}
	_ = json.Unmarshal(r.Body, &reg)
	if reg.ID == 0 || reg.Token == "" || strings.HasPrefix(reg.Token, "glrt-") {
		t.Fatalf("register body %s: want id and a legacy (non glrt-) token", r.Body)
	}
	if rs := s.Runners(); len(rs) != 1 || !slices.Equal(rs[0].Tags, []string{"a", "b"}) || rs[0].RunUntagged {
		t.Errorf("runner = %+v", rs)
	}

	// verify stores the runner manager and its features.
	info := map[string]any{"name": "podrunner", "features": map[string]bool{"cancel_gracefully": true}}
	if r := c.json("POST", "/api/v4/runners/verify", map[string]any{"token": reg.Token, "system_id": "s_abc", "info": info}); r.Code != 200 {
		t.Fatalf("verify = %d", r.Code)
	}
	m := s.Runners()[0].Managers
	if len(m) != 1 || m[0].SystemID != "s_abc" || !m[0].Features["cancel_gracefully"] {
		t.Errorf("managers = %+v", m)
	}
	// RUNNER-TOKEN header alone authenticates as well.
	if r := c.do("POST", "/api/v4/runners/verify", map[string]string{"RUNNER-TOKEN": reg.Token, "Content-Type": "application/json"}, []byte(`{}`)); r.Code != 200 {
		t.Errorf("verify with header = %d", r.Code)
	}
	if r := c.json("DELETE", "/api/v4/runners/managers", map[string]any{"token": reg.Token, "system_id": "s_abc"}); r.Code != 204 {
		t.Errorf("delete manager = %d", r.Code)
	}
	r = c.json("POST", "/api/v4/runners/reset_authentication_token", map[string]any{"token": reg.Token})
	var reset struct{ Token string }
	_ = json.Unmarshal(r.Body, &reset)
	if r.Code != 201 || reset.Token == "" || reset.Token == reg.Token {
		t.Fatalf("reset = %d %s", r.Code, r.Body)
	}
	if r := c.json("POST", "/api/v4/runners/verify", map[string]any{"token": reg.Token}); r.Code != 403 {
		t.Errorf("old token after reset = %d, want 403", r.Code)
	}
	if r := c.json("DELETE", "/api/v4/runners", map[string]any{"token": reset.Token}); r.Code != 204 {
		t.Errorf("unregister = %d", r.Code)
	}
	if r := c.json("POST", "/api/v4/runners/verify", map[string]any{"token": reset.Token}); r.Code != 403 {
		t.Errorf("verify after unregister = %d, want 403", r.Code)
	}
}

func TestJobPayload(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	if err := s.SetProjectVariable("group/demo", ProjectVariable{Key: "SECRET", Value: "s3cr3t-value", Masked: true}); err != nil {
		t.Fatal(err)
	}
	_ = s.SetProjectVariable("group/demo", ProjectVariable{Key: "KUBECONFIG", Value: "apiVersion: v1", File: true})
	_ = s.SetProjectVariable("group/demo", ProjectVariable{Key: "PROT", Value: "p", Protected: true})
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	if p.ID != pl.Jobs["build"] || !strings.HasPrefix(p.Token, "glcbt-") {
		t.Fatalf("payload id %d token %q", p.ID, p.Token)
	}
	if p.JobInfo.Name != "build" || p.JobInfo.Stage != "build" || p.JobInfo.ProjectFullPath != "group/demo" || p.JobInfo.PipelineID != pl.ID {
		t.Errorf("job_info = %+v", p.JobInfo)
	}
	g := p.GitInfo
	wantRepo := strings.Replace(s.URL(), "http://", "http://gitlab-ci-token:"+p.Token+"@", 1) + "/group/demo.git"
	if g.RepoURL != wantRepo || g.Sha != pl.Sha || g.Ref != "main" || g.RefType != "branch" || g.Depth != 20 || g.Protected == nil || !*g.Protected {
		t.Errorf("git_info = %+v", g)
	}
	wantSpecs := []string{fmt.Sprintf("+refs/pipelines/%d:refs/pipelines/%d", pl.ID, pl.ID), "+refs/heads/main:refs/remotes/origin/main"}
	if !slices.Equal(g.Refspecs, wantSpecs) {
		t.Errorf("refspecs = %q", g.Refspecs)
	}
	if p.RunnerInfo.Timeout != 600 {
		t.Errorf("timeout = %d, want 600", p.RunnerInfo.Timeout)
	}
	if len(p.Steps) != 2 || !slices.Equal(p.Steps[0].Script, []string{"echo before", "echo hi"}) || p.Steps[0].When != "on_success" ||
		p.Steps[1].Name != "after_script" || p.Steps[1].When != "always" || !p.Steps[1].AllowFailure {
		t.Errorf("steps = %+v", p.Steps)
	}
	if p.Image.Name != "alpine:3.20" || len(p.Services) != 1 || p.Services[0].Alias != "cache" {
		t.Errorf("image %+v services %+v", p.Image, p.Services)
	}
	if !p.Features.TraceSections || !slices.Contains(p.Features.TokenMaskPrefixes, "glcbt-") || !slices.Contains(p.Features.FailureReasons, "script_failure") {
		t.Errorf("features = %+v", p.Features)
	}
	vars := map[string]int{}
	for i, v := range p.Variables {
		vars[v.Key] = i
	}
	get := func(k string) (string, bool, bool, bool) {
		i, ok := vars[k]
		if !ok {
			t.Errorf("variable %s missing", k)
			return "", false, false, false
		}
		v := p.Variables[i]
		return v.Value, v.Public, v.Masked, v.File
	}
	if v, pub, masked, _ := get("CI_JOB_TOKEN"); v != p.Token || pub || !masked {
		t.Errorf("CI_JOB_TOKEN public=%v masked=%v", pub, masked)
	}
	if v, pub, masked, _ := get("SECRET"); v != "s3cr3t-value" || pub || !masked {
		t.Errorf("SECRET public=%v masked=%v", pub, masked)
	}
	if _, _, _, file := get("KUBECONFIG"); !file {
		t.Error("KUBECONFIG not a file variable")
	}
	if v, _, _, _ := get("PROT"); v != "p" {
		t.Error("protected variable missing on the protected default branch")
	}
	if v, pub, _, _ := get("CI_REPOSITORY_URL"); v != wantRepo || pub {
		t.Errorf("CI_REPOSITORY_URL = %q public=%v", v, pub)
	}
	for k, want := range map[string]string{
		"CI": "true", "GITLAB_CI": "true", "CI_JOB_NAME": "build", "CI_JOB_STAGE": "build",
		"CI_COMMIT_SHA": pl.Sha, "CI_COMMIT_SHORT_SHA": pl.Sha[:8], "CI_COMMIT_REF_NAME": "main",
		"CI_COMMIT_BRANCH": "main", "CI_COMMIT_TITLE": "first commit", "CI_PROJECT_PATH": "group/demo",
		"CI_PROJECT_NAME": "demo", "CI_PROJECT_NAMESPACE": "group", "CI_PROJECT_PATH_SLUG": "group-demo",
		"CI_SERVER_URL": s.URL(), "CI_SERVER_PROTOCOL": "http", "CI_DEFAULT_BRANCH": "main",
		"CI_RUNNER_TAGS": `["k8s"]`, "CI_RUNNER_DESCRIPTION": "test runner", "CI_PIPELINE_SOURCE": "push",
		"GLOBAL": "g", "JOBVAR": "j", "CI_COMMIT_AUTHOR": "Ann <ann@example.com>", "GITLAB_USER_LOGIN": "root",
		"CI_BUILD_REF_NAME": "main",
	} {
		if v, _, _, _ := get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if vars["SECRET"] < vars["JOBVAR"] || vars["JOBVAR"] < vars["CI_JOB_ID"] {
		t.Error("variable order: predefined, YAML, project variables expected")
	}
}

func TestLongPolling(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{LongPollTimeout: 300 * time.Millisecond}, simpleCI)

	// No job: 204 with a queue version at once.
	r := c.requestJob(tok, "", nil)
	last := r.Header.Get("X-GitLab-Last-Update")
	if r.Code != 204 || last == "" {
		t.Fatalf("first request = %d last_update %q", r.Code, last)
	}
	// With a stale/unknown last_update: answered at once.
	start := time.Now()
	if r := c.requestJob(tok, "stale", nil); r.Code != 204 || time.Since(start) > 250*time.Millisecond {
		t.Errorf("stale last_update = %d after %v, want an immediate 204", r.Code, time.Since(start))
	}
	// Current last_update, nothing queued: held until the timeout.
	start = time.Now()
	r = c.requestJob(tok, last, nil)
	if r.Code != 204 || time.Since(start) < 300*time.Millisecond {
		t.Errorf("held request = %d after %v, want 204 after the long poll timeout", r.Code, time.Since(start))
	}
	if r.Header.Get("X-GitLab-Last-Update") != last {
		t.Errorf("last update changed without a new job")
	}

	// A job queued while a request is held is returned by that request.
	s2, c2, tok2 := setup(t, Options{LongPollTimeout: 10 * time.Second}, simpleCI)
	last = c2.requestJob(tok2, "", nil).Header.Get("X-GitLab-Last-Update")
	got := make(chan resp, 1)
	go func() { got <- c2.requestJob(tok2, last, nil) }()
	waitHeld(t, s2)
	pl, err := s2.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if p := c2.payload(r); p.ID != pl.Jobs["build"] {
			t.Errorf("held request got job %d", p.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held request not answered when a job was queued")
	}
	_ = s
}

// waitHeld waits until a jobs/request is held by long polling.
func waitHeld(t *testing.T, s *Server) {
	t.Helper()
	ctx := ctxT(t)
	for s.HeldRequests() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("no request held")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestWorkhorseSeenChange(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{LongPollTimeout: 10 * time.Second, WorkhorseSeenChange: true}, simpleCI)
	last := c.requestJob(tok, "", nil).Header.Get("X-GitLab-Last-Update")
	got := make(chan resp, 1)
	go func() { got <- c.requestJob(tok, last, nil) }()
	waitHeld(t, s)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.Code != 204 || r.Header.Get("X-GitLab-Last-Update") != "" {
		t.Fatalf("seen change = %d (last update %q), want a bare 204", r.Code, r.Header.Get("X-GitLab-Last-Update"))
	}
	// The runner asks again with its old last_update: Rails gives the job.
	c.payload(c.requestJob(tok, last, nil))
}

func TestTagMatching(t *testing.T) {
	t.Parallel()
	ci := "a:\n  tags: [k8s, gpu]\n  script: x\nb:\n  script: y\n"
	tests := []struct {
		name     string
		opts     Options
		tags     []string
		untagged bool
		want     []string
	}{
		{"all tags needed", Options{}, []string{"k8s"}, false, nil},
		{"superset of tags", Options{}, []string{"k8s", "gpu", "x"}, false, []string{"a"}},
		{"untagged only", Options{}, nil, true, []string{"b"}},
		{"both", Options{}, []string{"gpu", "k8s"}, true, []string{"a", "b"}},
		{"ignore tags", Options{IgnoreTags: true}, nil, false, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.opts)
			if _, err := s.AddProject("g/p", makeRepo(t, ci)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreatePipeline("g/p", "main"); err != nil {
				t.Fatal(err)
			}
			_, tok := s.CreateRunner(RunnerOptions{Tags: tt.tags, RunUntagged: tt.untagged})
			c := client{t: t, base: s.URL()}
			var got []string
			for {
				r := c.requestJob(tok, "", nil)
				if r.Code == 204 {
					break
				}
				got = append(got, c.payload(r).JobInfo.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("jobs taken = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTraceAndUpdate(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{TraceUpdateInterval: 7 * time.Second}, simpleCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	id, jt := p.ID, p.Token

	steps := []struct {
		name   string
		do     func() resp
		code   int
		header map[string]string
	}{
		{"first chunk", func() resp { return c.patch(id, jt, 0, "hello ") }, 202,
			map[string]string{"Job-Status": "running", "Range": "0-6", "X-GitLab-Trace-Update-Interval": "7"}},
		{"gap", func() resp { return c.patch(id, jt, 10, "xx") }, 416, map[string]string{"Range": "0-6"}},
		{"overlap", func() resp { return c.patch(id, jt, 3, "xx") }, 416, map[string]string{"Range": "0-6"}},
		{"bad token", func() resp { return c.patch(id, "glcbt-wrong", 6, "x") }, 403, nil},
		{"unknown job", func() resp { return c.patch(id+100, jt, 6, "x") }, 403, nil},
		{"missing range", func() resp {
			return c.do("PATCH", fmt.Sprintf("/api/v4/jobs/%d/trace", id), map[string]string{"JOB-TOKEN": jt}, []byte("x"))
		}, 400, nil},
		{"second chunk", func() resp { return c.patch(id, jt, 6, "world "+jt+"\n") }, 202, nil},
		{"keep-alive", func() resp { return c.update(id, jt, "running", nil) }, 200, map[string]string{"Job-Status": "running"}},
		{"bad checksum", func() resp {
			return c.update(id, jt, "success", map[string]any{"output": map[string]any{"checksum": "crc32:00000000", "bytesize": 1}})
		}, 412, nil},
		{"update bad token", func() resp { return c.update(id, "nope", "success", nil) }, 403, nil},
		{"bad state", func() resp { return c.update(id, jt, "exploded", nil) }, 400, nil},
	}
	for _, st := range steps {
		r := st.do()
		if r.Code != st.code {
			t.Errorf("%s: status %d %s, want %d", st.name, r.Code, r.Body, st.code)
		}
		for k, v := range st.header {
			if r.Header.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", st.name, k, r.Header.Get(k), v)
			}
		}
	}
	trace := "hello world " + jt + "\n"
	r := c.update(id, jt, "failed", mergeMap(finalOK(trace), map[string]any{"failure_reason": "script_failure", "exit_code": 3}))
	if r.Code != 200 || r.Header.Get("Job-Status") != "failed" {
		t.Fatalf("final update = %d %s", r.Code, r.Header.Get("Job-Status"))
	}
	v, _ := s.Job(id)
	if v.Status != StatusFailed || v.FailureReason != "script_failure" || v.ExitCode != 3 || string(s.Trace(id)) != trace || v.Checksum != v.TraceChecksum {
		t.Errorf("job = %+v trace %q", v, s.Trace(id))
	}
	if strings.Contains(string(s.StoredTrace(id)), jt) || len(s.StoredTrace(id)) != len(trace) {
		t.Errorf("stored trace must hide the job token: %q", s.StoredTrace(id))
	}
	// After the end: 403 with the job's status, as GitLab does.
	for _, r := range []resp{c.patch(id, jt, len(trace), "late"), c.update(id, jt, "success", finalOK(trace))} {
		if r.Code != 403 || r.Header.Get("Job-Status") != "failed" || !strings.Contains(string(r.Body), "Job is not processing on runner") {
			t.Errorf("after end = %d %q %s", r.Code, r.Header.Get("Job-Status"), r.Body)
		}
	}
}

func mergeMap(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}

func TestTwoPhaseCommit(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", map[string]bool{"two_phase_job_commit": true}))
	if v, _ := s.Job(p.ID); v.Status != StatusPending {
		t.Fatalf("job before confirmation = %s, want pending", v.Status)
	}
	if r := c.patch(p.ID, p.Token, 0, "x"); r.Code != 403 || r.Header.Get("Job-Status") != "pending" {
		t.Errorf("patch before confirmation = %d %q", r.Code, r.Header.Get("Job-Status"))
	}
	if r := c.update(p.ID, p.Token, "success", nil); r.Code != 400 {
		t.Errorf("final state before confirmation = %d, want 400", r.Code)
	}
	if r := c.update(p.ID, p.Token, "running", map[string]any{"output": map[string]any{}}); r.Code != 200 || r.Header.Get("Job-Status") != "running" {
		t.Errorf("confirmation = %d %q", r.Code, r.Header.Get("Job-Status"))
	}
	if v, _ := s.Job(p.ID); v.Status != StatusRunning {
		t.Errorf("job after confirmation = %s", v.Status)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		graceful    bool
		feature     bool
		wantStatus  string
		finalStatus string
	}{
		{"graceful with feature", true, true, StatusCanceling, StatusCanceled},
		{"graceful without feature", true, false, StatusCanceled, StatusCanceled},
		{"hard", false, true, StatusCanceled, StatusCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, tok := setup(t, Options{}, simpleCI)
			pl, err := s.CreatePipeline("group/demo", "main")
			if err != nil {
				t.Fatal(err)
			}
			p := c.payload(c.requestJob(tok, "", map[string]bool{"cancel_gracefully": tt.feature}))
			if err := s.Cancel(p.ID, tt.graceful); err != nil {
				t.Fatal(err)
			}
			r := c.patch(p.ID, p.Token, 0, "log")
			if r.Header.Get("Job-Status") != tt.wantStatus {
				t.Errorf("Job-Status = %q, want %q", r.Header.Get("Job-Status"), tt.wantStatus)
			}
			if tt.wantStatus == StatusCanceling {
				if r.Code != 202 {
					t.Errorf("patch while canceling = %d", r.Code)
				}
				r = c.update(p.ID, p.Token, "failed", mergeMap(finalOK("log"), map[string]any{"failure_reason": "unknown_failure"}))
				if r.Code != 200 {
					t.Errorf("final update while canceling = %d", r.Code)
				}
			} else if r.Code != 403 {
				t.Errorf("patch after cancel = %d, want 403", r.Code)
			}
			if v, _ := s.Job(p.ID); v.Status != tt.finalStatus {
				t.Errorf("final status = %s", v.Status)
			}
			pv, err := s.WaitPipeline(ctxT(t), pl.ID)
			if err != nil || pv.Status != StatusCanceled {
				t.Errorf("pipeline = %s, %v", pv.Status, err)
			}
		})
	}
}

func TestCancelAfterBytes(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", map[string]bool{"cancel_gracefully": true}))
	if err := s.CancelJobAfterBytes(p.ID, 5, true); err != nil {
		t.Fatal(err)
	}
	if r := c.patch(p.ID, p.Token, 0, "abc"); r.Header.Get("Job-Status") != "running" {
		t.Errorf("before threshold: %q", r.Header.Get("Job-Status"))
	}
	if r := c.patch(p.ID, p.Token, 3, "defg"); r.Header.Get("Job-Status") != "canceling" {
		t.Errorf("after threshold: %q", r.Header.Get("Job-Status"))
	}
}

func TestStagesAndAllowFailure(t *testing.T) {
	t.Parallel()
	ci := `
stages: [one, two, three]
fails:
  stage: one
  script: x
  allow_failure: {exit_codes: [3]}
next:
  stage: two
  script: x
cleanup:
  stage: three
  script: x
  when: on_failure
always:
  stage: three
  script: x
  when: always
`
	s, c, tok := setup(t, Options{}, ci)
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	finish := func(wantName, state string, code int) {
		t.Helper()
		p := c.payload(c.requestJob(tok, "", nil))
		if p.JobInfo.Name != wantName {
			t.Fatalf("got job %s, want %s", p.JobInfo.Name, wantName)
		}
		extra := finalOK("")
		if state == "failed" {
			extra["failure_reason"] = "script_failure"
			extra["exit_code"] = code
		}
		if r := c.update(p.ID, p.Token, state, extra); r.Code != 200 {
			t.Fatalf("final update = %d", r.Code)
		}
	}
	finish("fails", "failed", 3)    // allowed by exit code
	finish("next", "failed", 1)     // fails the pipeline
	finish("cleanup", "success", 0) // on_failure: an earlier stage failed
	finish("always", "success", 0)
	if r := c.requestJob(tok, "", nil); r.Code != 204 {
		t.Fatalf("unexpected job %s", r.Body)
	}
	pv, err := s.WaitPipeline(ctxT(t), pl.ID)
	if err != nil {
		t.Fatal(err)
	}
	if pv.Status != StatusFailed {
		t.Errorf("pipeline = %s, want failed", pv.Status)
	}

	// All green: on_failure jobs are skipped, the pipeline succeeds.
	pl2, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	finish("fails", "success", 0)
	finish("next", "success", 0)
	finish("always", "success", 0)
	pv, err = s.WaitPipeline(ctxT(t), pl2.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range pv.Jobs {
		if j.Name == "cleanup" && j.Status != StatusSkipped {
			t.Errorf("cleanup = %s, want skipped", j.Status)
		}
	}
	if pv.Status != StatusSuccess {
		t.Errorf("pipeline = %s, want success", pv.Status)
	}
}

func TestFaultsDoNotChangeState(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	s.SetFaults(Faults{Seed: 42, ErrorRate: map[string]float64{EndpointAll: 1}})
	for i := 0; i < 5; i++ {
		if r := c.requestJob(tok, "", nil); r.Code < 500 {
			t.Fatalf("faulted request = %d", r.Code)
		}
	}
	if v, _ := s.Job(1); v.Status != StatusPending || v.RunnerID != 0 {
		t.Fatalf("faulted requests changed the job: %+v", v)
	}
	s.SetFaults(Faults{})
	p := c.payload(c.requestJob(tok, "", nil))
	s.SetFaults(Faults{Seed: 1, ErrorRate: map[string]float64{EndpointPatchTrace: 1}})
	if r := c.patch(p.ID, p.Token, 0, "abc"); r.Code < 500 {
		t.Fatalf("faulted patch = %d", r.Code)
	}
	if len(s.Trace(p.ID)) != 0 {
		t.Fatal("faulted patch stored trace")
	}
	if s.FaultCount(EndpointPatchTrace) != 1 {
		t.Errorf("fault count = %d", s.FaultCount(EndpointPatchTrace))
	}
	s.SetFaults(Faults{})

	// Deterministic: the same seed gives the same sequence.
	seq := func() []int {
		s.SetFaults(Faults{Seed: 7, ErrorRate: map[string]float64{EndpointVerify: 0.3}})
		var codes []int
		for i := 0; i < 20; i++ {
			codes = append(codes, c.json("POST", "/api/v4/runners/verify", map[string]any{"token": tok}).Code)
		}
		return codes
	}
	a, b := seq(), seq()
	if !slices.Equal(a, b) || !slices.ContainsFunc(a, func(c int) bool { return c >= 500 }) || !slices.Contains(a, 200) {
		t.Errorf("fault sequences %v / %v", a, b)
	}
	s.SetFaults(Faults{})

	s.ForceTrace416(1)
	if r := c.patch(p.ID, p.Token, 0, "abc"); r.Code != 416 || r.Header.Get("Range") != "0-0" {
		t.Errorf("forced 416 = %d %q", r.Code, r.Header.Get("Range"))
	}
	if r := c.patch(p.ID, p.Token, 0, "abc"); r.Code != 202 {
		t.Errorf("after forced 416 = %d", r.Code)
	}
	s.ForceUpdate412(1)
	if r := c.update(p.ID, p.Token, "success", finalOK("abc")); r.Code != 412 {
		t.Errorf("forced 412 = %d", r.Code)
	}
	s.ForceAccepted(1)
	if r := c.update(p.ID, p.Token, "success", finalOK("abc")); r.Code != 202 || r.Header.Get("X-GitLab-Trace-Update-Interval") == "" {
		t.Errorf("forced 202 = %d", r.Code)
	}
	if r := c.update(p.ID, p.Token, "success", finalOK("abc")); r.Code != 200 {
		t.Errorf("final = %d", r.Code)
	}
}

func TestRecorder(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	c.requestJob(tok, "", nil)
	recs := s.RequestsTo(EndpointRequestJob)
	if len(recs) != 1 || recs[0].Status != 204 || recs[0].Method != "POST" || recs[0].BodySize == 0 {
		t.Fatalf("records = %+v", recs)
	}
	if !strings.Contains(string(recs[0].BodyPrefix), tok) {
		t.Error("body prefix must keep the token for assertions")
	}
	if strings.Contains(recs[0].String(), tok) {
		t.Error("String leaks the token")
	}
	c.do("POST", "/api/v4/runners/verify", map[string]string{"RUNNER-TOKEN": tok}, nil)
	r := s.RequestsTo(EndpointVerify)[0]
	if r.Header.Get("Runner-Token") != tok || r.RedactedHeader().Get("Runner-Token") != "[REDACTED]" {
		t.Error("header kept/redacted wrongly")
	}
}

func TestArtifacts(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	body, ctype := multipartFile(t, "artifacts.zip", "PK-data")
	path := fmt.Sprintf("/api/v4/jobs/%d/artifacts?artifact_format=zip&artifact_type=archive", p.ID)
	if r := c.do("POST", path, map[string]string{"JOB-TOKEN": "wrong", "Content-Type": ctype}, body); r.Code != 403 {
		t.Errorf("upload with bad token = %d", r.Code)
	}
	if r := c.do("POST", path, map[string]string{"JOB-TOKEN": p.Token, "Content-Type": ctype}, body); r.Code != 201 {
		t.Fatalf("upload = %d %s", r.Code, r.Body)
	}
	if r := c.update(p.ID, p.Token, "success", finalOK("")); r.Code != 200 {
		t.Fatal(r.Code)
	}
	dl := fmt.Sprintf("/api/v4/jobs/%d/artifacts", p.ID)
	// GitLab authenticates downloads with a running job's token: the
	// finished uploader's own token no longer works.
	if r := c.do("GET", dl, map[string]string{"JOB-TOKEN": p.Token}, nil); r.Code != 403 {
		t.Errorf("download with a finished job's token = %d", r.Code)
	}
	if r := c.do("GET", dl, map[string]string{"JOB-TOKEN": "x"}, nil); r.Code != 403 {
		t.Errorf("download bad token = %d", r.Code)
	}
	next := c.payload(c.requestJob(tok, "", nil))
	if len(next.Dependencies) != 1 || next.Dependencies[0].ID != p.ID || next.Dependencies[0].Token != next.Token || next.Dependencies[0].ArtifactsFile.Size != 7 {
		t.Errorf("dependencies = %+v", next.Dependencies)
	}
	if r := c.do("GET", dl, map[string]string{"JOB-TOKEN": next.Dependencies[0].Token}, nil); r.Code != 200 || string(r.Body) != "PK-data" || r.Header.Get("Content-Length") != "7" {
		t.Errorf("download = %d %q", r.Code, r.Body)
	}
}

// runningGitJob starts a pipeline of group/demo and takes its job: its
// token may fetch the project while the job runs.
func runningGitJob(t *testing.T) (*Server, client, *Pipeline, *job.Payload) {
	t.Helper()
	s, c, tok := setup(t, Options{}, simpleCI)
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	return s, c, pl, c.payload(c.requestJob(tok, "", nil))
}

func TestGitCloneWithJobToken(t *testing.T) {
	t.Parallel()
	s, c, pl, p := runningGitJob(t)
	dir := filepath.Join(t.TempDir(), "clone")
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	bad := strings.Replace(p.GitInfo.RepoURL, p.Token, "glcbt-wrong", 1)
	if out, err := git("clone", "-q", bad, dir+"-bad"); err == nil {
		t.Fatalf("clone with a wrong token worked: %s", out)
	}
	if out, err := git("init", "-q", dir); err != nil {
		t.Fatal(out)
	}
	args := append([]string{"-C", dir, "fetch", "-q", "--depth", "20", p.GitInfo.RepoURL}, p.GitInfo.Refspecs...)
	if out, err := git(args...); err != nil {
		t.Fatalf("fetch: %v\n%s", err, out)
	}
	if out, err := git("-C", dir, "checkout", "-q", p.GitInfo.Sha); err != nil {
		t.Fatalf("checkout: %s", out)
	}
	if out, _ := git("-C", dir, "rev-parse", fmt.Sprintf("refs/pipelines/%d", pl.ID)); strings.TrimSpace(out) != pl.Sha {
		t.Errorf("pipeline ref = %q", out)
	}
	if _, err := git("-C", dir, "push", p.GitInfo.RepoURL, "HEAD:refs/heads/evil"); err == nil {
		t.Error("push accepted")
	}
	// The token stops working once the job ended.
	c.update(p.ID, p.Token, "success", finalOK(""))
	if _, err := git("-C", dir, "fetch", "-q", p.GitInfo.RepoURL, "main"); err == nil {
		t.Error("fetch with the token of a finished job worked")
	}
	if rs := s.RequestsTo(EndpointGit); len(rs) == 0 {
		t.Error("git requests not recorded")
	}
}

func TestStuckJob(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{StuckTimeout: 50 * time.Millisecond}, simpleCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	v, err := s.WaitJob(ctxT(t), p.ID, StatusFailed)
	if err != nil || v.FailureReason != "stuck_or_timeout_failure" {
		t.Errorf("stuck job = %+v, %v", v, err)
	}
}

func TestCancelJobAfter(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, simpleCI)
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CancelJobAfter(pl.Jobs["build"], 50*time.Millisecond, false); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	v, err := s.WaitJob(ctxT(t), p.ID, StatusCanceled)
	if err != nil || v.StartedAt.IsZero() {
		t.Fatalf("job = %+v, %v", v, err)
	}
	if r := c.update(p.ID, p.Token, "running", nil); r.Code != 403 || r.Header.Get("Job-Status") != "canceled" {
		t.Errorf("update after cancel = %d %q", r.Code, r.Header.Get("Job-Status"))
	}
}

// TestGitSmartHTTP covers what a Git client sees of the smart HTTP
// endpoints beyond a clone: both protocol versions' advertisements, a
// gzipped request body, and the requests GitLab does not serve.
func TestGitSmartHTTP(t *testing.T) {
	t.Parallel()
	_, c, pl, p := runningGitJob(t)
	u, err := url.Parse(p.GitInfo.RepoURL)
	if err != nil {
		t.Fatal(err)
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("gitlab-ci-token:"+p.Token))
	repo := u.Path // /group/demo.git
	want := fmt.Sprintf("0032want %s\n00000009done\n", pl.Sha)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(want))
	zw.Close()

	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		body               []byte
		code               int
		ctype              string
		has, hasNot        string
	}{
		{name: "v0 advertisement", method: "GET", path: repo + "/info/refs?service=git-upload-pack",
			code: 200, ctype: "application/x-git-upload-pack-advertisement",
			has: "001e# service=git-upload-pack\n0000", hasNot: "version 2"},
		{name: "v2 advertisement", method: "GET", path: repo + "/info/refs?service=git-upload-pack",
			hdr: map[string]string{"Git-Protocol": "version=2"}, code: 200,
			ctype: "application/x-git-upload-pack-advertisement", has: "version 2", hasNot: "# service="},
		{name: "pack for a plain body", method: "POST", path: repo + "/git-upload-pack", body: []byte(want),
			code: 200, ctype: "application/x-git-upload-pack-result", has: "PACK"},
		{name: "pack for a gzipped body", method: "POST", path: repo + "/git-upload-pack", body: gz.Bytes(),
			hdr: map[string]string{"Content-Encoding": "gzip"}, code: 200, ctype: "application/x-git-upload-pack-result", has: "PACK"},
		{name: "bad gzip", method: "POST", path: repo + "/git-upload-pack", body: []byte(want),
			hdr: map[string]string{"Content-Encoding": "gzip"}, code: 400},
		{name: "dumb protocol", method: "GET", path: repo + "/info/refs", code: 404},
		{name: "dumb object", method: "GET", path: repo + "/HEAD", code: 404},
		{name: "upload-pack by GET", method: "GET", path: repo + "/git-upload-pack", code: 404},
		{name: "push advertisement", method: "GET", path: repo + "/info/refs?service=git-receive-pack", code: 403},
		{name: "push", method: "POST", path: repo + "/git-receive-pack", code: 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"Authorization": auth}
			maps.Copy(hdr, tc.hdr)
			r := c.do(tc.method, tc.path, hdr, tc.body)
			if r.Code != tc.code {
				t.Fatalf("%s %s = %d %q, want %d", tc.method, tc.path, r.Code, r.Body, tc.code)
			}
			if tc.ctype != "" {
				if got := r.Header.Get("Content-Type"); got != tc.ctype {
					t.Errorf("Content-Type = %q, want %q", got, tc.ctype)
				}
				if got := r.Header.Get("Cache-Control"); got != "no-cache" {
					t.Errorf("Cache-Control = %q, want no-cache", got)
				}
			}
			if !bytes.Contains(r.Body, []byte(tc.has)) {
				t.Errorf("body lacks %q:\n%q", tc.has, r.Body)
			}
			if tc.hasNot != "" && bytes.Contains(r.Body, []byte(tc.hasNot)) {
				t.Errorf("body has %q:\n%q", tc.hasNot, r.Body)
			}
		})
	}
}
