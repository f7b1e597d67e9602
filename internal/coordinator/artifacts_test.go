package coordinator

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/job"
)

func gz(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.String()
}

func (c client) upload(id int64, token, query, name, content string) resp {
	c.t.Helper()
	body, ctype := multipartFile(c.t, name, content)
	return c.do("POST", fmt.Sprintf("/api/v4/jobs/%d/artifacts?%s", id, query),
		map[string]string{"JOB-TOKEN": token, "Content-Type": ctype}, body)
}

func (c client) download(id int64, token string) resp {
	c.t.Helper()
	return c.do("GET", fmt.Sprintf("/api/v4/jobs/%d/artifacts", id), map[string]string{"JOB-TOKEN": token}, nil)
}

const artifactsCI = "stages: [build, test]\nbuild: {stage: build, script: x}\ntest: {stage: test, script: x}\n"

func TestArtifactUploadChecks(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{MaxArtifactsSize: 1024}, artifactsCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	zip := "artifact_format=zip&artifact_type=archive"
	tests := []struct {
		name, token, query, content string
		code                        int
		body                        string
	}{
		{"wrong token", "glcbt-wrong", zip, "PK", 403, "Invalid job token"},
		{"no token", "", zip, "PK", 403, ""},
		{"too big", p.Token, zip, strings.Repeat("x", 1025), 413, "413 Request Entity Too Large"},
		{"unknown type", p.Token, "artifact_format=zip&artifact_type=bogus", "PK", 400, "artifact_type does not have a valid value"},
		{"unknown format", p.Token, "artifact_format=rar&artifact_type=archive", "PK", 400, "artifact_format does not have a valid value"},
		{"format not of the type", p.Token, "artifact_format=zip&artifact_type=dotenv", "PK", 400, "Invalid file format"},
		{"invalid dotenv", p.Token, "artifact_format=gzip&artifact_type=dotenv", gz(t, "NO EQUALS\n"), 400, "Invalid Format"},
		{"archive", p.Token, zip, strings.Repeat("x", 1024), 201, ""},
		{"second archive", p.Token, zip, "PK", 400, "another artifact of the same type already exists"},
		{"metadata is dropped", p.Token, "artifact_format=gzip&artifact_type=metadata", "meta", 201, ""},
		{"junit", p.Token, "artifact_format=gzip&artifact_type=junit", gz(t, "<testsuites/>"), 201, ""},
	}
	for _, tc := range tests {
		r := c.upload(p.ID, tc.token, tc.query, "artifacts.zip", tc.content)
		if r.Code != tc.code || !strings.Contains(string(r.Body), tc.body) {
			t.Errorf("%s: %d %s, want %d %q", tc.name, r.Code, r.Body, tc.code, tc.body)
		}
	}
	if v, _ := s.Job(p.ID); strings.Join(v.ArtifactTypes, ",") != "archive,junit" || !v.HasArtifacts {
		t.Errorf("stored types = %v", v.ArtifactTypes)
	}
	if _, data, ok := s.Artifact(p.ID); !ok || len(data) != 1024 {
		t.Errorf("Artifact = %d bytes, %v", len(data), ok)
	}
	if r := c.update(p.ID, p.Token, "success", finalOK("")); r.Code != 200 {
		t.Fatal(r.Code)
	}
	// A finished job uploads nothing more.
	r := c.upload(p.ID, p.Token, "artifact_format=gzip&artifact_type=dotenv", "x.env", gz(t, "A=1\n"))
	if r.Code != 403 || r.Header.Get("Job-Status") != StatusSuccess {
		t.Errorf("upload after finish = %d %s", r.Code, r.Header.Get("Job-Status"))
	}
}

func TestArtifactDownloadChecks(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, artifactsCI)
	if _, err := s.AddProject("other/proj", makeRepo(t, "x: {script: x}\n")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var mu sync.Mutex
	s.mu.Lock()
	s.clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s.mu.Unlock()
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePipeline("other/proj", "main"); err != nil {
		t.Fatal(err)
	}
	build := c.payload(c.requestJob(tok, "", nil))
	if r := c.upload(build.ID, build.Token, "artifact_format=zip&artifact_type=archive&expire_in=1+hour", "a.zip", "PK-data"); r.Code != 201 {
		t.Fatalf("upload = %d %s", r.Code, r.Body)
	}
	c.update(build.ID, build.Token, "success", finalOK(""))
	test := c.payload(c.requestJob(tok, "", nil))
	if test.JobInfo.Name != "test" {
		t.Fatalf("got %s", test.JobInfo.Name)
	}
	other := c.payload(c.requestJob(tok, "", nil))
	if other.JobInfo.ProjectFullPath != "other/proj" {
		t.Fatalf("expected the other project's job, got %s", other.JobInfo.ProjectFullPath)
	}
	if r := c.download(build.ID, other.Token); r.Code != 403 {
		t.Errorf("download with another project's job token = %d", r.Code)
	}
	if r := c.download(9999, test.Token); r.Code != 403 {
		t.Errorf("download of an unknown job = %d", r.Code)
	}
	if r := c.download(test.ID, test.Token); r.Code != 404 {
		t.Errorf("download of a job without archive = %d", r.Code)
	}
	if r := c.download(build.ID, test.Token); r.Code != 200 || string(r.Body) != "PK-data" || r.Header.Get("Content-Length") != "7" {
		t.Errorf("download = %d %q", r.Code, r.Body)
	}
	advance(time.Hour)
	if r := c.download(build.ID, test.Token); r.Code != 404 {
		t.Errorf("download of expired artifacts = %d", r.Code)
	}
}

func TestExpiredDependencyFailsJob(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, artifactsCI)
	now := time.Now()
	s.mu.Lock()
	s.clock = func() time.Time { return now }
	s.mu.Unlock()
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	build := c.payload(c.requestJob(tok, "", nil))
	if r := c.upload(build.ID, build.Token, "artifact_format=zip&artifact_type=archive&expire_in=1s", "a.zip", "PK"); r.Code != 201 {
		t.Fatalf("upload = %d %s", r.Code, r.Body)
	}
	s.mu.Lock()
	s.clock = func() time.Time { return now.Add(2 * time.Second) }
	s.mu.Unlock()
	c.update(build.ID, build.Token, "success", finalOK(""))
	if r := c.requestJob(tok, "", nil); r.Code != 204 {
		t.Fatalf("a job whose dependency expired was handed out: %d", r.Code)
	}
	v := latest(t, s, pl.ID, "test")
	if v.Status != StatusFailed || v.FailureReason != "missing_dependency_failure" {
		t.Errorf("test = %s %s", v.Status, v.FailureReason)
	}
}

func TestDotenvPassesVariables(t *testing.T) {
	t.Parallel()
	ci := "stages: [build, test, deploy]\nbuild: {stage: build, script: x}\nother: {stage: build, script: x}\ntest: {stage: test, script: x}\ndeploy: {stage: deploy, script: x}\n"
	s, c, tok := setup(t, Options{}, ci)
	tweakJobs(s, func(j map[string]*ciyaml.Job) {
		j["build"].Artifacts = &ciyaml.Artifacts{Reports: map[string][]string{"dotenv": {"build.env"}}}
		j["build"].Variables = []ciyaml.Variable{{Key: "VERSION", Value: "yaml", Expand: true}}
		j["test"].Variables = []ciyaml.Variable{{Key: "VERSION", Value: "job-yaml", Expand: true}}
		j["deploy"].Dependencies = []string{"other"}
	})
	if err := s.SetProjectVariable("group/demo", ProjectVariable{Key: "PROJECT_WINS", Value: "project"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	build := c.payload(c.requestJob(tok, "", nil))
	dotenv := gz(t, "VERSION=1.2.3\nQUOTED = \"a b\"\nPROJECT_WINS=dotenv\n")
	if r := c.upload(build.ID, build.Token, "artifact_format=gzip&artifact_type=dotenv", ".env.gz", dotenv); r.Code != 201 {
		t.Fatalf("dotenv upload = %d %s", r.Code, r.Body)
	}
	c.update(build.ID, build.Token, "success", finalOK(""))
	other := c.payload(c.requestJob(tok, "", nil))
	c.update(other.ID, other.Token, "success", finalOK(""))
	test := c.payload(c.requestJob(tok, "", nil))
	vars := test.Variables
	if v := lastValue(vars, "VERSION"); v != "1.2.3" {
		t.Errorf("VERSION = %q, want the dotenv value over job YAML", v)
	}
	if v := lastValue(vars, "QUOTED"); v != `"a b"` {
		t.Errorf("QUOTED = %q (GitLab keeps quotes)", v)
	}
	if v := lastValue(vars, "PROJECT_WINS"); v != "project" {
		t.Errorf("PROJECT_WINS = %q, project variables win over dotenv", v)
	}
	if len(test.Dependencies) != 2 || test.Dependencies[0].ArtifactsFile.Filename != "" {
		t.Errorf("dependencies = %+v (no archive: no artifacts_file)", test.Dependencies)
	}
	c.update(test.ID, test.Token, "success", finalOK(""))
	deploy := c.payload(c.requestJob(tok, "", nil))
	if lastValue(deploy.Variables, "VERSION") != "" {
		t.Error("dependencies: [other] must not get build's dotenv")
	}
}

func lastValue(vs job.Variables, key string) string {
	v := ""
	for _, x := range vs {
		if x.Key == key {
			v = x.Value
		}
	}
	return v
}

func TestParseDotenv(t *testing.T) {
	t.Parallel()
	many := ""
	for i := range 21 {
		many += fmt.Sprintf("K%d=v\n", i)
	}
	tests := []struct {
		name, in string
		want     string // k=v,... or the error
	}{
		{"plain", "A=1\nB=2\n", "A=1,B=2"},
		{"no final newline", "A=1", "A=1"},
		{"spaces stripped", "  A  =  1 x  \n", "A=1 x"},
		{"value with =", "URL=a=b\n", "URL=a=b"},
		{"quotes kept", "Q='x'\n", "Q='x'"},
		{"last wins", "A=1\nA=2\n", "A=2"},
		{"crlf", "A=1\r\n", "A=1"},
		{"empty value", "A=\n", "A="},
		{"empty line", "A=1\n\nB=2\n", "Invalid Format"},
		{"comment", "# hi\n", "Invalid Format"},
		{"bad key", "A-B=1\n", "Key can contain only letters"},
		{"export", "export A=1\n", "Key can contain only letters"},
		{"too many", many, "Dotenv files cannot have more than 20 variables"},
	}
	for _, tc := range tests {
		vars, err := parseDotenv([][]byte{[]byte(tc.in)}, 20)
		var got string
		if err != nil {
			got = err.Error()
		} else {
			var kv []string
			for _, v := range vars {
				kv = append(kv, v.Key+"="+v.Value)
			}
			got = strings.Join(kv, ",")
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Each gzip member is a file of its own.
	dir := t.TempDir()
	f := filepath.Join(dir, "r.gz")
	if err := os.WriteFile(f, []byte(gz(t, "A=1")+gz(t, "B=2\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	vars, err := parseDotenvFile(f, 100, 20)
	if err != nil || len(vars) != 2 || vars[1].Key != "B" {
		t.Errorf("two members: %+v %v", vars, err)
	}
	if _, err := parseDotenvFile(f, dotenvSizeLimit+1, 20); err == nil || !strings.Contains(err.Error(), "Too big") {
		t.Errorf("size limit: %v", err)
	}
}

func TestPayloadArtifactsAndCache(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{}, "build: {stage: build, script: x}\n")
	lockSha := ""
	tweakJobs(s, func(j map[string]*ciyaml.Job) {
		d := j["build"]
		d.ParallelOf, d.NodeIndex, d.NodeTotal = "build", 2, 3
		d.Environment = "review/x"
		d.Artifacts = &ciyaml.Artifacts{Name: "bin", Paths: []string{"out/"}, Exclude: []string{"out/*.o"}, When: "always", ExpireIn: "1 week",
			Reports: map[string][]string{"junit": {"r.xml"}, "dotenv": {"b.env"}}}
		d.Cache = []ciyaml.Cache{
			{Key: "deps", Paths: []string{"vendor/"}, Policy: "pull", FallbackKeys: []string{"main"}},
			{KeyFiles: []string{"hello.txt", "missing.lock"}, KeyPrefix: "pfx", Paths: []string{"x"}, Unprotect: true},
			{KeyFiles: []string{"missing.lock"}, Paths: []string{"y"}},
			{Paths: []string{"z"}, When: "always"},
		}
	})
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	_ = pl
	s.mu.Lock()
	for _, p := range s.projects {
		lockSha, _ = s.gitOut(p.bare, "log", "-1", "--format=%H", "main", "--", "hello.txt")
	}
	s.mu.Unlock()
	p := c.payload(c.requestJob(tok, "", nil))
	want := []job.Artifact{
		{Name: "bin", Paths: []string{"out/"}, Exclude: []string{"out/*.o"}, When: "always", Type: "archive", Format: "zip", ExpireIn: "1 week"},
		{Name: ".env.gz", Paths: []string{"b.env"}, When: "always", Type: "dotenv", Format: "gzip", ExpireIn: "1 week"},
		{Name: "junit.xml.gz", Paths: []string{"r.xml"}, When: "always", Type: "junit", Format: "gzip", ExpireIn: "1 week"},
	}
	if fmt.Sprint(p.Artifacts) != fmt.Sprint(want) {
		t.Errorf("artifacts = %+v\nwant %+v", p.Artifacts, want)
	}
	sum := sha1.Sum([]byte(lockSha))
	keys := []string{"deps-protected", "pfx-" + hex.EncodeToString(sum[:]) + "-non_protected", "default-protected", "default-protected"}
	if len(p.Cache) != 4 {
		t.Fatalf("cache = %+v", p.Cache)
	}
	for i, k := range keys {
		if p.Cache[i].Key != k {
			t.Errorf("cache %d key = %s, want %s", i, p.Cache[i].Key, k)
		}
	}
	if c0 := p.Cache[0]; c0.Policy != "pull" || c0.When != "on_success" || len(c0.FallbackKeys) != 1 || c0.FallbackKeys[0] != "main-protected" {
		t.Errorf("cache 0 = %+v", c0)
	}
	if c3 := p.Cache[3]; c3.Policy != "pull-push" || c3.When != "always" || c3.FallbackKeys == nil {
		t.Errorf("cache 3 = %+v", c3)
	}
	for k, v := range map[string]string{"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3", "CI_ENVIRONMENT_NAME": "review/x"} {
		if got := lastValue(p.Variables, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// TestArtifactStreaming uploads and downloads 50 MiB and checks the
// coordinator never allocated anything near that (it streams to disk and
// back). Not parallel: it measures the process's allocations.
func TestArtifactStreaming(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MiB upload")
	}
	const size = 50 << 20
	s, c, tok := setup(t, Options{}, artifactsCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	build := c.payload(c.requestJob(tok, "", nil))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", "big.zip")
		if err == nil {
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for n := 0; n < size && err == nil; n += len(chunk) {
				_, err = part.Write(chunk)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequest("POST", fmt.Sprintf("%s/api/v4/jobs/%d/artifacts?artifact_format=zip&artifact_type=archive", s.URL(), build.ID), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("JOB-TOKEN", build.Token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != 201 {
		t.Fatalf("upload = %d", r.StatusCode)
	}
	c.update(build.ID, build.Token, "success", finalOK(""))
	test := c.payload(c.requestJob(tok, "", nil))
	if test.Dependencies[0].ArtifactsFile.Size != size {
		t.Fatalf("dependency size = %d", test.Dependencies[0].ArtifactsFile.Size)
	}
	req, _ = http.NewRequest("GET", fmt.Sprintf("%s/api/v4/jobs/%d/artifacts", s.URL(), build.ID), nil)
	req.Header.Set("JOB-TOKEN", test.Token)
	r, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	if err != nil || n != size || r.ContentLength != size {
		t.Fatalf("download = %d bytes (Content-Length %d), %v", n, r.ContentLength, err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
		t.Errorf("allocated %d MiB for a %d MiB round trip: not streaming", alloc>>20, size>>20)
	}
}

func TestCacheKeyFilesUseLastCommits(t *testing.T) {
	t.Parallel()
	repo := makeRepo(t, "t: {script: x}\n")
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@x", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	first := git("rev-parse", "HEAD")
	if err := os.WriteFile(filepath.Join(repo, "go.sum"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "go.sum")
	git("commit", "-q", "-m", "sum")
	second := git("rev-parse", "HEAD")
	s := newServer(t, Options{})
	if _, err := s.AddProject("group/demo", repo); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	p := s.projects["group/demo"]
	s.mu.Unlock()
	keys, err := s.cacheKeys(p, commit{sha: second}, &ciyaml.Job{Cache: []ciyaml.Cache{{KeyFiles: []string{"go.sum", "hello.txt"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{first, second}
	if second < first {
		ids = []string{second, first}
	}
	sum := sha1.Sum([]byte(strings.Join(ids, "-")))
	if keys[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("key = %s", keys[0])
	}
}

// TestArtifactTooBigStreamed: a streamed upload past the limit gets 413
// while the client is still sending, not a broken connection.
func TestArtifactTooBigStreamed(t *testing.T) {
	t.Parallel()
	s, c, tok := setup(t, Options{MaxArtifactsSize: 1 << 20}, artifactsCI)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	build := c.payload(c.requestJob(tok, "", nil))
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", "big.zip")
		chunk := make([]byte, 64<<10)
		for n := 0; n < 16<<20 && err == nil; n += len(chunk) {
			_, err = part.Write(chunk)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v4/jobs/%d/artifacts", s.URL(), build.ID), pr)
	req.Header.Set("JOB-TOKEN", build.Token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r, err := http.DefaultClient.Do(req)
	_ = pr.CloseWithError(io.ErrClosedPipe) // stop the writer
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	body, _ := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if r.StatusCode != 413 || !strings.Contains(string(body), "413 Request Entity Too Large") {
		t.Fatalf("upload = %d %s", r.StatusCode, body)
	}
	if v, _ := s.Job(build.ID); v.HasArtifacts {
		t.Error("a refused upload was stored")
	}
}
