package job

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// artifactsHelper writes a helper that logs "<token> <args>" per call
// (and answers --help, as the stage's guard asks).
func artifactsHelper(t *testing.T, dir string) (helper, log string) {
	t.Helper()
	log = filepath.Join(dir, "calls")
	helper = filepath.Join(dir, "helper")
	script := "#!/bin/sh\n" +
		"for a in \"$@\"; do [ \"$a\" = --help ] && exit 0; done\n" +
		"printf '%s' \"$CI_JOB_TOKEN\" >> " + quote(log) + "\n" +
		"for a in \"$@\"; do printf ' [%s]' \"$a\" >> " + quote(log) + "; done\n" +
		"echo >> " + quote(log) + "\n"
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return helper, log
}

func artifactCalls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func artifactsPlan(t *testing.T, p *Payload, opts ScriptOptions) *Plan {
	t.Helper()
	vars, err := BuildVariables(p, RunnerEnv{BuildsDir: "/b", ProjectDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	vars = append(vars, Variable{Key: "CI_SERVER_URL", Value: "http://gitlab.test"}, Variable{Key: "OUT", Value: "dist"})
	plan, err := NewPlan(t.Context(), p, vars, opts)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func artifactStage(p *Plan, name string) *Stage {
	for i := range p.Stages {
		if p.Stages[i].Name == name {
			return &p.Stages[i]
		}
	}
	return nil
}

func TestArtifactStages(t *testing.T) {
	dir := t.TempDir()
	helper, log := artifactsHelper(t, dir)
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.Token = "job-token"
	p.ID = 77
	p.Artifacts = []Artifact{
		{Name: "bin-$OUT", Paths: []string{"$OUT/", "**/*.so"}, Exclude: []string{"$OUT/*.tmp"}, Untracked: true, ExpireIn: "1 week"},
		{Name: "logs", Paths: []string{"logs"}, When: "on_failure"},
		{Name: "always", Paths: []string{"report.xml"}, When: "always", Type: "junit", Format: "gzip"},
		{Name: "dotenv", Paths: []string{"build.env"}, Type: "dotenv", Format: "gzip"},
		{Name: "nothing"}, // no paths: skipped
	}
	p.Dependencies = []Dependency{
		{ID: 10, Token: "dep-token-10", Name: "build"},
		{ID: 11, Token: "dep-token-11", Name: "no artifacts"},
		{ID: 12, Token: "dep-token'12", Name: "lint"},
	}
	p.Dependencies[0].ArtifactsFile.Filename = "artifacts.zip"
	p.Dependencies[2].ArtifactsFile.Filename = "artifacts.zip"
	plan := artifactsPlan(t, p, ScriptOptions{HelperPath: helper})

	want := map[string]struct {
		when  string
		calls []string
	}{
		StageDownloadArtifacts: {WhenOnSuccess, []string{
			"dep-token-10 [artifacts-downloader] [--url] [http://gitlab.test] [--id] [10] [--name] [build]",
			"dep-token'12 [artifacts-downloader] [--url] [http://gitlab.test] [--id] [12] [--name] [lint]",
		}},
		StageUploadArtifactsOK: {WhenOnSuccess, []string{
			"job-token [artifacts-uploader] [--url] [http://gitlab.test] [--id] [77] [--path] [dist/] [--path] [**/*.so] [--exclude] [dist/*.tmp] [--untracked] [--artifact-format] [zip] [--artifact-type] [archive] [--name] [bin-dist] [--expire-in] [1 week]",
			"job-token [artifacts-uploader] [--url] [http://gitlab.test] [--id] [77] [--path] [report.xml] [--artifact-format] [gzip] [--artifact-type] [junit] [--name] [always]",
			"job-token [artifacts-uploader] [--url] [http://gitlab.test] [--id] [77] [--path] [build.env] [--artifact-format] [gzip] [--artifact-type] [dotenv] [--name] [dotenv]",
		}},
		StageUploadArtifactsFail: {WhenOnFailure, []string{
			"job-token [artifacts-uploader] [--url] [http://gitlab.test] [--id] [77] [--path] [logs] [--artifact-format] [zip] [--artifact-type] [archive] [--name] [logs]",
			"job-token [artifacts-uploader] [--url] [http://gitlab.test] [--id] [77] [--path] [report.xml] [--artifact-format] [gzip] [--artifact-type] [junit] [--name] [always]",
		}},
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			st := artifactStage(plan, name)
			if st == nil {
				t.Fatalf("no %s stage in %v", name, stageNames(plan))
			}
			if st.When != w.when || st.Kind != KindSystem || st.AllowFailure {
				t.Errorf("when %s kind %s allow_failure %v", st.When, st.Kind, st.AllowFailure)
			}
			_ = os.Remove(log)
			out, code := runSh(t, "sh", *st, dir)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			got := artifactCalls(t, log)
			if strings.Join(got, "\n") != strings.Join(w.calls, "\n") {
				t.Errorf("helper calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(w.calls, "\n"))
			}
			if strings.Contains(out, "dep-token") || strings.Contains(out, "job-token") {
				t.Errorf("a token reached the trace:\n%s", out)
			}
		})
	}
	// Order: downloads before the script, uploads after the caches.
	names := strings.Join(stageNames(plan), ",")
	if !strings.Contains(names, "get_sources,download_artifacts,step_script") ||
		!strings.Contains(names, "step_script,upload_artifacts_on_success,upload_artifacts_on_failure,cleanup_file_variables") {
		t.Errorf("stage order %s", names)
	}
}

func TestArtifactStagesHelperFailure(t *testing.T) {
	dir := t.TempDir()
	helper := filepath.Join(dir, "helper")
	// Answers --help, fails every real call: a download failure fails the
	// stage (and so the job).
	if err := os.WriteFile(helper, []byte("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --help ] && exit 0; done\necho refused >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.Artifacts = []Artifact{{Paths: []string{"a"}}}
	p.Dependencies = []Dependency{{ID: 10, Token: "t", Name: "build"}}
	p.Dependencies[0].ArtifactsFile.Filename = "artifacts.zip"
	plan := artifactsPlan(t, p, ScriptOptions{HelperPath: helper})
	for _, name := range []string{StageDownloadArtifacts, StageUploadArtifactsOK} {
		if out, code := runSh(t, "sh", *artifactStage(plan, name), dir); code == 0 || !strings.Contains(out, "refused") {
			t.Errorf("%s: exit %d, output %q; want a failure", name, code, out)
		}
	}
	// No on_failure artifacts: the stage only says so, the helper is not called.
	if out, code := runSh(t, "sh", *artifactStage(plan, StageUploadArtifactsFail), dir); code != 0 || strings.Contains(out, "refused") ||
		!strings.Contains(out, "No artifacts to upload for a failed job") {
		t.Errorf("on_failure stage: exit %d, output %q", code, out)
	}
}

func TestArtifactStagesMissingHelper(t *testing.T) {
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.Artifacts = []Artifact{{Paths: []string{"a"}}}
	plan := artifactsPlan(t, p, ScriptOptions{HelperPath: filepath.Join(t.TempDir(), "missing")})
	out, code := runSh(t, "sh", *artifactStage(plan, StageUploadArtifactsOK), t.TempDir())
	if code != 0 || !strings.Contains(out, "Uploading artifacts is disabled") {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestArtifactsURL(t *testing.T) {
	vars := Variables{{Key: "CI_SERVER_URL", Value: "https://gitlab.example.com"}}
	for _, tt := range []struct{ clone, want string }{
		{"", "https://gitlab.example.com"},
		{"http://user:pw@10.0.0.1:8080/gitlab/", "http://10.0.0.1:8080/gitlab"},
		{"::bad", "https://gitlab.example.com"},
	} {
		if got := artifactsURL(vars, ScriptOptions{CloneURL: tt.clone}); got != tt.want {
			t.Errorf("clone_url %q: %q, want %q", tt.clone, got, tt.want)
		}
	}
}

func TestNoArtifactStages(t *testing.T) {
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.Artifacts = []Artifact{{Name: "x"}}
	p.Dependencies = []Dependency{{ID: 3, Name: "none"}}
	plan := artifactsPlan(t, p, ScriptOptions{})
	for _, n := range []string{StageDownloadArtifacts, StageUploadArtifactsOK, StageUploadArtifactsFail} {
		if artifactStage(plan, n) != nil {
			t.Errorf("unexpected stage %s", n)
		}
	}
}
