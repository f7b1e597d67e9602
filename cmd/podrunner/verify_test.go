package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func twoRunnerConfig(t *testing.T, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	writeFile(t, path, "concurrent = 2\n\n[[runners]]\n  name = \"alive\"\n  url = \""+url+"\"\n  token = \""+validToken+"\"\n  executor = \"shell\"\n\n[[runners]]\n  name = \"gone\"\n  url = \""+url+"\"\n  token = \""+goneToken+"\"\n  executor = \"shell\"\n\n[[runners]]\n  name = \"legacy\"\n  url = \""+url+"\"\n  token = \""+legacyToken+"\"\n  executor = \"shell\"\n")
	return path
}

func TestVerify(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	cfgPath := twoRunnerConfig(t, gl.URL)

	res := run(t, "verify", "-c", cfgPath)
	if res.code == 0 {
		t.Fatalf("verify with a removed runner succeeded: %+v", res)
	}
	for _, want := range []string{
		`Verifying runner... is valid  runner=validtoke name="alive"`,
		`Verifying runner... is removed  runner=gonetoken name="gone"`,
		`Verifying runner... is alive  runner=legacyrun name="legacy"`,
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, res.stdout)
		}
	}
	if !strings.Contains(res.stderr, "use --delete") {
		t.Errorf("stderr = %s", res.stderr)
	}
	if n := len(loadT(t, cfgPath).Runners); n != 3 {
		t.Fatalf("verify without --delete changed the config: %d runners", n)
	}

	// One runner selected by name.
	if res := run(t, "verify", "-c", cfgPath, "-n", "alive"); res.code != 0 || strings.Count(res.stdout, "Verifying") != 1 {
		t.Fatalf("verify -n alive: %+v", res)
	}

	res = run(t, "verify", "-c", cfgPath, "--delete")
	if res.code != 0 {
		t.Fatalf("verify --delete: %+v", res)
	}
	cfg := loadT(t, cfgPath)
	if len(cfg.Runners) != 2 || cfg.Runners[0].Name != "alive" || cfg.Runners[1].Name != "legacy" {
		t.Fatalf("runners after --delete = %+v", cfg.Runners)
	}

	if res := run(t, "verify", "-c", cfgPath, "-n", "nope"); res.code == 0 || !strings.Contains(res.stderr, `no runner in `+cfgPath+` matches [name "nope"]`) {
		t.Errorf("unknown name: %+v", res)
	}
}

func TestVerifyAdHocAndBadConfig(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	dir := t.TempDir()
	// Not in any config: verified from the command line alone.
	res := run(t, "verify", "-c", filepath.Join(dir, "none.toml"), "-u", gl.URL, "-t", validToken)
	if res.code != 0 || !strings.Contains(res.stdout, "is valid") {
		t.Fatalf("ad hoc verify: %+v", res)
	}
	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, "concurrent = \"x\"\n")
	res = run(t, "verify", "-c", bad)
	if res.code == 0 || !strings.Contains(res.stderr, bad+":1: concurrent: wrong type") {
		t.Fatalf("bad config: %+v", res)
	}
}

func TestUnregister(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	cfgPath := twoRunnerConfig(t, gl.URL)

	if res := run(t, "unregister", "-c", cfgPath); res.code == 0 || !strings.Contains(res.stderr, "--all-runners") {
		t.Fatalf("unregister without selection: %+v", res)
	}
	res := run(t, "unregister", "-c", cfgPath, "--name", "alive")
	if res.code != 0 || !strings.Contains(res.stdout, "Unregistering runner from GitLab succeeded") {
		t.Fatalf("unregister --name: %+v", res)
	}
	if got := gl.paths(); len(got) != 1 || got[0] != "DELETE /api/v4/runners/managers" {
		t.Errorf("glrt- runner: requests = %v, want DELETE runners/managers", got)
	}
	if len(loadT(t, cfgPath).Runners) != 2 {
		t.Fatal("runner not removed from config")
	}

	// --all-runners: the legacy one goes, the one GitLab refuses stays.
	res = run(t, "unregister", "-c", cfgPath, "--all-runners")
	if res.code == 0 || !strings.Contains(res.stderr, "kept in the config") {
		t.Fatalf("unregister --all-runners: %+v", res)
	}
	got := gl.paths()
	if got[len(got)-1] != "DELETE /api/v4/runners" {
		t.Errorf("legacy runner: requests = %v, want DELETE runners last", got)
	}
	cfg := loadT(t, cfgPath)
	if len(cfg.Runners) != 1 || cfg.Runners[0].Name != "gone" {
		t.Fatalf("runners left = %+v", cfg.Runners)
	}
}

func TestResetToken(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	cfgPath := twoRunnerConfig(t, gl.URL)
	res := run(t, "reset-token", "-c", cfgPath, "-n", "legacy")
	if res.code != 0 {
		t.Fatalf("reset-token: %+v", res)
	}
	r := loadT(t, cfgPath).Runners[2]
	if r.Token != resetToken || r.TokenExpiresAt.Year() != 2031 || r.TokenObtainedAt.IsZero() {
		t.Errorf("runner after reset = %+v", r)
	}
	if got := gl.paths(); len(got) != 1 || got[0] != "POST /api/v4/runners/reset_authentication_token" {
		t.Errorf("requests = %v", got)
	}
	if res := run(t, "reset-token", "-c", cfgPath, "-n", "gone"); res.code == 0 || !strings.Contains(res.stdout, "403") {
		t.Errorf("reset of a removed runner: %+v", res)
	}
}

func TestListAndVersion(t *testing.T) {
	clearEnv(t)
	cfgPath := twoRunnerConfig(t, "https://gitlab.example.com")
	res := run(t, "list", "-c", cfgPath)
	if res.code != 0 {
		t.Fatalf("list: %+v", res)
	}
	for _, want := range []string{"NAME", "alive", "shell", "https://gitlab.example.com", "validtoke...", "legacyrun..."} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, res.stdout)
		}
	}
	for _, tok := range []string{validToken, goneToken, legacyToken} {
		if strings.Contains(res.stdout+res.stderr, tok) {
			t.Errorf("list printed a full token")
		}
	}
	if res := run(t, "list", "-c", filepath.Join(t.TempDir(), "none.toml")); res.code == 0 || !strings.Contains(res.stderr, "does not exist") {
		t.Errorf("list of a missing config: %+v", res)
	}
	res = run(t, "version")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "Version:      dev\nGit revision: ") || !strings.Contains(res.stdout, "OS/Arch:") {
		t.Errorf("version: %+v", res)
	}
}

func TestGlobalFlags(t *testing.T) {
	clearEnv(t)
	if res := run(t, "--log-format", "xml", "version"); res.code == 0 || !strings.Contains(res.stderr, `unknown log format "xml"`) {
		t.Errorf("bad log format: %+v", res)
	}
	if res := run(t, "-l", "loud", "version"); res.code == 0 || !strings.Contains(res.stderr, `unknown log level "loud"`) {
		t.Errorf("bad log level: %+v", res)
	}
	t.Setenv("LOG_FORMAT", "json")
	gl := newFakeGitLab(t)
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	res := run(t, "--debug", "register", "-n", "-c", cfgPath, "-u", gl.URL, "-t", validToken, "--executor", "shell")
	if res.code != 0 || !strings.Contains(res.stderr, `"msg":"runner registered"`) {
		t.Fatalf("json logging from $LOG_FORMAT: %+v", res)
	}
	if strings.Contains(res.stderr, validToken) {
		t.Errorf("token logged:\n%s", res.stderr)
	}
	if res := run(t, "nosuchcommand"); res.code == 0 {
		t.Errorf("unknown command succeeded")
	}
}
