package job

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareCABundle(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(ca, []byte(pem), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Payload{Token: "tok", JobInfo: JobInfo{ProjectFullPath: "g/p"},
		GitInfo: GitInfo{RepoURL: "https://gitlab-ci-token:tok@gitlab.example:8443/g/p.git", Ref: "main", Sha: "0123456789abcdef0123456789abcdef01234567", RefType: "branch"},
		Steps:   []Step{{Name: "script", Script: []string{"true"}}}}
	env := RunnerEnv{BuildsDir: "/b", ProjectDir: "/b/g/p", TLSCAFile: ca}
	cases := []struct {
		name    string
		env     func(RunnerEnv) RunnerEnv
		wantErr string
		wantCA  bool
	}{
		{"tls-ca-file", func(e RunnerEnv) RunnerEnv { return e }, "", true},
		{"no CA", func(e RunnerEnv) RunnerEnv { e.TLSCAFile = ""; return e }, "", false},
		{"missing file", func(e RunnerEnv) RunnerEnv { e.TLSCAFile = filepath.Join(dir, "nope.crt"); return e }, "nope.crt", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prep, err := Prepare(t.Context(), p, c.env(env), ScriptOptions{Shell: "bash"})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "tls-ca-file") {
					t.Fatalf("err = %v, want one naming %s and tls-ca-file", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v, ok := prep.Variables.Lookup(TLSCAFileKey)
			var script string
			for _, st := range prep.Plan.Stages {
				if st.Name == StageGetSources {
					script = st.Script
				}
			}
			if !c.wantCA {
				if ok || prep.Git.CABundle != "" || strings.Contains(script, "sslCAInfo") {
					t.Fatalf("CA without a CA file: %+v", v)
				}
				return
			}
			path := "/b/g/p.tmp/" + TLSCAFileKey
			if !ok || !v.File || v.Value != pem || prep.Files[path] != pem || prep.Git.CABundle != pem {
				t.Fatalf("variable %+v, files %v, git CA %q", v, prep.Files, prep.Git.CABundle)
			}
			if !strings.Contains(script, "http.https://gitlab.example:8443/.sslCAInfo "+path) {
				t.Errorf("get_sources does not point git at the CA for the host:\n%s", script)
			}
		})
	}
}
