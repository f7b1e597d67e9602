package job

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/podrunner/podrunner/internal/trace"
)

// ScriptOptions are the runner-config parts of script generation.
type ScriptOptions struct {
	// Shell is "bash" or "sh" (default); it only picks the shebang, the
	// scripts are POSIX and run in either.
	Shell string
	// Config hooks (config.toml [[runners]] keys), shell code.
	PreGetSourcesScript  string
	PostGetSourcesScript string
	PreBuildScript       string
	PostBuildScript      string
	// CloneURL replaces scheme, host and base path of the repository URL
	// (config clone_url); the project path and credentials are kept.
	CloneURL string
	// HelperPath is the podrunner binary the stage scripts call for
	// artifacts and caches (`podrunner artifacts-uploader` …), as seen
	// where the scripts run (the in-pod agent binary on Kubernetes);
	// "podrunner" (from PATH) when empty.
	HelperPath string
	// CacheDir is where caches are kept when no remote cache store is
	// configured (cache_dir; a PVC mount on Kubernetes).
	CacheDir string
	// CacheStore is the remote cache ([runners.cache]); nil: CacheDir only.
	CacheStore *CacheStore
}

// Git strategies and submodule strategies (GIT_STRATEGY,
// GIT_SUBMODULE_STRATEGY).
const (
	GitClone = "clone"
	GitFetch = "fetch"
	GitNone  = "none"
	GitEmpty = "empty"

	SubmoduleNone      = "none"
	SubmoduleNormal    = "normal"
	SubmoduleRecursive = "recursive"
)

// statusLine is the first line of every stage script; WithJobStatus
// rewrites it so after_script sees CI_JOB_STATUS.
const statusLine = "\nCI_JOB_STATUS=running; export CI_JOB_STATUS\n"

// scriptWriter builds the body of one stage script.
type scriptWriter struct {
	b strings.Builder
}

func (w *scriptWriter) line(s string) {
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}

func (w *scriptWriter) linef(format string, args ...any) { w.line(fmt.Sprintf(format, args...)) }

// echo prints text verbatim (it may hold colour codes); printf rather than
// echo because echo interprets backslashes in some shells.
func (w *scriptWriter) echo(text string) {
	w.line("printf '%s\\n' " + quote(text))
}

func (w *scriptWriter) notice(format string, args ...any) {
	w.echo(strings.TrimSuffix(trace.Info(fmt.Sprintf(format, args...)), "\n"))
}

func (w *scriptWriter) warning(format string, args ...any) {
	w.echo(strings.TrimSuffix(trace.Warning(fmt.Sprintf(format, args...)), "\n"))
}

// commands writes user commands, each echoed as "$ cmd" in green first.
func (w *scriptWriter) commands(cmds ...string) {
	for _, c := range cmds {
		c = strings.TrimSpace(c)
		if c == "" {
			w.line("echo")
			continue
		}
		first, _, multi := strings.Cut(c, "\n")
		if multi {
			w.notice("$ %s # collapsed multi-line command", first)
		} else {
			w.notice("$ %s", first)
		}
		w.line(c)
	}
}

// command writes a command with quoted arguments.
func (w *scriptWriter) command(args ...string) {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = quote(a)
	}
	w.line(strings.Join(q, " "))
}

// exports writes every variable (public or not: the script is the only place
// secrets are handed over). Only the last definition of a key is written.
// Names a shell cannot hold are skipped.
func (w *scriptWriter) exports(vars Variables) {
	x := vars.index()
	mkdir := false
	for i, v := range vars {
		if !x.isLast(i) || !ValidName(v.Key) {
			continue
		}
		if v.File {
			p := x.filePath(v.Key)
			if !mkdir {
				w.command("mkdir", "-p", path.Dir(p))
				mkdir = true
			}
			w.linef("printf '%%s' %s > %s", quote(v.Value), quote(p))
			w.linef("export %s=%s", v.Key, quote(p))
			continue
		}
		w.linef("export %s=%s", v.Key, quote(v.Value))
	}
}

// finish wraps the body like GitLab Runner's bash shell: errexit and (when
// available) pipefail, the body evaluated with stdin closed, a TERM trap so
// a cancelled stage exits quietly.
func (w *scriptWriter) finish(shell string) string {
	var b strings.Builder
	if shell == "" {
		shell = "sh"
	}
	b.WriteString("#!/usr/bin/env " + shell + "\n\n")
	b.WriteString("trap 'exit 1' TERM\n")
	b.WriteString(statusLine[1:])
	b.WriteString("if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\n")
	b.WriteString("set -o errexit\n")
	b.WriteString("set +o noclobber\n")
	// The subshell: under errexit, bash 5.2 reports 1 instead of the failing
	// command's status when eval itself is the pipeline's last element.
	b.WriteString(": | (eval " + quote(w.b.String()) + ")\n")
	b.WriteString("exit 0\n")
	return b.String()
}

// sources computes the git settings of a job.
type sources struct {
	strategy    string
	depth       int
	checkout    bool
	cleanFlags  []string
	fetchFlags  []string
	submodules  string
	url         string // with credentials
	displayURL  string // without
	refspecs    []string
	checkoutRef string
	sha         string
	ref         string
	caBundle    string // PEM of CI_SERVER_TLS_CA_FILE
	caFile      string // where the job finds it
}

func gitSources(p *Payload, vars Variables, opts ScriptOptions) (*sources, error) {
	s := &sources{checkout: true, ref: p.GitInfo.Ref, sha: p.GitInfo.Sha}
	s.strategy = strings.TrimSpace(vars.Get("GIT_STRATEGY"))
	if s.strategy == "" {
		s.strategy = GitClone
		if p.AllowGitFetch {
			s.strategy = GitFetch
		}
	}
	switch s.strategy {
	case GitClone, GitFetch, GitNone, GitEmpty:
	default:
		return nil, fmt.Errorf("GIT_STRATEGY %q is not one of clone, fetch, none, empty", s.strategy)
	}
	s.depth = p.GitInfo.Depth
	if d := strings.TrimSpace(vars.Get("GIT_DEPTH")); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("GIT_DEPTH %q is not a non-negative number", d)
		}
		s.depth = n
	}
	if v, ok := vars.Lookup("GIT_CHECKOUT"); ok && strings.TrimSpace(v.Value) != "" {
		b, err := strconv.ParseBool(strings.TrimSpace(v.Value))
		if err != nil {
			return nil, fmt.Errorf("GIT_CHECKOUT %q is not true or false", v.Value)
		}
		s.checkout = b
	}
	s.cleanFlags = []string{"-ffdx"}
	if f, ok := vars.Lookup("GIT_CLEAN_FLAGS"); ok && strings.TrimSpace(f.Value) != "" {
		s.cleanFlags = strings.Fields(vars.Get("GIT_CLEAN_FLAGS"))
		if len(s.cleanFlags) == 1 && s.cleanFlags[0] == "none" {
			s.cleanFlags = nil
		}
	}
	s.fetchFlags = []string{"--prune", "--quiet"}
	if f, ok := vars.Lookup("GIT_FETCH_EXTRA_FLAGS"); ok && strings.TrimSpace(f.Value) != "" {
		s.fetchFlags = strings.Fields(vars.Get("GIT_FETCH_EXTRA_FLAGS"))
		if len(s.fetchFlags) == 1 && s.fetchFlags[0] == "none" {
			s.fetchFlags = nil
		}
	}
	if v, ok := vars.Lookup(TLSCAFileKey); ok && v.File && v.Value != "" {
		s.caBundle, s.caFile = v.Value, vars.FilePath(TLSCAFileKey)
	}
	s.submodules = strings.TrimSpace(vars.Get("GIT_SUBMODULE_STRATEGY"))
	if s.submodules == "" {
		s.submodules = SubmoduleNone
	}
	switch s.submodules {
	case SubmoduleNone, SubmoduleNormal, SubmoduleRecursive:
	default:
		return nil, fmt.Errorf("GIT_SUBMODULE_STRATEGY %q is not one of none, normal, recursive", s.submodules)
	}
	if s.strategy == GitNone || s.strategy == GitEmpty {
		return s, nil
	}

	var err error
	s.url, err = cloneURL(p, opts.CloneURL)
	if err != nil {
		return nil, err
	}
	s.displayURL = redactURL(s.url)
	s.refspecs = p.GitInfo.Refspecs
	if len(s.refspecs) == 0 {
		switch {
		case p.GitInfo.Ref != "" && p.GitInfo.RefType == "tag":
			s.refspecs = []string{"+refs/tags/" + p.GitInfo.Ref + ":refs/tags/" + p.GitInfo.Ref}
		case p.GitInfo.Ref != "":
			s.refspecs = []string{"+refs/heads/" + p.GitInfo.Ref + ":refs/remotes/origin/" + p.GitInfo.Ref}
		default:
			s.refspecs = []string{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
		}
	}
	switch {
	case s.sha != "":
		s.checkoutRef = s.sha
	case p.GitInfo.RefType == "tag" && s.ref != "":
		s.checkoutRef = "refs/tags/" + s.ref
	case s.ref != "":
		s.checkoutRef = "refs/remotes/origin/" + s.ref
	case s.checkout:
		return nil, errors.New("git_info has neither sha nor ref: nothing to check out (set GIT_CHECKOUT=false or GIT_STRATEGY=none)")
	}
	return s, nil
}

// GitSettings are a job's effective git settings (GIT_STRATEGY, GIT_DEPTH,
// GIT_CHECKOUT, GIT_CLEAN_FLAGS, GIT_SUBMODULE_STRATEGY and clone_url
// applied), for a runner that fetches the sources itself (the in-pod
// agent) instead of running the get_sources script.
type GitSettings struct {
	Strategy   string // clone, fetch, none, empty
	Depth      int
	Checkout   bool
	CleanFlags []string // nil: no clean (GIT_CLEAN_FLAGS=none)
	FetchFlags []string // nil: GIT_FETCH_EXTRA_FLAGS=none
	Submodules string   // none, normal, recursive
	URL        string   // with credentials; empty for none and empty
	Refspecs   []string
	Ref        string
	RefType    string
	Sha        string
	// CABundle is the PEM of CI_SERVER_TLS_CA_FILE, trusted for the fetch.
	CABundle string
}

// ResolveGitSettings returns the git settings the get_sources script of
// NewPlan would use; errors are those of NewPlan.
func ResolveGitSettings(p *Payload, vars Variables, opts ScriptOptions) (*GitSettings, error) {
	s, err := gitSources(p, vars, opts)
	if err != nil {
		return nil, err
	}
	return &GitSettings{Strategy: s.strategy, Depth: s.depth, Checkout: s.checkout, CleanFlags: slices.Clone(s.cleanFlags),
		FetchFlags: slices.Clone(s.fetchFlags), CABundle: s.caBundle,
		Submodules: s.submodules, URL: s.url, Refspecs: slices.Clone(s.refspecs), Ref: s.ref, RefType: p.GitInfo.RefType, Sha: s.sha}, nil
}

// serverURL is scheme://host[:port]/ of the repository, the scope of the
// sslCAInfo setting (other hosts, e.g. of submodules, keep the system CAs).
func (s *sources) serverURL() string {
	u, err := url.Parse(s.url)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host + "/"
}

func cloneURL(p *Payload, override string) (string, error) {
	raw := p.GitInfo.RepoURL
	if override == "" {
		if raw == "" {
			return "", errors.New("git_info.repo_url is empty: cannot fetch sources (set GIT_STRATEGY=none to skip)")
		}
		return raw, nil
	}
	u, err := url.Parse(override)
	if err != nil {
		return "", fmt.Errorf("clone_url %q: %w", override, err)
	}
	if orig, err := url.Parse(raw); err == nil && orig.User != nil {
		u.User = orig.User
	} else {
		u.User = url.UserPassword("gitlab-ci-token", p.Token)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.Trim(p.JobInfo.ProjectFullPath, "/") + ".git"
	u.RawPath = ""
	return u.String(), nil
}

// redactURL removes the userinfo (credentials) of a URL for display.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 && strings.Contains(raw[:i], "://") {
			// Unparsable but credential-like: drop everything up to '@'.
			scheme, _, _ := strings.Cut(raw, "://")
			return scheme + "://" + raw[i+1:]
		}
		return raw
	}
	u.User = nil
	return u.String()
}

func urlPassword(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}

func (w *scriptWriter) getSources(p *Payload, vars Variables, s *sources, opts ScriptOptions) {
	dir := vars.Get("CI_PROJECT_DIR")
	w.exports(vars)
	if s.strategy != GitNone {
		w.hookCommands(configScript(opts.PreGetSourcesScript), hookScript(p, "pre_get_sources_script"))
	}
	switch s.strategy {
	case GitNone:
		w.notice("Skipping Git repository setup")
		w.command("mkdir", "-p", dir)
	case GitEmpty:
		w.notice("Skipping Git repository setup and creating an empty build directory")
		w.command("rm", "-rf", dir)
		w.command("mkdir", "-p", dir)
	default:
		if s.depth > 0 {
			w.notice("Fetching changes from %s with git depth set to %d...", s.displayURL, s.depth)
		} else {
			w.notice("Fetching changes from %s...", s.displayURL)
		}
		fresh := func() {
			w.command("rm", "-rf", dir)
			w.command("mkdir", "-p", dir)
			w.command("cd", dir)
			w.command("git", "-c", "init.defaultBranch=main", "init", "-q", "--template=")
			w.notice("Created fresh repository.")
			w.command("git", "remote", "add", "origin", s.url)
		}
		if s.strategy == GitFetch {
			w.linef("if [ -d %s ]; then", quote(dir+"/.git"))
			w.command("cd", dir)
			w.notice("Reusing existing Git repository in %s", dir)
			// Left behind when an earlier job was killed mid-operation.
			w.command("rm", "-f", ".git/index.lock", ".git/shallow.lock", ".git/HEAD.lock", ".git/hooks/post-checkout")
			w.command("git", "remote", "set-url", "origin", s.url)
			w.line("else")
			fresh()
			w.line("fi")
		} else {
			fresh()
		}
		w.command("git", "config", "fetch.recurseSubmodules", "false")
		if s.caFile != "" {
			// As GitLab Runner: git trusts the CA the runner trusts for GitLab.
			key := "http.sslCAInfo"
			if u := s.serverURL(); u != "" {
				key = "http." + u + ".sslCAInfo"
			}
			w.command("git", "config", key, s.caFile)
		}
		args := []string{"git", "fetch", "origin"}
		args = append(args, s.fetchFlags...)
		if s.depth > 0 {
			args = append(args, "--depth", strconv.Itoa(s.depth))
		}
		args = append(args, s.refspecs...)
		w.command(args...)
		if s.checkout {
			short := s.checkoutRef
			if len(short) > 8 && s.sha != "" {
				short = short[:8]
			}
			if s.ref != "" {
				w.notice("Checking out %s as detached HEAD (ref is %s)...", short, s.ref)
			} else {
				w.notice("Checking out %s...", short)
			}
			w.command("git", "-c", "advice.detachedHead=false", "checkout", "-f", "-q", s.checkoutRef)
			if len(s.cleanFlags) > 0 {
				w.command(append([]string{"git", "clean"}, s.cleanFlags...)...)
			}
		} else {
			w.notice("Skipping Git checkout")
		}
		switch s.submodules {
		case SubmoduleNone:
			w.notice("Skipping Git submodules setup")
		default:
			rec := s.submodules == SubmoduleRecursive
			if rec {
				w.notice("Updating/initializing submodules recursively...")
			} else {
				w.notice("Updating/initializing submodules...")
			}
			sync := []string{"git", "submodule", "sync"}
			update := []string{"git", "submodule", "update", "--init"}
			if rec {
				sync = append(sync, "--recursive")
				update = append(update, "--recursive")
			}
			w.command(sync...)
			w.command(update...)
		}
	}
	if s.strategy != GitNone {
		w.hookCommands(hookScript(p, "post_get_sources_script"), configScript(opts.PostGetSourcesScript))
	}
}

// sourceHooks returns the pre and post get-sources hooks as scripts of
// their own (see Stage.PreScript), run exactly when getSources runs them.
func sourceHooks(p *Payload, vars Variables, s *sources, opts ScriptOptions, shell string) (pre, post string) {
	if s.strategy == GitNone {
		return "", ""
	}
	dir := vars.Get("CI_PROJECT_DIR")
	if cmds := slices.Concat(configScript(opts.PreGetSourcesScript), hookScript(p, "pre_get_sources_script")); len(cmds) > 0 {
		var w scriptWriter
		w.exports(vars)
		w.commands(cmds...)
		pre = w.finish(shell)
	}
	if cmds := slices.Concat(hookScript(p, "post_get_sources_script"), configScript(opts.PostGetSourcesScript)); len(cmds) > 0 {
		var w scriptWriter
		w.exports(vars)
		w.command("cd", dir)
		w.commands(cmds...)
		post = w.finish(shell)
	}
	return pre, post
}

// hookCommands writes hook scripts: config hooks are one shell snippet,
// job hooks a list of commands; both are echoed like user commands.
func (w *scriptWriter) hookCommands(parts ...[]string) {
	for _, cmds := range parts {
		w.commands(cmds...)
	}
}

func hookScript(p *Payload, name string) []string {
	for _, h := range p.Hooks {
		if h.Name == name {
			return h.Script
		}
	}
	return nil
}

// configScript turns a config hook (one string) into a command list.
func configScript(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return []string{s}
}
