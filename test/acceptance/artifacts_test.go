package acceptance

import (
	"archive/zip"
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

// A build job's artifact (a directory with a file and a symlink, an
// excluded file, an untracked file) reaches the next job through
// dependencies; the excluded and the ignored files do not.
func TestArtifactsThroughDependencies(t *testing.T) {
	e := newEnv(t, `
stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p out/sub
    - echo hello > out/file.txt
    - echo deep > out/sub/deep.txt
    - ln -s file.txt out/link
    - echo excluded > out/debug.log
    - echo untracked > notes.txt
    - echo ignored > cache.ignored
  artifacts:
    name: build-$CI_JOB_NAME
    paths: [out/]
    exclude: ["out/*.log"]
    untracked: true
    expire_in: 1 week
test:
  stage: test
  dependencies: [build]
  script:
    - test "$(cat out/file.txt)" = hello
    - test "$(cat out/sub/deep.txt)" = deep
    - test -L out/link && test "$(readlink out/link)" = file.txt && test "$(cat out/link)" = hello
    - test ! -e out/debug.log
    - test "$(cat notes.txt)" = untracked
    - test ! -e cache.ignored
    - echo artifacts-checked
`, coordinator.Options{})
	commitFile(t, e, ".gitignore", "*.ignored\n")
	e.runConfig(e.config(1, ""))
	v := e.pipeline(2 * time.Minute)
	build, test := jobByName(t, v, "build"), jobByName(t, v, "test")
	if build.Status != "success" || test.Status != "success" {
		t.Fatalf("build %s, test %s\nbuild trace:\n%s\ntest trace:\n%s", build.Status, test.Status, e.coord.Trace(build.ID), e.coord.Trace(test.ID))
	}
	contains(t, e.coord.Trace(build.ID), "Uploading artifacts", "Uploaded artifacts")
	contains(t, e.coord.Trace(test.ID), "Downloading artifacts for build", "artifacts-checked")
	name, data, ok := e.coord.ArtifactOf(build.ID, "archive")
	if !ok {
		t.Fatalf("no archive stored for build (types %v)", build.ArtifactTypes)
	}
	if name != "build-build.zip" {
		t.Errorf("archive named %q, want build-build.zip", name)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range zr.File {
		got = append(got, f.Name)
	}
	want := []string{"notes.txt", "out/", "out/file.txt", "out/link", "out/sub/", "out/sub/deep.txt"}
	if !slices.Equal(got, want) {
		t.Errorf("archive holds %q, want %q", got, want)
	}
	for _, j := range []coordinator.JobView{build, test} {
		checkTrace(t, j)
		if strings.Contains(string(e.coord.Trace(j.ID)), j.Token) {
			t.Errorf("job %s: token in the trace", j.Name)
		}
	}
}

// commitFile adds a file to the env's repository.
func commitFile(t *testing.T, e *env, name, content string) {
	t.Helper()
	repo := filepath.Join(e.dir, "repo")
	if err := os.WriteFile(filepath.Join(repo, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGit(t, repo, "add", name)
	mustGit(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "add "+name)
}

// when: on_failure uploads only when the job failed; the default
// (on_success) only when it succeeded; "nothing matched" is a warning.
func TestArtifactsWhen(t *testing.T) {
	e := newEnv(t, `
ok-on-failure:
  script: [echo x > report.txt]
  artifacts: {when: on_failure, paths: [report.txt]}
failed-on-failure:
  script: [echo x > report.txt, exit 1]
  artifacts: {when: on_failure, paths: [report.txt]}
failed-on-success:
  script: [echo x > report.txt, exit 1]
  artifacts: {paths: [report.txt]}
always-nothing:
  script: [echo nothing]
  artifacts: {when: always, paths: [missing/]}
`, coordinator.Options{})
	e.runConfig(e.config(2, ""))
	v := e.pipeline(2 * time.Minute)
	for _, tt := range []struct {
		job    string
		status string
		stored bool
		trace  string
	}{
		{"ok-on-failure", "success", false, "No artifacts to upload for a successful job"},
		{"failed-on-failure", "failed", true, "Uploaded artifacts"},
		{"failed-on-success", "failed", false, "No artifacts to upload for a failed job"},
		{"always-nothing", "success", false, "No files to upload"},
	} {
		j := jobByName(t, v, tt.job)
		_, _, stored := e.coord.ArtifactOf(j.ID, "archive")
		tr := e.coord.Trace(j.ID)
		if j.Status != tt.status || stored != tt.stored || !strings.Contains(string(tr), tt.trace) {
			t.Errorf("%s: status %s stored %v, want %s %v and %q in trace:\n%s", tt.job, j.Status, stored, tt.status, tt.stored, tt.trace, tr)
		}
	}
}

// A downloaded archive with a path escaping the project directory is
// refused: the dependent job fails, nothing is written outside.
func TestArtifactsEscapingPathRefused(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "go")
	e := newEnv(t, fmt.Sprintf(`
stages: [build, test]
evil:
  stage: build
  script:
    - while [ ! -e %q ]; do sleep 0.2; done
victim:
  stage: test
  script: [echo must-not-run]
`, marker), coordinator.Options{})
	e.runConfig(e.config(1, ""))
	pl, err := e.coord.CreatePipeline(e.project, "main")
	if err != nil {
		t.Fatal(err)
	}
	var evil coordinator.JobView
	deadline := time.Now().Add(time.Minute)
	for evil.Status != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("evil job not running: %+v", evil)
		}
		time.Sleep(50 * time.Millisecond)
		v, _ := e.coord.Pipeline(pl.ID)
		evil = jobByName(t, v, "evil")
	}
	// The crafted archive goes in through the upload endpoint with the
	// running job's token, as a compromised job could do.
	uploadCrafted(t, e.coord.URL(), evil.ID, evil.Token, map[string]string{
		"fine.txt":                 "ok",
		"../../escaped-artifact":   "evil",
		"sub/../../../escaped-too": "evil",
	})
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v := e.waitPipeline(pl.ID, 2*time.Minute)
	victim := jobByName(t, v, "victim")
	tr := e.coord.Trace(victim.ID)
	if victim.Status != "failed" || strings.Contains(string(tr), "\nmust-not-run") {
		t.Fatalf("victim %s:\n%s", victim.Status, tr)
	}
	contains(t, tr, "refused", "path escapes the destination directory", "../../escaped-artifact")
	err = filepath.Walk(e.dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(filepath.Base(p), "escaped") {
			t.Errorf("written outside the project directory: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func uploadCrafted(t *testing.T, base string, id int64, token string, entries map[string]string) {
	t.Helper()
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range entries {
			if !yield(k) {
				return
			}
		}
	}) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(entries[name]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, err := mw.CreateFormFile("file", "artifacts.zip")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = part.Write(zbuf.Bytes())
	_ = mw.Close()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/api/v4/jobs/%d/artifacts?artifact_type=archive&artifact_format=zip", strings.TrimSuffix(base, "/"), id), &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("JOB-TOKEN", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("crafted upload: %s", resp.Status)
	}
}
