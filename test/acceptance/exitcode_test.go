package acceptance

import (
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

// exitCodePipeline fails each job in one of the ways a script can fail;
// each allows exactly the exit code GitLab must see (allow_failure:
// exit_codes matches GitLab's exit_code of the job), so the pipeline
// passes only when every code is right.
const exitCodePipeline = `
builtin-exit:
  script: ["exit 7"]
  allow_failure: {exit_codes: [7]}
external-exit:
  script: ["sh -c 'exit 7'", "echo never"]
  allow_failure: {exit_codes: [7]}
not-found:
  script: ["no-such-command-podrunner", "echo never"]
  allow_failure: {exit_codes: [127]}
signal-killed:
  script: ["sh -c 'kill -9 $$'", "echo never"]
  allow_failure: {exit_codes: [137]}
`

// TestExitCodesPerShell: the job's exit_code is the failing command's,
// with bash and sh alike (bash 5.2 used to report 1 for every failing
// external command of an eval under errexit).
func TestExitCodesPerShell(t *testing.T) {
	want := map[string]int{"builtin-exit": 7, "external-exit": 7, "not-found": 127, "signal-killed": 137}
	for _, shell := range []string{"bash", "sh"} {
		t.Run(shell, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, exitCodePipeline, coordinator.Options{})
			e.runConfig(e.config(2, `  shell = "`+shell+`"`))
			v := e.pipeline(2 * time.Minute)
			for name, code := range want {
				j := jobByName(t, v, name)
				if j.Status != "failed" || j.FailureReason != "script_failure" || j.ExitCode != code || !j.AllowFailure {
					t.Errorf("%s: status %s, reason %s, exit code %d, allowed %v; want failed, script_failure, %d, allowed",
						name, j.Status, j.FailureReason, j.ExitCode, j.AllowFailure, code)
				}
				if tr := string(e.coord.Trace(j.ID)); strings.Contains(tr, "\nnever") {
					t.Errorf("%s: a command after the failing one ran", name)
				}
			}
			if v.Status != "success" {
				t.Errorf("pipeline %s, want success (every failure allowed by its exit code)", v.Status)
			}
		})
	}
}
