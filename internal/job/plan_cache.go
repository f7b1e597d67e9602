package job

// Stages that restore the job's caches before its scripts and save them
// after. Like GitLab Runner, the stage scripts call the helper binary
// (podrunner cache-extractor / cache-archiver), which streams the archive
// between the project directory and the store.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// CacheStore is the remote cache store of the runner ([runners.cache]):
// how its objects are named and how to reach them. The helper in the job
// never sees the store's credentials: the runner pre-signs one URL per
// object and operation (GitLab Runner's design), and the helper does
// plain HTTP GET and PUT on it.
type CacheStore struct {
	Type   string // "s3", "azure" or "gcs", for messages
	Path   string // prefix of every object name
	Shared bool   // false: objects live under runner/<short token>/
	// MaxUploadedArchiveSize (bytes, 0: no limit): a bigger archive is not
	// uploaded.
	MaxUploadedArchiveSize int64
	// Signer pre-signs the URLs of objects; nil when Err says why the
	// store cannot be used.
	Signer CacheURLSigner
	// Err is what keeps the store from being used, in words that name
	// the config.toml key to change; the job's log says it and caches are
	// kept in the local cache_dir.
	Err error
}

// CacheURLSigner makes the URLs the cache helper reaches one object
// through, valid for ttl (or the store's maximum, if shorter). The URL is
// the credential: it must never be printed.
type CacheURLSigner interface {
	// GetURL is a URL a plain GET downloads object from.
	GetURL(ctx context.Context, object string, ttl time.Duration) (string, error)
	// PutURL is a URL a plain PUT of the whole object (with
	// Content-Length) stores it at; headers must be sent with the PUT.
	PutURL(ctx context.Context, object string, ttl time.Duration) (url string, headers http.Header, err error)
}

// cacheURLMargin is added to the job's timeout for the lifetime of the
// URLs: the archive is uploaded after the job's scripts, after_script and
// the helper's own request timeout.
const cacheURLMargin = 30 * time.Minute

// signatureParams are the query parameters of pre-signed URLs that carry
// their secret: they are added to the job's mask.
var signatureParams = []string{"X-Amz-Signature", "X-Amz-Security-Token", "sig", "X-Goog-Signature", "Signature"}

// Cache policies (cache:policy).
const (
	CachePolicyPull     = "pull"
	CachePolicyPush     = "push"
	CachePolicyPullPush = "pull-push"
)

// CacheArchiverNoFiles is the exit code of cache-archiver when no file
// matched the paths: nothing was stored, which is neither "Created cache"
// nor "Failed to create cache".
const CacheArchiverNoFiles = 3

// CacheArchiveName is the file name of a cache in the local cache_dir,
// GitLab Runner's.
const CacheArchiveName = "cache.zip"

// DefaultCacheDir is cache_dir when the runner sets none (GitLab Runner's
// default on Kubernetes).
const DefaultCacheDir = "/cache"

// DefaultCacheRequestTimeout is CACHE_REQUEST_TIMEOUT's default, in minutes.
const DefaultCacheRequestTimeout = 10

// SanitizeCacheKey normalises a cache key as GitLab Runner does: "%2F"
// and "%2E" are decoded, backslashes become slashes, "." and empty
// segments go, trailing white space of the last segments is trimmed. A key
// with a ".." segment or a NUL byte is refused, as is one that ends up
// empty. The result is a relative slash-separated path.
func SanitizeCacheKey(key string) (string, error) {
	if strings.IndexByte(key, 0) >= 0 {
		return "", fmt.Errorf("cache key %q contains a NUL byte", key)
	}
	k := strings.NewReplacer("%2f", "/", "%2F", "/", "%2e", ".", "%2E", ".", `\`, "/").Replace(key)
	var parts []string
	for _, seg := range strings.Split(k, "/") {
		switch seg {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("cache key %q: \"..\" is not allowed in a cache key; remove ../ from it", key)
		}
		parts = append(parts, seg)
	}
	for len(parts) > 0 {
		last := strings.TrimRightFunc(parts[len(parts)-1], unicode.IsSpace)
		if last != "" && last != "." {
			if last == ".." {
				return "", fmt.Errorf("cache key %q: \"..\" is not allowed in a cache key; remove ../ from it", key)
			}
			parts[len(parts)-1] = last
			break
		}
		parts = parts[:len(parts)-1]
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("cache key %q is empty once sanitized", key)
	}
	return strings.Join(parts, "/"), nil
}

// CacheObjectName is the object a cache key is stored under in a remote
// store: <Path>/runner/<short token>/project/<id>/<key>, without the
// runner segment when the cache is Shared. key must be sanitized.
func CacheObjectName(s *CacheStore, shortToken string, projectID int64, key string) (string, error) {
	ns := ""
	if !s.Shared {
		if shortToken == "" {
			return "", errors.New("the runner's short token is unknown: cannot name a non-shared cache object")
		}
		ns = path.Join("runner", shortToken)
	}
	base := strings.TrimPrefix(path.Join("/", s.Path, ns, "project", strconv.FormatInt(projectID, 10)), "/")
	full := path.Join(base, key)
	if !strings.HasPrefix(full, base+"/") {
		return "", fmt.Errorf("cache key %q: computed cache path outside of the project's; remove ../ from the key", key)
	}
	return full, nil
}

// CacheFile is where a cache key is kept in the local cache_dir:
// <dir>/<project path>/<key>/cache.zip (GitLab Runner's layout). key must be sanitized.
func CacheFile(dir, projectPath string, projectID int64, key string) (string, error) {
	proj := strings.Trim(path.Clean("/"+projectPath), "/")
	if proj == "" || proj == "." {
		proj = "project-" + strconv.FormatInt(projectID, 10)
	}
	base := path.Join(dir, proj)
	full := path.Join(base, key, CacheArchiveName)
	if !strings.HasPrefix(full, base+"/") {
		return "", fmt.Errorf("cache key %q: computed cache path outside of the project's cache directory; remove ../ from the key", key)
	}
	return full, nil
}

// cacheProjectPath is the project's directory below cache_dir as GitLab
// Runner names it (Build.ProjectSlug): the path of the repository URL
// without ".git" — the project's full path, plus the relative URL root of
// a GitLab served below one. "" (CacheFile then uses project-<id>) when
// the URL has no host or a path with "..".
func cacheProjectPath(p *Payload) string {
	u, err := url.Parse(p.GitInfo.RepoURL)
	if err != nil || u.Host == "" {
		return ""
	}
	slug := path.Clean(strings.TrimSuffix(u.Path, ".git"))
	if slug == "." || slug == "/" || strings.Contains(slug, "..") {
		return ""
	}
	return slug
}

// cachePolicy expands and checks cache:policy (empty: pull-push).
func cachePolicy(raw string, vars Variables) (string, error) {
	p := strings.TrimSpace(vars.ExpandValue(raw))
	switch p {
	case "":
		return CachePolicyPullPush, nil
	case CachePolicyPull, CachePolicyPush, CachePolicyPullPush:
		return p, nil
	}
	return "", fmt.Errorf("unknown cache policy %q: use pull, push or pull-push", p)
}

// cacheWhen checks cache:when (empty: on_success).
func cacheWhen(raw string) (string, error) {
	switch raw {
	case "":
		return WhenOnSuccess, nil
	case WhenOnSuccess, WhenOnFailure, WhenAlways:
		return raw, nil
	}
	return "", fmt.Errorf("unknown cache when %q: use on_success, on_failure or always", raw)
}

// cacheEntry is one payload cache entry resolved against the job.
type cacheEntry struct {
	key       string   // sanitized
	fallbacks []string // sanitized, in order, without key
	warnings  []string // about keys that were dropped
	paths     []string
	untracked bool
	policy    string
	when      string
}

// resolveCache expands and checks one payload cache entry. Key defaults to
// <job name>/<ref>; fallback keys are the entry's fallback_keys and then
// CACHE_FALLBACK_KEY, which must not name a protected cache.
func resolveCache(c Cache, p *Payload, vars Variables) (*cacheEntry, error) {
	e := &cacheEntry{paths: expandPaths(c.Paths, vars), untracked: c.Untracked}
	var err error
	if e.policy, err = cachePolicy(c.Policy, vars); err != nil {
		return nil, err
	}
	if e.when, err = cacheWhen(c.When); err != nil {
		return nil, err
	}
	raw := c.Key
	if raw == "" {
		raw = path.Join(p.JobInfo.Name, p.GitInfo.Ref)
	}
	if e.key, err = SanitizeCacheKey(vars.ExpandValue(raw)); err != nil {
		return nil, err
	}
	seen := map[string]bool{e.key: true}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			e.fallbacks = append(e.fallbacks, k)
		}
	}
	for _, f := range c.FallbackKeys {
		k, err := SanitizeCacheKey(vars.ExpandValue(f))
		if err != nil {
			e.warnings = append(e.warnings, "fallback "+err.Error()+"; skipped")
			continue
		}
		add(k)
	}
	if f := vars.Get("CACHE_FALLBACK_KEY"); strings.TrimSpace(f) != "" {
		k, err := SanitizeCacheKey(vars.ExpandValue(f))
		switch {
		case err != nil:
			e.warnings = append(e.warnings, "CACHE_FALLBACK_KEY: "+err.Error()+"; skipped")
		case strings.HasSuffix(k, "-protected"):
			// A job on an unprotected ref must not read a protected
			// ref's cache through a variable it controls.
			e.warnings = append(e.warnings, fmt.Sprintf("CACHE_FALLBACK_KEY %q must not end in \"-protected\"; skipped", k))
		default:
			add(k)
		}
	}
	return e, nil
}

// cacheTarget says how the helper reaches the cache of a key.
type cacheTarget struct {
	store *CacheStore // nil: local cache_dir
	dir   string      // cache_dir
	token string      // CI_RUNNER_SHORT_TOKEN
	p     *Payload
	ctx   context.Context
	ttl   time.Duration // of pre-signed URLs
	// secrets collects the signatures of the URLs handed out, for the
	// job's mask.
	secrets *[]string
}

func newCacheTarget(ctx context.Context, p *Payload, vars Variables, opts ScriptOptions, timeout time.Duration, secrets *[]string) (cacheTarget, string) {
	t := cacheTarget{dir: opts.CacheDir, token: vars.Get("CI_RUNNER_SHORT_TOKEN"), p: p, ctx: ctx, ttl: timeout + cacheURLMargin, secrets: secrets}
	if t.dir == "" {
		t.dir = DefaultCacheDir
	}
	s := opts.CacheStore
	switch {
	case s == nil:
		return t, ""
	case s.Err != nil:
		return t, s.Err.Error() + "; caches are kept in the local cache_dir " + t.dir
	case s.Signer == nil:
		return t, "[runners.cache] Type " + strconv.Quote(s.Type) + " has no way to reach its store; caches are kept in the local cache_dir " + t.dir
	}
	t.store = s
	return t, ""
}

// args returns the helper arguments that address key: the cache file, or
// a URL pre-signed for a download (put false) or an upload with the
// headers the upload must send.
func (t cacheTarget) args(key string, put bool) ([]string, error) {
	if t.store == nil {
		f, err := CacheFile(t.dir, cacheProjectPath(t.p), t.p.JobInfo.ProjectID, key)
		if err != nil {
			return nil, err
		}
		return []string{"--file", f}, nil
	}
	obj, err := CacheObjectName(t.store, t.token, t.p.JobInfo.ProjectID, key)
	if err != nil {
		return nil, err
	}
	if !put {
		u, err := t.store.Signer.GetURL(t.ctx, obj, t.ttl)
		if err != nil {
			return nil, err
		}
		t.mask(u)
		return []string{"--url", u}, nil
	}
	u, h, err := t.store.Signer.PutURL(t.ctx, obj, t.ttl)
	if err != nil {
		return nil, err
	}
	t.mask(u)
	args := []string{"--url", u}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			args = append(args, "--header", k+": "+v)
		}
	}
	return args, nil
}

// mask adds the signature values of u (as they appear in the URL and
// decoded) to the job's mask.
func (t cacheTarget) mask(u string) {
	if t.secrets == nil {
		return
	}
	pu, err := url.Parse(u)
	if err != nil {
		return
	}
	raw := map[string]string{}
	for _, kv := range strings.Split(pu.RawQuery, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			raw[k] = v
		}
	}
	q := pu.Query()
	for _, k := range signatureParams {
		if v := q.Get(k); v != "" {
			*t.secrets = append(*t.secrets, v, raw[k])
		}
	}
}

// helperIf writes `if helper args…; then`.
func (w *scriptWriter) helperIf(helper string, args ...string) {
	q := make([]string, 0, len(args)+1)
	q = append(q, quote(helper))
	for _, a := range args {
		q = append(q, quote(a))
	}
	w.line("if " + strings.Join(q, " ") + "; then")
}

func helperPath(opts ScriptOptions) string {
	if opts.HelperPath != "" {
		return opts.HelperPath
	}
	return "podrunner"
}

func cacheTimeout(vars Variables) string {
	n, err := strconv.Atoi(strings.TrimSpace(vars.Get("CACHE_REQUEST_TIMEOUT")))
	if err != nil || n <= 0 {
		n = DefaultCacheRequestTimeout
	}
	return strconv.Itoa(n)
}

func restoreCacheStages(ctx context.Context, p *Payload, vars Variables, opts ScriptOptions, shell string, timeout time.Duration, secrets *[]string) []Stage {
	if !hasCache(p) {
		return nil
	}
	helper := helperPath(opts)
	target, warn := newCacheTarget(ctx, p, vars, opts, timeout, secrets)
	var w scriptWriter
	w.exports(vars)
	w.command("cd", vars.Get("CI_PROJECT_DIR"))
	if warn != "" {
		w.warning("%s", warn)
	}
	guardHelper(&w, helper, "cache-extractor", "Extracting cache", func() {
		for _, c := range p.Cache {
			if len(c.Paths) == 0 && !c.Untracked {
				continue
			}
			e, err := resolveCache(c, p, vars)
			if err != nil {
				w.warning("Skipping cache: %v", err)
				continue
			}
			for _, m := range e.warnings {
				w.warning("%s", m)
			}
			if e.policy == CachePolicyPush {
				w.notice("Not downloading cache %s due to policy", e.key)
				continue
			}
			keys := append([]string{e.key}, e.fallbacks...)
			depth := 0
			for _, k := range keys {
				args, err := target.args(k, false)
				if err != nil {
					w.warning("Skipping cache %s: %v", k, err)
					continue
				}
				w.notice("Checking cache for %s...", k)
				w.helperIf(helper, append(append([]string{"cache-extractor"}, args...), "--timeout", cacheTimeout(vars))...)
				w.notice("Successfully extracted cache")
				w.line("else")
				w.warning("Failed to extract cache")
				depth++
			}
			for ; depth > 0; depth-- {
				w.line("fi")
			}
		}
	})
	return []Stage{{Name: StageRestoreCache, Title: "Restoring cache", Kind: KindSystem, When: WhenOnSuccess, Script: w.finish(shell)}}
}

func archiveCacheStages(ctx context.Context, p *Payload, vars Variables, opts ScriptOptions, shell string, timeout time.Duration, secrets *[]string) []Stage {
	if !hasCache(p) {
		return nil
	}
	helper := helperPath(opts)
	target, warn := newCacheTarget(ctx, p, vars, opts, timeout, secrets)
	var stages []Stage
	for _, st := range []struct {
		name, title, when string
	}{
		{StageArchiveCache, "Saving cache for successful job", WhenOnSuccess},
		{StageArchiveCacheOnFail, "Saving cache for failed job", WhenOnFailure},
	} {
		var w scriptWriter
		w.exports(vars)
		w.command("cd", vars.Get("CI_PROJECT_DIR"))
		if warn != "" {
			w.warning("%s", warn)
		}
		n := 0
		guardHelper(&w, helper, "cache-archiver", "Creating cache", func() {
			for _, c := range p.Cache {
				if len(c.Paths) == 0 && !c.Untracked {
					continue
				}
				e, err := resolveCache(c, p, vars)
				if err != nil {
					w.warning("Skipping cache: %v", err)
					n++
					continue
				}
				if e.when != WhenAlways && e.when != st.when {
					continue
				}
				n++
				if e.policy == CachePolicyPull {
					w.notice("Not uploading cache %s due to policy", e.key)
					continue
				}
				args, err := target.args(e.key, true)
				if err != nil {
					w.warning("Skipping cache %s: %v", e.key, err)
					continue
				}
				args = append([]string{"cache-archiver"}, args...)
				for _, p := range e.paths {
					args = append(args, "--path", p)
				}
				if e.untracked {
					args = append(args, "--untracked")
				}
				if target.store != nil && target.store.MaxUploadedArchiveSize > 0 {
					args = append(args, "--max-size", strconv.FormatInt(target.store.MaxUploadedArchiveSize, 10))
				}
				args = append(args, "--timeout", cacheTimeout(vars))
				w.notice("Creating cache %s...", e.key)
				w.helperIf(helper, args...)
				w.notice("Created cache")
				w.line("else")
				// $? is still the helper's exit status here.
				w.linef("case $? in %d) ;; *)", CacheArchiverNoFiles)
				w.warning("Failed to create cache")
				w.line(";; esac")
				w.line("fi")
			}
		})
		if n == 0 {
			continue
		}
		stages = append(stages, Stage{Name: st.name, Title: st.title, Kind: KindSystem, When: st.when, Script: w.finish(shell)})
	}
	return stages
}

// guardHelper runs body only when the helper binary answers, else warns
// that the operation is disabled (GitLab Runner: "Missing … is disabled").
func guardHelper(w *scriptWriter, helper, cmd, action string, body func()) {
	w.linef("if %s %s --help >/dev/null 2>&1; then", quote(helper), cmd)
	mark := w.b.Len()
	body()
	if w.b.Len() == mark {
		w.line(":")
	}
	w.line("else")
	w.warning("Missing %s. %s is disabled.", helper, action)
	w.line("fi")
}

func hasCache(p *Payload) bool {
	for _, c := range p.Cache {
		if len(c.Paths) > 0 || c.Untracked {
			return true
		}
	}
	return false
}
