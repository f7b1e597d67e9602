package job

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSanitizeCacheKey(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{in: "default-protected", want: "default-protected"},
		{in: "build/main", want: "build/main"},
		{in: "/leading//double/./dot/", want: "leading/double/dot"},
		{in: `win\style\key`, want: "win/style/key"},
		{in: "enc%2Fslash%2fx", want: "enc/slash/x"},
		{in: "trailing  /  ", want: "trailing"},
		{in: "a/b \t", want: "a/b"},
		{in: " lead", want: " lead"},
		{in: "dots..inside", want: "dots..inside"},
		{in: "../escape", err: true},
		{in: "a/../b", err: true},
		{in: `a\..\b`, err: true},
		{in: "%2e%2e/x", err: true},
		{in: "a/.. ", err: true},
		{in: "", err: true},
		{in: "/ /./", err: true},
		{in: "nul\x00", err: true},
	} {
		got, err := SanitizeCacheKey(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("SanitizeCacheKey(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SanitizeCacheKey(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCacheObjectName(t *testing.T) {
	for _, tc := range []struct {
		store CacheStore
		token string
		key   string
		want  string
		err   bool
	}{
		{store: CacheStore{}, token: "abcdefghi", key: "k", want: "runner/abcdefghi/project/42/k"},
		{store: CacheStore{Shared: true}, token: "abcdefghi", key: "k/sub", want: "project/42/k/sub"},
		{store: CacheStore{Path: "/prefix/x/"}, token: "tok", key: "k", want: "prefix/x/runner/tok/project/42/k"},
		{store: CacheStore{Path: "p", Shared: true}, key: "k", want: "p/project/42/k"},
		{store: CacheStore{}, token: "", key: "k", err: true},
		{store: CacheStore{Shared: true}, key: "../43/k", err: true},
		{store: CacheStore{Shared: true}, key: "", err: true},
	} {
		got, err := CacheObjectName(&tc.store, tc.token, 42, tc.key)
		if tc.err {
			if err == nil {
				t.Errorf("%+v %q: got %q, want an error", tc.store, tc.key, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v %q: got %q, %v; want %q", tc.store, tc.key, got, err, tc.want)
		}
	}
}

func TestCacheFile(t *testing.T) {
	got, err := CacheFile("/cache", "group/demo", 7, "k/sub")
	if err != nil || got != "/cache/group/demo/k/sub/cache.zip" {
		t.Errorf("got %q, %v", got, err)
	}
	got, err = CacheFile("/cache", "", 7, "k")
	if err != nil || got != "/cache/project-7/k/cache.zip" {
		t.Errorf("no project path: got %q, %v", got, err)
	}
	if got, err := CacheFile("/cache", "../../etc", 7, "k"); err != nil || got != "/cache/etc/k/cache.zip" {
		t.Errorf("escaping project path: got %q, %v", got, err)
	}
	if _, err := CacheFile("/cache", "g/p", 7, "../../x"); err == nil {
		t.Error("a key escaping the project directory must be refused")
	}
}

func TestResolveCache(t *testing.T) {
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.JobInfo.Name = "build"
	vars := Variables{{Key: "BRANCH", Value: "feat"}, {Key: "POLICY", Value: "pull"}}
	for _, tc := range []struct {
		name      string
		c         Cache
		fallback  string // CACHE_FALLBACK_KEY
		key       string
		fallbacks []string
		policy    string
		when      string
		warnings  int
		err       bool
	}{
		{name: "defaults", c: Cache{Paths: []string{"x"}}, key: "build/main", policy: "pull-push", when: "on_success"},
		{name: "expanded", c: Cache{Key: "deps-$BRANCH-protected", Policy: "$POLICY", When: "always"},
			key: "deps-feat-protected", policy: "pull", when: "always"},
		{name: "fallback order, duplicates dropped", c: Cache{Key: "k", FallbackKeys: []string{"f1-$BRANCH", "k", "f2-protected"}},
			fallback: "global", key: "k", fallbacks: []string{"f1-feat", "f2-protected", "global"}, policy: "pull-push", when: "on_success"},
		{name: "protected CACHE_FALLBACK_KEY refused", c: Cache{Key: "k"}, fallback: "main-protected  ",
			key: "k", policy: "pull-push", when: "on_success", warnings: 1},
		{name: "bad fallback skipped", c: Cache{Key: "k", FallbackKeys: []string{"../x", "ok"}},
			key: "k", fallbacks: []string{"ok"}, policy: "pull-push", when: "on_success", warnings: 1},
		{name: "unknown policy", c: Cache{Key: "k", Policy: "pul"}, err: true},
		{name: "unknown when", c: Cache{Key: "k", When: "never"}, err: true},
		{name: "escaping key", c: Cache{Key: "../../other"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := slices.Clone(vars)
			if tc.fallback != "" {
				v = append(v, Variable{Key: "CACHE_FALLBACK_KEY", Value: tc.fallback})
			}
			e, err := resolveCache(tc.c, p, v)
			if tc.err {
				if err == nil {
					t.Fatalf("want an error, got %+v", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.key != tc.key || !slices.Equal(e.fallbacks, tc.fallbacks) || e.policy != tc.policy || e.when != tc.when || len(e.warnings) != tc.warnings {
				t.Errorf("got %+v", e)
			}
		})
	}
}

func fakeHelper(t *testing.T, dir string) (helper, log string) {
	t.Helper()
	helper = filepath.Join(dir, "helper")
	log = filepath.Join(dir, "calls.log")
	script := `#!/bin/sh
[ "$2" = --help ] && exit 0
printf '%s\n' "$*" >> ` + log + `
for k in $FAIL_KEYS; do
  case "$*" in *"/$k/cache.zip"*|*"/$k "*|*"/$k?"*) echo "cache not found" >&2; exit 1;; esac
done
for k in $NOFILES_KEYS; do
  case "$*" in *"/$k/cache.zip"*|*"/$k "*) echo "No files to cache"; exit 3;; esac
done
exit 0
`
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return helper, log
}

func runStage(t *testing.T, st Stage, env ...string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", st.Script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stage %s: %v\n%s", st.Name, err, out)
	}
	return string(out)
}

func stage(plan *Plan, name string) *Stage {
	for i := range plan.Stages {
		if plan.Stages[i].Name == name {
			return &plan.Stages[i]
		}
	}
	return nil
}

func cachePlan(t *testing.T, caches []Cache, opts ScriptOptions, extra ...Variable) *Plan {
	t.Helper()
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.JobInfo.ProjectID = 42
	p.JobInfo.ProjectFullPath = "group/demo"
	p.GitInfo.RepoURL = "https://gitlab-ci-token:tok@example.com/group/demo.git"
	p.Cache = caches
	dir := t.TempDir()
	vars, err := BuildVariables(p, RunnerEnv{BuildsDir: dir, ProjectDir: dir, RunnerToken: "glrt-abcdefghijklmnop"})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(t.Context(), p, append(vars, extra...), opts)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func readCalls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestRestoreCacheScriptTriesKeysInOrder(t *testing.T) {
	dir := t.TempDir()
	helper, log := fakeHelper(t, dir)
	plan := cachePlan(t, []Cache{
		{Key: "main-key", Paths: []string{"vendor"}, FallbackKeys: []string{"fb1", "fb2"}},
		{Key: "pushonly", Paths: []string{"x"}, Policy: "push"},
		{Key: "nopaths"},
	}, ScriptOptions{HelperPath: helper, CacheDir: "/c"}, Variable{Key: "CACHE_FALLBACK_KEY", Value: "global"})
	st := stage(plan, StageRestoreCache)
	if st == nil || st.Kind != KindSystem || st.When != WhenOnSuccess {
		t.Fatalf("restore stage: %+v", st)
	}
	out := runStage(t, *st, "FAIL_KEYS=main-key fb1")
	calls := readCalls(t, log)
	want := []string{
		"cache-extractor --file /c/group/demo/main-key/cache.zip --timeout 10",
		"cache-extractor --file /c/group/demo/fb1/cache.zip --timeout 10",
		"cache-extractor --file /c/group/demo/fb2/cache.zip --timeout 10",
	}
	if !slices.Equal(calls, want) {
		t.Errorf("helper calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range []string{"Checking cache for main-key...", "Failed to extract cache", "Checking cache for fb2...",
		"Successfully extracted cache", "Not downloading cache pushonly due to policy"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "Checking cache for global") {
		t.Errorf("keys after the first hit must not be tried:\n%s", out)
	}

	// Nothing found at all: warnings only, the stage still succeeds.
	os.Remove(log)
	out = runStage(t, *st, "FAIL_KEYS=main-key fb1 fb2 global")
	if n := len(readCalls(t, log)); n != 4 {
		t.Errorf("%d helper calls, want 4 (key, 2 fallbacks, CACHE_FALLBACK_KEY)", n)
	}
	if strings.Contains(out, "Successfully extracted") {
		t.Errorf("nothing was extracted:\n%s", out)
	}
}

// fakeSigner hands out URLs whose signature is sig+object; objects named
// in fail make it fail.
type fakeSigner struct {
	fail map[string]bool
	ttls []time.Duration
}

func (f *fakeSigner) sign(op, object string, ttl time.Duration) (string, error) {
	f.ttls = append(f.ttls, ttl)
	if f.fail[object] {
		return "", errors.New("store said no for " + object)
	}
	return "https://store.example/b/" + object + "?X-Amz-Credential=AKID%2Fx&X-Amz-Signature=SIG" + op + strings.ReplaceAll(object, "/", "") + "%2B%3D", nil
}

func (f *fakeSigner) GetURL(_ context.Context, object string, ttl time.Duration) (string, error) {
	return f.sign("get", object, ttl)
}

func (f *fakeSigner) PutURL(_ context.Context, object string, ttl time.Duration) (string, http.Header, error) {
	u, err := f.sign("put", object, ttl)
	return u, http.Header{"X-Ms-Blob-Type": {"BlockBlob"}, "Content-Type": {"application/zip"}}, err
}

// TestCacheScriptsPreSignedURLs: the helper gets one pre-signed URL per
// key and operation (and the upload's headers), never a store credential;
// the signatures are in the job's mask and never in the stage's output; a
// URL that cannot be signed skips that key with a warning.
func TestCacheScriptsPreSignedURLs(t *testing.T) {
	dir := t.TempDir()
	helper, log := fakeHelper(t, dir)
	signer := &fakeSigner{fail: map[string]bool{"pre/runner/abcdefghi/project/42/bad": true}}
	store := &CacheStore{Type: "s3", Path: "pre", MaxUploadedArchiveSize: 1000, Signer: signer}
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.JobInfo.ProjectID = 42
	p.GitInfo.RepoURL = "https://example.com/group/demo.git"
	p.RunnerInfo.Timeout = 3600
	p.Cache = []Cache{{Key: "k", FallbackKeys: []string{"bad", "fb"}, Paths: []string{"a", "b/**"}, Untracked: true}}
	root := t.TempDir()
	prep, err := Prepare(t.Context(), p, RunnerEnv{BuildsDir: root, ProjectDir: root, RunnerToken: "glrt-abcdefghijklmnop"},
		ScriptOptions{HelperPath: helper, CacheStore: store})
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for _, name := range []string{StageRestoreCache, StageArchiveCache} {
		st := stage(prep.Plan, name)
		if st == nil {
			t.Fatalf("no %s stage", name)
		}
		out += runStage(t, *st, "FAIL_KEYS=k")
	}
	if strings.Contains(out, "SIG") || strings.Contains(out, "store.example") {
		t.Errorf("a URL reached the output:\n%s", out)
	}
	if !strings.Contains(out, "Skipping cache bad: store said no") {
		t.Errorf("no warning about the key that could not be signed:\n%s", out)
	}
	url := func(op, key string) string {
		return "https://store.example/b/pre/runner/abcdefghi/project/42/" + key +
			"?X-Amz-Credential=AKID%2Fx&X-Amz-Signature=SIG" + op + "prerunnerabcdefghiproject42" + key + "%2B%3D"
	}
	want := []string{
		"cache-extractor --url " + url("get", "k") + " --timeout 10",
		"cache-extractor --url " + url("get", "fb") + " --timeout 10",
		"cache-archiver --url " + url("put", "k") + " --header Content-Type: application/zip --header X-Ms-Blob-Type: BlockBlob --path a --path b/** --untracked --max-size 1000 --timeout 10",
	}
	if calls := readCalls(t, log); !slices.Equal(calls, want) {
		t.Errorf("helper calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	for _, v := range []string{"SIGgetprerunnerabcdefghiproject42k+=", "SIGgetprerunnerabcdefghiproject42k%2B%3D", "SIGputprerunnerabcdefghiproject42k+="} {
		if !slices.Contains(prep.Mask.Values, v) {
			t.Errorf("mask lacks the signature %q: %q", v, prep.Mask.Values)
		}
	}
	for _, ttl := range signer.ttls {
		if ttl != time.Hour+cacheURLMargin {
			t.Errorf("URL lifetime %v, want the job's timeout (1h) + %v", ttl, cacheURLMargin)
		}
	}
}

func TestArchiveCacheStagesPolicyAndWhen(t *testing.T) {
	dir := t.TempDir()
	helper, log := fakeHelper(t, dir)
	plan := cachePlan(t, []Cache{
		{Key: "ok", Paths: []string{"a"}},
		{Key: "fail", Paths: []string{"a"}, When: "on_failure"},
		{Key: "both", Paths: []string{"a"}, When: "always"},
		{Key: "pull", Paths: []string{"a"}, Policy: "pull", When: "always"},
		{Key: "broken", Paths: []string{"a"}, FallbackKeys: []string{"x"}},
	}, ScriptOptions{HelperPath: helper, CacheDir: "/c"})
	ok, fail := stage(plan, StageArchiveCache), stage(plan, StageArchiveCacheOnFail)
	if ok == nil || fail == nil || ok.When != WhenOnSuccess || fail.When != WhenOnFailure {
		t.Fatalf("archive stages: %+v %+v", ok, fail)
	}
	names := stageNames(plan)
	if i, j := slices.Index(names, StageStepScript), slices.Index(names, StageArchiveCache); i < 0 || j < i {
		t.Errorf("archive_cache must follow the script: %v", names)
	}
	out := runStage(t, *ok, "FAIL_KEYS=broken")
	if calls := readCalls(t, log); !slices.Equal(calls, []string{
		"cache-archiver --file /c/group/demo/ok/cache.zip --path a --timeout 10",
		"cache-archiver --file /c/group/demo/both/cache.zip --path a --timeout 10",
		"cache-archiver --file /c/group/demo/broken/cache.zip --path a --timeout 10",
	}) {
		t.Errorf("on success, helper calls:\n%s", strings.Join(calls, "\n"))
	}
	for _, s := range []string{"Creating cache ok...", "Created cache", "Not uploading cache pull due to policy", "Failed to create cache"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	os.Remove(log)
	runStage(t, *fail)
	if calls := readCalls(t, log); !slices.Equal(calls, []string{
		"cache-archiver --file /c/group/demo/fail/cache.zip --path a --timeout 10",
		"cache-archiver --file /c/group/demo/both/cache.zip --path a --timeout 10",
	}) {
		t.Errorf("on failure, helper calls:\n%s", strings.Join(calls, "\n"))
	}

	// Only pull caches: no upload anywhere, the pull-only restore still runs.
	plan = cachePlan(t, []Cache{{Key: "p", Paths: []string{"a"}, Policy: "pull"}}, ScriptOptions{HelperPath: helper, CacheDir: "/c"})
	os.Remove(log)
	for _, st := range plan.Stages {
		if st.Name == StageArchiveCache || st.Name == StageArchiveCacheOnFail || st.Name == StageRestoreCache {
			runStage(t, st)
		}
	}
	if calls := readCalls(t, log); len(calls) != 1 || !strings.HasPrefix(calls[0], "cache-extractor ") {
		t.Errorf("policy pull: helper calls %q, want one extraction", calls)
	}
}

func TestCacheStagesEdgeCases(t *testing.T) {
	dir := t.TempDir()
	helper, log := fakeHelper(t, dir)
	// No cache with paths: no stages.
	plan := cachePlan(t, []Cache{{Key: "k"}}, ScriptOptions{HelperPath: helper})
	if stage(plan, StageRestoreCache) != nil || stage(plan, StageArchiveCache) != nil {
		t.Errorf("stages without cache paths: %v", stageNames(plan))
	}
	// An unusable store: warning, local cache_dir (default /cache).
	plan = cachePlan(t, []Cache{{Key: "k", Paths: []string{"a"}}}, ScriptOptions{HelperPath: helper,
		CacheStore: &CacheStore{Type: "s3", Err: errors.New(`[runners.cache.s3] AuthenticationType "oauth" is unknown`)}})
	out := runStage(t, *stage(plan, StageRestoreCache))
	if !strings.Contains(out, `AuthenticationType "oauth" is unknown`) {
		t.Errorf("no warning about the store:\n%s", out)
	}
	if calls := readCalls(t, log); len(calls) != 1 || !strings.Contains(calls[0], "--file /cache/group/demo/k/cache.zip") {
		t.Errorf("calls %q", calls)
	}
	// A bad key or policy: a warning, the other caches still work.
	os.Remove(log)
	plan = cachePlan(t, []Cache{{Key: "../x", Paths: []string{"a"}}, {Key: "k", Paths: []string{"a"}, Policy: "bogus"}, {Key: "good", Paths: []string{"a"}}},
		ScriptOptions{HelperPath: helper, CacheDir: "/c"})
	out = runStage(t, *stage(plan, StageRestoreCache))
	if !strings.Contains(out, "remove ../") || !strings.Contains(out, `unknown cache policy "bogus"`) {
		t.Errorf("no warnings about the bad entries:\n%s", out)
	}
	if calls := readCalls(t, log); len(calls) != 1 || !strings.Contains(calls[0], "/good/") {
		t.Errorf("calls %q", calls)
	}
	// A missing helper: a warning, the stage succeeds.
	plan = cachePlan(t, []Cache{{Key: "k", Paths: []string{"a"}}}, ScriptOptions{HelperPath: filepath.Join(dir, "missing")})
	for _, name := range []string{StageRestoreCache, StageArchiveCache} {
		if out := runStage(t, *stage(plan, name)); !strings.Contains(out, "is disabled") {
			t.Errorf("%s: no warning about the missing helper:\n%s", name, out)
		}
	}
}

// TestCachePathsExpandVariables: GitLab expands variables in cache:paths
// as in artifacts:paths (issue #13: `paths: [$CACHEDIR/**.txt]` cached
// nothing). Undefined variables expand to nothing, as in artifacts.
func TestCachePathsExpandVariables(t *testing.T) {
	dir := t.TempDir()
	helper, log := fakeHelper(t, dir)
	plan := cachePlan(t, []Cache{{Key: "k", Paths: []string{"$CACHEDIR/**.txt", "${CACHEDIR}/x", "lit/$NOPE/y"}}},
		ScriptOptions{HelperPath: helper, CacheDir: "/c"}, Variable{Key: "CACHEDIR", Value: "deps", Public: true})
	runStage(t, *stage(plan, StageArchiveCache))
	want := []string{"cache-archiver --file /c/group/demo/k/cache.zip --path deps/**.txt --path deps/x --path lit//y --timeout 10"}
	if calls := readCalls(t, log); !slices.Equal(calls, want) {
		t.Errorf("helper calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
}

// TestCacheProjectPath: the directory below cache_dir is GitLab Runner's
// Build.ProjectSlug (the repository URL's path without .git, project-<id>
// when unusable), so both runners find each other's caches.
func TestCacheProjectPath(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"https://gitlab-ci-token:x@gitlab.example.com/group/sub/demo.git", "/group/sub/demo"},
		{"https://gitlab.example.com/gitlab/group/demo.git", "/gitlab/group/demo"}, // relative URL root kept
		{"http://127.0.0.1:8080/group/demo", "/group/demo"},
		{"https://gitlab.example.com/a/../../etc.git", "/etc"},
		{"https://gitlab.example.com/a/..x/b.git", ""},
		{"/group/demo.git", ""}, // no host
		{"https://gitlab.example.com/", ""},
		{"://bad", ""},
	} {
		p := testPayload()
		p.GitInfo.RepoURL = tc.url
		if got := cacheProjectPath(p); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.url, got, tc.want)
		}
	}
	f, err := CacheFile("/cache", "", 7, "k")
	if err != nil || f != "/cache/project-7/k/cache.zip" {
		t.Errorf("unusable URL: %q %v", f, err)
	}
}

// TestArchiveCacheNothingToCache: when no file matched, the stage says
// neither "Created cache" nor "Failed to create cache" (issue #13: the
// log contradicted itself).
func TestArchiveCacheNothingToCache(t *testing.T) {
	if CacheArchiverNoFiles != 3 {
		t.Fatalf("the fake helper below exits 3, CacheArchiverNoFiles is %d", CacheArchiverNoFiles)
	}
	dir := t.TempDir()
	helper, _ := fakeHelper(t, dir)
	plan := cachePlan(t, []Cache{{Key: "empty", Paths: []string{"a"}}, {Key: "full", Paths: []string{"a"}}},
		ScriptOptions{HelperPath: helper, CacheDir: "/c"})
	out := runStage(t, *stage(plan, StageArchiveCache), "NOFILES_KEYS=empty")
	if strings.Count(out, "Created cache") != 1 || strings.Contains(out, "Failed to create cache") || !strings.Contains(out, "No files to cache") {
		t.Errorf("want one \"Created cache\" (for full) and no failure:\n%s", out)
	}
	out = runStage(t, *stage(plan, StageArchiveCache), "FAIL_KEYS=empty")
	if !strings.Contains(out, "Failed to create cache") {
		t.Errorf("a failed upload must still warn:\n%s", out)
	}
}
