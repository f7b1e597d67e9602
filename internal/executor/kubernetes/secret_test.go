package kubernetes

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/job"
)

// TestAgentSourcesAsShellExecutor: the agent in the pod gets the sources
// settings the shell executor's get_sources script uses for the same
// payload (both come from job.Prepare), CA bundle included.
func TestAgentSourcesAsShellExecutor(t *testing.T) {
	const caPEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		vars   []string
		check  func(s *agent.Sources) bool
		script string // in the shell executor's get_sources script
		absent string // not in it
	}{
		{"defaults", nil, func(s *agent.Sources) bool { return !s.NoClean && s.Strategy == "clone" && s.Depth == 0 && s.Checkout },
			"git clean -ffdx", ""},
		{"GIT_CLEAN_FLAGS=none", []string{"GIT_CLEAN_FLAGS", "none"}, func(s *agent.Sources) bool { return s.NoClean },
			"checkout -f -q", "git clean"},
		{"GIT_DEPTH", []string{"GIT_DEPTH", "3"}, func(s *agent.Sources) bool { return s.Depth == 3 }, "--depth 3", ""},
		{"submodules and checkout", []string{"GIT_SUBMODULE_STRATEGY", "recursive", "GIT_CHECKOUT", "false"},
			func(s *agent.Sources) bool { return s.Submodules == "recursive" && !s.Checkout }, "git submodule update --init --recursive", "checkout -f"},
		{"GIT_STRATEGY=none", []string{"GIT_STRATEGY", "none"}, func(s *agent.Sources) bool { return s.Strategy == "none" && s.RepoURL == "" },
			"Skipping Git repository setup", "git fetch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.ex.opts.TLSCAFile = caFile
			p := testPayload()
			for i := 0; i < len(tc.vars); i += 2 {
				p.Variables = append(p.Variables, job.Variable{Key: tc.vars[i], Value: tc.vars[i+1], Public: true})
			}
			req, err := h.ex.podRequest(t.Context(), &executor.Job{Payload: p})
			if err != nil {
				t.Fatal(err)
			}
			_, sec, err := BuildPod(req)
			if err != nil {
				t.Fatal(err)
			}
			var spec agent.Spec
			if err := json.Unmarshal(sec.Data[agent.SpecKey], &spec); err != nil {
				t.Fatal(err)
			}
			s := spec.Sources
			if s == nil || !tc.check(s) || s.Dir != "/builds/group/demo" {
				t.Fatalf("agent sources: %+v", s)
			}
			if s.Strategy != "none" && (s.CABundle != caPEM || s.RepoURL != p.GitInfo.RepoURL) {
				t.Errorf("agent sources lack the CA bundle or repository: %+v", s)
			}
			if got := spec.Files["/builds/group/demo.tmp/CI_SERVER_TLS_CA_FILE"]; got != caPEM {
				t.Errorf("CI_SERVER_TLS_CA_FILE file variable = %q; files %v", got, spec.Files)
			}

			// What the shell executor runs for the same payload.
			prep, err := job.Prepare(t.Context(), p, job.RunnerEnv{BuildsDir: "/builds", ProjectDir: "/builds/group/demo", TLSCAFile: caFile},
				job.ScriptOptions{Shell: "bash"})
			if err != nil {
				t.Fatal(err)
			}
			if want := agent.SourcesFrom(prep.Git, "/builds/group/demo"); !reflect.DeepEqual(want, s) {
				t.Errorf("agent sources differ from the shell executor's:\n got %+v\nwant %+v", s, want)
			}
			var script string
			for _, st := range prep.Plan.Stages {
				if st.Name == job.StageGetSources {
					script = st.Script
				}
			}
			if !strings.Contains(script, tc.script) || (tc.absent != "" && strings.Contains(script, tc.absent)) {
				t.Errorf("get_sources script: want %q, not %q:\n%s", tc.script, tc.absent, script)
			}
			if s.Strategy != "none" && !strings.Contains(script, "sslCAInfo") {
				t.Errorf("get_sources script does not trust CI_SERVER_TLS_CA_FILE:\n%s", script)
			}
		})
	}
}

func TestSecretTooLarge(t *testing.T) {
	req := podTestRequest(t)
	req.Files = map[string]string{"/big": strings.Repeat("x", 1<<20)}
	_, _, err := BuildPod(req)
	if err == nil || !strings.Contains(err.Error(), "do not fit in a Kubernetes Secret (1 MiB)") {
		t.Fatalf("err = %v", err)
	}
}

func TestMaskedPrefix(t *testing.T) {
	got, err := maskedPrefix([]byte("token glpat-abcdef and s3cr3t!"), job.Mask{Values: []string{"s3cr3t"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "token glpat-[MASKED] and [MASKED]!" {
		t.Errorf("masked prefix %q", got)
	}
	if _, err := maskedPrefix(make([]byte, maxTracePrefix+1), job.Mask{}); err == nil {
		t.Error("oversized prefix accepted")
	}
}
