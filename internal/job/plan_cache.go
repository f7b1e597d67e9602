package job

// Stages that restore the job's caches before its scripts and save them
// after. Like GitLab Runner, the stage scripts call the helper binary
// (podrunner cache-extractor / cache-archiver), which streams the archive
// between the project directory and the store.

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"unicode"
)

// CacheStore is the remote cache store of the runner ([runners.cache]),
// as the helper commands need it.
type CacheStore struct {
	Type   string // "s3", "azure" or "gcs"; any other type is reported and the local cache_dir used
	Path   string // prefix of every object name
	Shared bool   // false: objects live under runner/<short token>/
	// MaxUploadedArchiveSize (bytes, 0: no limit): a bigger archive is not
	// uploaded.
	MaxUploadedArchiveSize int64
	S3                     *CacheS3
	Azure                  *CacheAzure
	GCS                    *CacheGCS
}

// CacheAzure is [runners.cache.azure]. The blob URL is
// https://<AccountName>.<StorageDomain>/<ContainerName>/<object>, as GitLab
// Runner's. A StorageDomain with a scheme (http://127.0.0.1:10000) is an
// endpoint with the account in the path, as the Azurite emulator serves it.
// Without AccountKey the helper uses the Azure credentials of its
// environment (workload identity, managed identity).
type CacheAzure struct {
	AccountName   string
	AccountKey    string
	ContainerName string
	StorageDomain string // default blob.core.windows.net
}

// CacheGCS is [runners.cache.gcs]. Credentials: the JSON of CredentialsFile,
// or AccessID with PrivateKey (a service account's e-mail and PEM key), or
// else the environment's default credentials.
type CacheGCS struct {
	BucketName      string
	CredentialsFile string
	AccessID        string
	PrivateKey      string
}

// CacheS3 is [runners.cache.s3]. The keys are handed to the helper through
// its environment, never on its command line.
type CacheS3 struct {
	ServerAddress  string // host[:port]
	BucketName     string
	BucketLocation string
	Insecure       bool  // http instead of https
	PathStyle      *bool // nil: the client decides
	// AuthenticationType is "access-key" (AccessKey/SecretKey) or "iam"
	// (credentials from the environment: AWS_* variables, a web identity
	// token file as IRSA provides, instance metadata). Empty means
	// access-key when an AccessKey is set, iam otherwise (GitLab Runner's
	// rule).
	AuthenticationType string
	AccessKey          string
	SecretKey          string
	SessionToken       string
}

// IAM reports whether the credentials come from the environment rather
// than from AccessKey/SecretKey.
func (s *CacheS3) IAM() bool {
	switch strings.ToLower(s.AuthenticationType) {
	case "iam":
		return true
	case "":
		return s.AccessKey == ""
	}
	return false
}

// Environment variables that carry the S3 credentials to the helper.
const (
	EnvCacheS3AccessKey    = "PODRUNNER_CACHE_S3_ACCESS_KEY"
	EnvCacheS3SecretKey    = "PODRUNNER_CACHE_S3_SECRET_KEY"
	EnvCacheS3SessionToken = "PODRUNNER_CACHE_S3_SESSION_TOKEN"
	// EnvCacheAzureAccountKey carries [runners.cache.azure] AccountKey.
	EnvCacheAzureAccountKey = "PODRUNNER_CACHE_AZURE_ACCOUNT_KEY"
	// EnvCacheGCSCredentials carries the JSON of [runners.cache.gcs]
	// CredentialsFile (the file is the runner's, the helper may run in a pod).
	EnvCacheGCSCredentials = "PODRUNNER_CACHE_GCS_CREDENTIALS"
	EnvCacheGCSAccessID    = "PODRUNNER_CACHE_GCS_ACCESS_ID"
	EnvCacheGCSPrivateKey  = "PODRUNNER_CACHE_GCS_PRIVATE_KEY"
)

// CacheSecretEnv are the variables that carry store credentials to the
// helper: the helper removes them from its environment, and nothing else
// may print them.
var CacheSecretEnv = []string{
	EnvCacheS3AccessKey, EnvCacheS3SecretKey, EnvCacheS3SessionToken,
	EnvCacheAzureAccountKey, EnvCacheGCSCredentials, EnvCacheGCSAccessID, EnvCacheGCSPrivateKey,
}

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

// Validate reports what keeps the store from being used, in words that say
// which config.toml key to change.
func (s *CacheStore) Validate() error {
	if s == nil {
		return nil
	}
	switch s.Type {
	case "s3":
		return s.validateS3()
	case "azure":
		if s.Azure == nil || s.Azure.AccountName == "" || s.Azure.ContainerName == "" {
			return errors.New("[runners.cache.azure] AccountName and ContainerName must be set")
		}
		return nil
	case "gcs":
		if s.GCS == nil || s.GCS.BucketName == "" {
			return errors.New("[runners.cache.gcs] BucketName is not set")
		}
		if (s.GCS.AccessID == "") != (s.GCS.PrivateKey == "") {
			return errors.New("[runners.cache.gcs] AccessID and PrivateKey must be set together")
		}
		return nil
	}
	return fmt.Errorf("[runners.cache] Type %q is not supported: use \"s3\", \"azure\" or \"gcs\"", s.Type)
}

func (s *CacheStore) validateS3() error {
	if s.S3 == nil || s.S3.BucketName == "" {
		return errors.New("[runners.cache.s3] BucketName is not set")
	}
	switch strings.ToLower(s.S3.AuthenticationType) {
	case "access-key", "":
	case "iam":
	default:
		return fmt.Errorf("[runners.cache.s3] AuthenticationType %q is unknown: use \"access-key\" or \"iam\"", s.S3.AuthenticationType)
	}
	if s.S3.IAM() {
		return nil
	}
	if s.S3.AccessKey == "" || s.S3.SecretKey == "" {
		return errors.New("[runners.cache.s3] AccessKey and SecretKey must both be set")
	}
	return nil
}

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
}

func newCacheTarget(p *Payload, vars Variables, opts ScriptOptions) (cacheTarget, string) {
	t := cacheTarget{dir: opts.CacheDir, token: vars.Get("CI_RUNNER_SHORT_TOKEN"), p: p}
	if t.dir == "" {
		t.dir = DefaultCacheDir
	}
	if opts.CacheStore == nil {
		return t, ""
	}
	if err := opts.CacheStore.Validate(); err != nil {
		return t, err.Error() + "; caches are kept in the local cache_dir " + t.dir
	}
	t.store = opts.CacheStore
	return t, ""
}

// args returns the helper arguments that address key, and the environment
// assignments (credentials) to put before the command.
func (t cacheTarget) args(key string) (args, env []string, err error) {
	if t.store == nil {
		f, err := CacheFile(t.dir, cacheProjectPath(t.p), t.p.JobInfo.ProjectID, key)
		if err != nil {
			return nil, nil, err
		}
		return []string{"--file", f}, nil, nil
	}
	obj, err := CacheObjectName(t.store, t.token, t.p.JobInfo.ProjectID, key)
	if err != nil {
		return nil, nil, err
	}
	switch t.store.Type {
	case "azure":
		return azureArgs(obj, t.store.Azure)
	case "gcs":
		return gcsArgs(obj, t.store.GCS)
	}
	s3 := t.store.S3
	args = []string{"--s3-object", obj, "--s3-server-address", s3.ServerAddress, "--s3-bucket-name", s3.BucketName}
	if s3.BucketLocation != "" {
		args = append(args, "--s3-bucket-location", s3.BucketLocation)
	}
	if s3.Insecure {
		args = append(args, "--s3-insecure")
	}
	if s3.PathStyle != nil {
		args = append(args, "--s3-path-style="+strconv.FormatBool(*s3.PathStyle))
	}
	if s3.IAM() {
		// The helper finds its credentials in its own environment.
		return append(args, "--s3-authentication-type", "iam"), nil, nil
	}
	env = []string{EnvCacheS3AccessKey + "=" + quote(s3.AccessKey), EnvCacheS3SecretKey + "=" + quote(s3.SecretKey)}
	if s3.SessionToken != "" {
		env = append(env, EnvCacheS3SessionToken+"="+quote(s3.SessionToken))
	}
	return args, env, nil
}

func azureArgs(obj string, a *CacheAzure) (args, env []string, err error) {
	args = []string{"--azure-object", obj, "--azure-account-name", a.AccountName, "--azure-container-name", a.ContainerName}
	if a.StorageDomain != "" {
		args = append(args, "--azure-storage-domain", a.StorageDomain)
	}
	if a.AccountKey != "" {
		env = []string{EnvCacheAzureAccountKey + "=" + quote(a.AccountKey)}
	}
	return args, env, nil
}

func gcsArgs(obj string, g *CacheGCS) (args, env []string, err error) {
	args = []string{"--gcs-object", obj, "--gcs-bucket-name", g.BucketName}
	switch {
	case g.CredentialsFile != "":
		// Read here: the helper may run in a pod that does not have the
		// runner's file.
		b, err := os.ReadFile(g.CredentialsFile)
		if err != nil {
			return nil, nil, fmt.Errorf("[runners.cache.gcs] CredentialsFile: %w", err)
		}
		env = []string{EnvCacheGCSCredentials + "=" + quote(string(b))}
	case g.AccessID != "":
		env = []string{EnvCacheGCSAccessID + "=" + quote(g.AccessID), EnvCacheGCSPrivateKey + "=" + quote(g.PrivateKey)}
	}
	return args, env, nil
}

// helperCall writes `if [ENV=…] helper cmd args…; then` (the credentials
// are assignments for this command only, never exported nor printed).
func (w *scriptWriter) helperIf(env []string, helper string, args ...string) {
	q := make([]string, 0, len(args)+1)
	q = append(q, quote(helper))
	for _, a := range args {
		q = append(q, quote(a))
	}
	pre := ""
	if len(env) > 0 {
		pre = strings.Join(env, " ") + " "
	}
	w.line("if " + pre + strings.Join(q, " ") + "; then")
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

func restoreCacheStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasCache(p) {
		return nil
	}
	helper := helperPath(opts)
	target, warn := newCacheTarget(p, vars, opts)
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
				args, env, err := target.args(k)
				if err != nil {
					w.warning("Skipping cache %s: %v", k, err)
					continue
				}
				w.notice("Checking cache for %s...", k)
				w.helperIf(env, helper, append(append([]string{"cache-extractor"}, args...), "--timeout", cacheTimeout(vars))...)
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

func archiveCacheStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasCache(p) {
		return nil
	}
	helper := helperPath(opts)
	target, warn := newCacheTarget(p, vars, opts)
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
				args, env, err := target.args(e.key)
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
				w.helperIf(env, helper, args...)
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
