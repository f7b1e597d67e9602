package job

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	vars := Variables{
		{Key: "A", Value: "a"},
		{Key: "B", Value: "${A}-$A-$$A-$$-$1-$*-${MISSING}x"},
		{Key: "RAW", Value: "$A ${A}", Raw: true},
		{Key: "A", Value: "a2"}, // later wins
		{Key: "F", Value: "content", File: true},
		{Key: "USEF", Value: "$F"},
		{Key: TempProjectDirKey, Value: "/b/p.tmp"},
		{Key: "SELF", Value: "x$SELF"},
	}
	got := vars.Expand()
	want := map[string]string{
		"B":    "a2-a2-$A-$---x",
		"RAW":  "$A ${A}",
		"USEF": "/b/p.tmp/F",
		"SELF": "xx$SELF", // one pass, no recursion
	}
	for k, w := range want {
		if g := got.Value(k); g != w {
			t.Errorf("%s = %q, want %q", k, g, w)
		}
	}
	if got.Get("F") != "/b/p.tmp/F" || got.Value("F") != "content" {
		t.Errorf("file variable: Get %q Value %q", got.Get("F"), got.Value("F"))
	}
	if vars.Get("A") != "a2" {
		t.Errorf("later variable must win, got %q", vars.Get("A"))
	}
}

func TestShortToken(t *testing.T) {
	tests := map[string]string{
		"glrt-abcdefghijklmn":     "abcdefghi",
		"glrt-t1_abcdefghijklmn":  "abcdefghi",
		"t2_abcdefghijklmn":       "abcdefghi",
		"glrtr-abcdefghijklmn":    "abcdefghi",
		"glcbt-abcdefghijklmn":    "abcdefghi",
		"GR1348941abcdefghijklmn": "abcdefghi",
		"GRxyz":                   "GRxyz",
		"abcdefghijkl":            "abcdefghi",
		"short":                   "short",
		"":                        "",
	}
	for in, want := range tests {
		if got := ShortToken(in); got != want {
			t.Errorf("ShortToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildVariablesAndMask(t *testing.T) {
	p := &Payload{
		ID: 7, Token: "glcbt-jobtoken",
		RunnerInfo: RunnerInfo{Timeout: 0},
		GitInfo:    GitInfo{RepoURL: "https://gitlab-ci-token:urlpass123@h/g/p.git"},
		Variables: Variables{
			{Key: "CFG", Value: "from-job"},
			{Key: "SECRET", Value: "s3cr3t-$CFG", Masked: true},
			{Key: "CI_PROJECT_DIR", Value: "/stale"},
		},
		Dependencies: []Dependency{{ID: 1, Token: "deptoken1"}},
		Credentials:  []Credential{{Password: "regpass99"}},
		Features:     Features{TokenMaskPrefixes: []string{"glpat-", "glpat-", ""}},
	}
	vars, err := BuildVariables(p, RunnerEnv{
		BuildsDir: "/b", ProjectDir: "/b/x/0/g/p", ConcurrentID: 3, ConcurrentProjectID: 1,
		RunnerToken: "glrt-t1_abcdefghijk", RunnerVersion: "1.2.3", SharedEnvironment: true,
		Environment: []string{"CFG=from-config", "EMPTY="},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CFG": "from-job", "EMPTY": "", "CI_PROJECT_DIR": "/b/x/0/g/p", "CI_BUILDS_DIR": "/b",
		"CI_CONCURRENT_ID": "3", "CI_CONCURRENT_PROJECT_ID": "1", "CI_RUNNER_SHORT_TOKEN": "abcdefghi",
		"CI_SERVER": "yes", "CI_JOB_TIMEOUT": "7200", "CI_SHARED_ENVIRONMENT": "true",
		"CI_RUNNER_VERSION": "1.2.3", TempProjectDirKey: "/b/x/0/g/p.tmp", "SECRET": "s3cr3t-from-job",
	}
	for k, w := range want {
		if g := vars.Get(k); g != w {
			t.Errorf("%s = %q, want %q", k, g, w)
		}
	}
	if !strings.Contains(vars.Get("CI_RUNNER_EXECUTABLE_ARCH"), "/") {
		t.Errorf("CI_RUNNER_EXECUTABLE_ARCH = %q", vars.Get("CI_RUNNER_EXECUTABLE_ARCH"))
	}
	if _, ok := vars.Lookup("CI_DISPOSABLE_ENVIRONMENT"); ok {
		t.Error("shared environment must not set CI_DISPOSABLE_ENVIRONMENT")
	}
	m := MaskFor(p, vars)
	for _, s := range []string{"s3cr3t-$CFG", "s3cr3t-from-job", "glcbt-jobtoken", "deptoken1", "regpass99", "urlpass123"} {
		if !slices.Contains(m.Values, s) {
			t.Errorf("mask values %q miss %q", m.Values, s)
		}
	}
	if !slices.Equal(m.Prefixes, []string{"glpat-"}) {
		t.Errorf("prefixes %q", m.Prefixes)
	}
	if _, err := BuildVariables(p, RunnerEnv{Environment: []string{"NOEQUALS"}}); err == nil {
		t.Error("want error for an environment entry without '='")
	}
}

func TestShellQuoteNUL(t *testing.T) {
	if _, err := ShellQuote("a\x00b"); err == nil {
		t.Fatal("want error for NUL")
	}
}

// FuzzShellQuote: for any value, exporting it through the generated script
// code and printing it back with sh reproduces it exactly.
func FuzzShellQuote(f *testing.F) {
	shPath, err := exec.LookPath("sh")
	if err != nil {
		f.Skip("sh not installed")
	}
	for _, s := range []string{"", "plain", "it's", `"dq"`, "$HOME ${X} $(id) `id`", "a\nb\n", "✅ 동작", "\\", "'", "''\\''", "-n", "\xff\xfe", "~", "!x", "a b\tc", "%s%n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ShellQuote(s)
		if strings.IndexByte(s, 0) >= 0 {
			if err == nil {
				t.Fatal("NUL accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var w scriptWriter
		w.exports(Variables{{Key: "V", Value: s}})
		script := w.b.String() + "printf '%s' \"$V\"\n"
		if !strings.Contains(script, q) {
			t.Fatalf("export does not use ShellQuote: %q", script)
		}
		out, err := exec.Command(shPath, "-c", script).Output()
		if err != nil {
			t.Fatalf("sh failed for %q: %v", s, err)
		}
		if string(out) != s {
			t.Fatalf("round trip: got %q want %q", out, s)
		}
	})
}
