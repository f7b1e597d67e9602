package job

import (
	"fmt"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// TempProjectDirKey is the runner variable holding the job's temporary
// directory (CI_PROJECT_DIR + ".tmp"); file variables are written there.
const TempProjectDirKey = "RUNNER_TEMP_PROJECT_DIR"

// Get returns the value of the last variable named key (later entries win).
// For a file variable it returns the path of the file holding the value.
// As in GitLab Runner, "$" yields "$" (so "$$" expands to "$") and the
// shell's special parameters ($*, $#, $1 …) yield "".
func (vs Variables) Get(key string) string { return vs.value(key, true) }

// Value is Get without the file-variable indirection: a file variable
// yields its content.
func (vs Variables) Value(key string) string { return vs.value(key, false) }

// Lookup reports whether a variable named key exists and returns the last one.
func (vs Variables) Lookup(key string) (Variable, bool) {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Key == key {
			return vs[i], true
		}
	}
	return Variable{}, false
}

func (vs Variables) value(key string, filePath bool) string {
	if s, ok := special(key); ok {
		return s
	}
	v, ok := vs.Lookup(key)
	return resolve(v, ok, filePath, func() string { return vs.Value(TempProjectDirKey) })
}

// special is the value of "$" and the shell's special parameters.
func special(key string) (string, bool) {
	switch key {
	case "$":
		return "$", true
	case "*", "#", "@", "!", "?", "-", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9":
		return "", true
	}
	return "", false
}

func resolve(v Variable, ok, filePath bool, tempDir func() string) string {
	if !ok {
		return ""
	}
	if v.File && filePath {
		return path.Join(tempDir(), v.Key)
	}
	return v.Value
}

// FilePath is where the file variable key is written: under the job's
// temporary directory.
func (vs Variables) FilePath(key string) string {
	return path.Join(vs.Value(TempProjectDirKey), key)
}

// index answers Get for a list that does not change in constant time
// (Lookup is a scan from the end: once per variable that is quadratic,
// and jobs with 200 000 variables exist).
type index struct {
	vs      Variables
	last    map[string]int
	tempDir string
}

func (vs Variables) index() *index {
	x := &index{vs: vs, last: make(map[string]int, len(vs))}
	for i, v := range vs {
		x.last[v.Key] = i
	}
	if i, ok := x.last[TempProjectDirKey]; ok {
		x.tempDir = vs[i].Value
	}
	return x
}

// isLast reports whether vs[i] is the last variable of its name (the
// one that wins).
func (x *index) isLast(i int) bool { return x.last[x.vs[i].Key] == i }

func (x *index) filePath(key string) string { return path.Join(x.tempDir, key) }

// Get is Variables.Get.
func (x *index) Get(key string) string {
	if s, ok := special(key); ok {
		return s
	}
	i, ok := x.last[key]
	var v Variable
	if ok {
		v = x.vs[i]
	}
	return resolve(v, ok, true, func() string { return x.tempDir })
}

// Bool reads a variable as a boolean ("true", "1", "yes" …); unset or
// unparsable is false.
func (vs Variables) Bool(key string) bool {
	s := strings.ToLower(strings.TrimSpace(vs.Get(key)))
	switch s {
	case "yes", "on", "y":
		return true
	}
	b, err := strconv.ParseBool(s)
	return err == nil && b
}

// ExpandValue expands $VAR and ${VAR} in s against vs, like GitLab Runner
// (os.Expand semantics: one pass, unknown variables become empty, "$$"
// becomes "$").
func (vs Variables) ExpandValue(s string) string {
	return os.Expand(s, vs.Get)
}

// Expand returns a copy where every non-raw value is expanded against the
// original list (one pass, no recursion, as in GitLab Runner).
func (vs Variables) Expand() Variables {
	out := make(Variables, len(vs))
	var x *index // only when something is to be expanded
	for i, v := range vs {
		if !v.Raw && strings.IndexByte(v.Value, '$') >= 0 {
			if x == nil {
				x = vs.index()
			}
			v.Value = os.Expand(v.Value, x.Get)
		}
		out[i] = v
	}
	return out
}

// Public returns the public variables (safe for a process or pod spec).
func (vs Variables) Public() Variables {
	var out Variables
	for _, v := range vs {
		if v.Public {
			out = append(out, v)
		}
	}
	return out
}

// Masked returns the values of masked variables.
func (vs Variables) Masked() []string {
	var out []string
	for _, v := range vs {
		if v.Masked && v.Value != "" {
			out = append(out, v.Value)
		}
	}
	return out
}

// RunnerEnv is what the runner knows about the place a job runs in; it
// feeds the runner-side predefined variables.
type RunnerEnv struct {
	BuildsDir           string // CI_BUILDS_DIR
	ProjectDir          string // CI_PROJECT_DIR; RUNNER_TEMP_PROJECT_DIR is ProjectDir+".tmp"
	ConcurrentID        int    // CI_CONCURRENT_ID
	ConcurrentProjectID int    // CI_CONCURRENT_PROJECT_ID
	RunnerToken         string // only its short form is exposed (CI_RUNNER_SHORT_TOKEN)
	RunnerVersion       string // CI_RUNNER_VERSION
	RunnerRevision      string // CI_RUNNER_REVISION
	ExecutableArch      string // CI_RUNNER_EXECUTABLE_ARCH; default GOOS/GOARCH
	// SharedEnvironment is true when jobs share the machine (shell
	// executor: CI_SHARED_ENVIRONMENT=true), false for disposable ones
	// (pods: CI_DISPOSABLE_ENVIRONMENT=true).
	SharedEnvironment bool
	// Environment holds config.toml environment entries, "KEY=VALUE".
	Environment []string
	// TLSCAFile holds the CA certificates (PEM) the runner trusts for
	// GitLab (tls-ca-file or certs/<host>.crt); jobs get its content as the
	// file variable CI_SERVER_TLS_CA_FILE, as with GitLab Runner. Read for
	// every job, so a rotated file is picked up.
	TLSCAFile string
}

// TLSCAFileKey is the file variable holding the CA certificates of GitLab;
// git, the artifacts and the cache helpers trust it.
const TLSCAFileKey = "CI_SERVER_TLS_CA_FILE"

// BuildVariables returns all variables of a job, expanded: config
// environment entries first (the job may override them), then the job's
// variables, then the runner's own. Runner-side values that describe the
// actual environment (CI_PROJECT_DIR, CI_BUILDS_DIR, CI_CONCURRENT_*) come
// last so a stale value sent by the server cannot point the job elsewhere.
func BuildVariables(p *Payload, env RunnerEnv) (Variables, error) {
	var vs Variables
	for i, e := range env.Environment {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("runner environment[%d] %q: expected KEY=VALUE", i, e)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("runner environment[%d] %s: value contains a NUL byte", i, k)
		}
		vs = append(vs, Variable{Key: k, Value: v, Public: true})
	}
	vs = append(vs, p.Variables...)

	arch := env.ExecutableArch
	if arch == "" {
		arch = runtime.GOOS + "/" + runtime.GOARCH
	}
	timeout := p.RunnerInfo.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeoutSeconds
	}
	pub := func(k, v string) Variable { return Variable{Key: k, Value: v, Public: true} }
	if env.SharedEnvironment {
		vs = append(vs, pub("CI_SHARED_ENVIRONMENT", "true"))
	} else {
		vs = append(vs, pub("CI_DISPOSABLE_ENVIRONMENT", "true"))
	}
	vs = append(vs,
		pub("CI_SERVER", "yes"),
		pub("CI_RUNNER_SHORT_TOKEN", ShortToken(env.RunnerToken)),
		pub("CI_RUNNER_VERSION", env.RunnerVersion),
		pub("CI_RUNNER_REVISION", env.RunnerRevision),
		pub("CI_RUNNER_EXECUTABLE_ARCH", arch),
		pub("CI_JOB_TIMEOUT", strconv.Itoa(timeout)),
		pub("CI_BUILDS_DIR", env.BuildsDir),
		pub("CI_PROJECT_DIR", env.ProjectDir),
		pub("CI_CONCURRENT_ID", strconv.Itoa(env.ConcurrentID)),
		pub("CI_CONCURRENT_PROJECT_ID", strconv.Itoa(env.ConcurrentProjectID)),
		pub(TempProjectDirKey, env.ProjectDir+".tmp"),
	)
	if env.TLSCAFile != "" {
		pem, err := os.ReadFile(env.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("read the CA certificates of GitLab %s (tls-ca-file or certs/<host>.crt): %w", env.TLSCAFile, err)
		}
		vs = append(vs, Variable{Key: TLSCAFileKey, Value: string(pem), Public: true, File: true, Raw: true})
	}
	return vs.Expand(), nil
}

// Mask is what the trace must hide.
type Mask struct {
	// Values are exact secrets: masked variables (as sent and as
	// expanded), the job token, dependency tokens, registry passwords and
	// the password of the repository URL. Longest first, no duplicates.
	Values []string
	// Prefixes are token prefixes (features.token_mask_prefixes): a token
	// starting with one of them is masked whatever follows.
	Prefixes []string
}

// MaskFor collects the secrets of a job. vars should be the expanded
// variables (BuildVariables); the payload's own masked values are added too.
func MaskFor(p *Payload, vars Variables) Mask {
	var vals []string
	vals = append(vals, p.Variables.Masked()...)
	vals = append(vals, vars.Masked()...)
	vals = append(vals, p.Token)
	for _, d := range p.Dependencies {
		vals = append(vals, d.Token)
	}
	for _, c := range p.Credentials {
		vals = append(vals, c.Password)
	}
	if pw := urlPassword(p.GitInfo.RepoURL); pw != "" {
		vals = append(vals, pw)
	}
	vals = sortMaskValues(vals)
	var prefixes []string
	for _, pre := range p.Features.TokenMaskPrefixes {
		if pre != "" && !slices.Contains(prefixes, pre) {
			prefixes = append(prefixes, pre)
		}
	}
	return Mask{Values: vals, Prefixes: prefixes}
}

// with returns m with vals added to its Values.
func (m Mask) with(vals ...string) Mask {
	if len(vals) == 0 {
		return m
	}
	m.Values = sortMaskValues(append(slices.Clone(m.Values), vals...))
	return m
}

// sortMaskValues drops empty values and duplicates, longest first.
func sortMaskValues(vals []string) []string {
	vals = slices.DeleteFunc(vals, func(s string) bool { return s == "" })
	slices.SortFunc(vals, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(vals)
}

// ShortToken is the short form of a runner token used in builds
// directories, pod names and CI_RUNNER_SHORT_TOKEN: the first 9 characters
// after a known prefix (glrt-, glrt-t1_, t1_, glrtr-, glcbt-, GR+7 hex).
func ShortToken(token string) string {
	t := token
	for _, pre := range []string{"glrtr-", "glrt-", "glcbt-"} {
		if strings.HasPrefix(t, pre) {
			t = t[len(pre):]
			break
		}
	}
	// Partition prefix "t1_", "t2_" … (also after glrt-).
	if len(t) >= 3 && t[0] == 't' && t[1] >= '1' && t[1] <= '3' && t[2] == '_' {
		t = t[3:]
	}
	if len(t) > 9 && strings.HasPrefix(t, "GR") && isHex(t[2:9]) {
		t = t[9:]
	}
	if len(t) > 9 {
		t = t[:9]
	}
	return t
}

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}
