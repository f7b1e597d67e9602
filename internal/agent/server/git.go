package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
)

// gitFailure is the exit code of a failed source fetch, git's own for a
// fatal error, so the job fails with script_failure and exit code 128 as it
// does with the git script.
const gitFailure = 128

// getSources does what the get_sources script does, with go-git, so that
// job images need no git. It prints GitLab Runner's lines to w and returns
// the stage's exit code. Credentials of the repository URL are never
// printed.
//
// Limits (best effort, compared with the git CLI):
//   - clean removes untracked and ignored files ("git clean -ffdx"); other
//     GIT_CLEAN_FLAGS than none are not honoured;
//   - of GIT_FETCH_EXTRA_FLAGS only what go-git can do is honoured (see
//     fetchFlags); the job's log names the flags ignored;
//   - SHA-256 repositories are not supported (go-git v5);
//   - submodules: no "git submodule sync" for reused repositories (a changed
//     submodule URL needs GIT_STRATEGY=clone), no GIT_SUBMODULE_DEPTH or
//     GIT_SUBMODULE_PATHS; relative URLs and absolute ones on the
//     repository's host get its credentials, other hosts none;
//   - SSH URLs work only if the image provides keys to go-git.
func getSources(ctx context.Context, src *agent.Sources, dir string, w io.Writer) int {
	g := &getter{src: src, dir: dir, w: w}
	if err := g.run(ctx); err != nil {
		trace.Errorf(w, "%s", g.scrub(err.Error()))
		return gitFailure
	}
	return 0
}

type getter struct {
	src *agent.Sources
	dir string
	w   io.Writer
}

// scrub removes the repository's credentials from a message.
func (g *getter) scrub(msg string) string {
	u, err := url.Parse(g.src.RepoURL)
	if err != nil || u.User == nil {
		return msg
	}
	msg = strings.ReplaceAll(msg, g.src.RepoURL, redactURL(g.src.RepoURL))
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "[MASKED]")
		msg = strings.ReplaceAll(msg, url.PathEscape(pw), "[MASKED]")
	}
	return msg
}

func (g *getter) run(ctx context.Context) error {
	src, dir := g.src, g.dir
	switch src.Strategy {
	case job.GitNone:
		trace.Infof(g.w, "Skipping Git repository setup")
		return mkdir(dir)
	case job.GitEmpty:
		trace.Infof(g.w, "Skipping Git repository setup and creating an empty build directory")
		if err := clearDir(dir); err != nil {
			return err
		}
		return mkdir(dir)
	}
	display := redactURL(src.RepoURL)
	if src.Depth > 0 {
		trace.Infof(g.w, "Fetching changes from %s with git depth set to %d...", display, src.Depth)
	} else {
		trace.Infof(g.w, "Fetching changes from %s...", display)
	}
	repo, err := g.open()
	if err != nil {
		return err
	}
	if err := g.fetch(ctx, repo); err != nil {
		return err
	}
	if !src.Checkout {
		trace.Infof(g.w, "Skipping Git checkout")
	} else if err := g.checkout(repo); err != nil {
		return err
	}
	switch src.Submodules {
	case "", job.SubmoduleNone:
		trace.Infof(g.w, "Skipping Git submodules setup")
		return nil
	case job.SubmoduleRecursive:
		trace.Infof(g.w, "Updating/initializing submodules recursively...")
	default:
		trace.Infof(g.w, "Updating/initializing submodules...")
	}
	return g.submodules(ctx, repo, src.Submodules == job.SubmoduleRecursive, 0)
}

// open reuses the repository in dir (fetch strategy) or creates a fresh one.
func (g *getter) open() (*git.Repository, error) {
	if g.src.Strategy == job.GitFetch {
		if _, err := os.Stat(filepath.Join(g.dir, ".git")); err == nil {
			repo, err := g.reuse()
			if err == nil {
				return repo, nil
			}
			trace.Warningf(g.w, "Cannot reuse the Git repository in %s (%s); creating a fresh one", g.dir, g.scrub(err.Error()))
		}
	}
	if err := clearDir(g.dir); err != nil {
		return nil, err
	}
	if err := mkdir(g.dir); err != nil {
		return nil, err
	}
	repo, err := git.PlainInitWithOptions(g.dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
	if err != nil {
		return nil, fmt.Errorf("create Git repository in %s: %w", g.dir, err)
	}
	trace.Infof(g.w, "Created fresh repository.")
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{g.src.RepoURL}}); err != nil {
		return nil, fmt.Errorf("add remote origin: %w", err)
	}
	return repo, nil
}

func (g *getter) reuse() (*git.Repository, error) {
	// Left behind when an earlier job was killed mid-operation.
	for _, f := range []string{"index.lock", "shallow.lock", "HEAD.lock", "config.lock"} {
		_ = os.Remove(filepath.Join(g.dir, ".git", f))
	}
	repo, err := git.PlainOpen(g.dir)
	if err != nil {
		return nil, err
	}
	cfg, err := repo.Config()
	if err != nil {
		return nil, err
	}
	rc := cfg.Remotes[git.DefaultRemoteName]
	if rc == nil {
		rc = &config.RemoteConfig{Name: git.DefaultRemoteName}
		cfg.Remotes[git.DefaultRemoteName] = rc
	}
	rc.URLs = []string{g.src.RepoURL}
	if err := repo.SetConfig(cfg); err != nil {
		return nil, err
	}
	trace.Infof(g.w, "Reusing existing Git repository in %s", g.dir)
	return repo, nil
}

// fetchFlags is what go-git can make of GIT_FETCH_EXTRA_FLAGS: pruning
// and the tag mode. Output flags need nothing (the agent shows no
// progress); the rest are returned as ignored.
func fetchFlags(flags []string) (prune bool, tags git.TagMode, ignored []string) {
	tags = git.TagFollowing // git fetch's default: the tags of what it fetches
	for _, f := range flags {
		switch f {
		case "--prune", "-p":
			prune = true
		case "--no-prune":
			prune = false
		case "--tags", "-t":
			tags = git.AllTags
		case "--no-tags", "-n":
			tags = git.NoTags
		case "--quiet", "-q", "--verbose", "-v", "--progress", "--no-progress":
		default:
			ignored = append(ignored, f)
		}
	}
	return prune, tags, ignored
}

func (g *getter) fetch(ctx context.Context, repo *git.Repository) error {
	specs := make([]config.RefSpec, 0, len(g.src.Refspecs))
	for _, s := range g.src.Refspecs {
		rs := config.RefSpec(strings.TrimSpace(s))
		if err := rs.Validate(); err != nil {
			return fmt.Errorf("refspec %q: %w", s, err)
		}
		specs = append(specs, rs)
	}
	if len(specs) == 0 {
		specs = []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
	}
	prune, tags, ignored := fetchFlags(g.src.FetchFlags)
	if len(ignored) > 0 {
		trace.Warningf(g.w, "GIT_FETCH_EXTRA_FLAGS: %s ignored: the podrunner agent fetches with go-git, which has no such option (honoured: --prune, --no-prune, --tags, --no-tags, --quiet, --verbose, --progress)", strings.Join(ignored, " "))
	}
	err := repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: git.DefaultRemoteName,
		RefSpecs:   specs,
		Depth:      g.src.Depth,
		Force:      true,
		Prune:      prune,
		Tags:       tags,
		CABundle:   []byte(g.src.CABundle),
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("fetch from %s: %w (the job token may have expired or lack access to the project)", redactURL(g.src.RepoURL), err)
	}
	return fmt.Errorf("fetch from %s: %w", redactURL(g.src.RepoURL), err)
}

func (g *getter) checkout(repo *git.Repository) error {
	src := g.src
	var (
		hash  plumbing.Hash
		shown string
	)
	if src.Sha != "" {
		if !plumbing.IsHash(src.Sha) {
			return fmt.Errorf("sha %q is not a SHA-1 commit id (SHA-256 repositories are not supported by the agent)", src.Sha)
		}
		hash, shown = plumbing.NewHash(src.Sha), src.Sha[:8]
	} else {
		rev := "refs/remotes/origin/" + src.Ref
		if src.RefType == "tag" {
			rev = "refs/tags/" + src.Ref
		}
		h, err := repo.ResolveRevision(plumbing.Revision(rev))
		if err != nil {
			return fmt.Errorf("resolve %s: %w", rev, err)
		}
		hash, shown = *h, rev
	}
	if src.Ref != "" {
		trace.Infof(g.w, "Checking out %s as detached HEAD (ref is %s)...", shown, src.Ref)
	} else {
		trace.Infof(g.w, "Checking out %s...", shown)
	}
	if _, err := repo.CommitObject(hash); err != nil {
		return fmt.Errorf("reference is not a tree: %s (not fetched: is it within the git depth %d of the fetched refs?): %w", hash, src.Depth, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return err
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: hash, Force: true}); err != nil {
		return fmt.Errorf("checkout %s: %w", hash, err)
	}
	if src.NoClean {
		return nil
	}
	return cleanWorktree(repo, g.dir)
}

// submodules initialises and updates the submodules of repo (and theirs
// when recursive). Each gets the repository's credentials only when it
// lives on the same host.
func (g *getter) submodules(ctx context.Context, repo *git.Repository, recursive bool, level int) error {
	if level > int(git.DefaultSubmoduleRecursionDepth) {
		return errors.New("submodules nested too deeply")
	}
	wt, err := repo.Worktree()
	if err != nil {
		return err
	}
	subs, err := wt.Submodules()
	if err != nil {
		return fmt.Errorf("read submodules: %w", err)
	}
	for _, s := range subs {
		c := s.Config()
		err := s.UpdateContext(ctx, &git.SubmoduleUpdateOptions{
			Init:              true,
			RecurseSubmodules: git.NoRecurseSubmodules,
			Auth:              g.submoduleAuth(c.URL),
		})
		if err != nil {
			return fmt.Errorf("submodule %s: %w", c.Path, err)
		}
		if !recursive {
			continue
		}
		r, err := s.Repository()
		if err != nil {
			return fmt.Errorf("submodule %s: %w", c.Path, err)
		}
		if err := g.submodules(ctx, r, true, level+1); err != nil {
			return fmt.Errorf("submodule %s: %w", c.Path, err)
		}
	}
	return nil
}

// submoduleAuth returns the repository's credentials for an absolute
// submodule URL without credentials on the repository's host (GitLab
// Runner does the same with an insteadOf rule). Relative URLs inherit the
// credentials from the parent's remote URL within go-git.
func (g *getter) submoduleAuth(raw string) transport.AuthMethod {
	main, err := url.Parse(g.src.RepoURL)
	if err != nil || main.User == nil {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, main.Host) {
		return nil
	}
	pw, _ := main.User.Password()
	return &githttp.BasicAuth{Username: main.User.Username(), Password: pw}
}

// cleanWorktree removes every file that is not in the index, ignored ones
// included: "git clean -ffdx", GitLab Runner's default.
func cleanWorktree(repo *git.Repository, dir string) error {
	idx, err := repo.Storer.Index()
	if err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	keep := map[string]bool{}    // tracked files and submodules
	parents := map[string]bool{} // directories holding tracked entries
	gitlinks := map[string]bool{}
	for _, e := range idx.Entries {
		keep[e.Name] = true
		if e.Mode == filemode.Submodule {
			gitlinks[e.Name] = true
		}
		for d := filepath.ToSlash(filepath.Dir(e.Name)); d != "." && d != "/"; d = filepath.ToSlash(filepath.Dir(d)) {
			parents[d] = true
		}
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".git":
			return filepath.SkipDir
		case gitlinks[rel]:
			return filepath.SkipDir // the submodule's own business
		case keep[rel] && !d.IsDir():
			return nil
		case parents[rel] && d.IsDir():
			return nil
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("clean %s: %w", rel, err)
		}
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
}

// clearDir empties dir without removing it (it may be a mount point).
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("empty %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty %s: %w", dir, err)
		}
	}
	return nil
}

func mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

// redactURL removes the credentials of a URL for display.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			if scheme, _, ok := strings.Cut(raw, "://"); ok {
				return scheme + "://" + raw[i+1:]
			}
		}
		return raw
	}
	u.User = nil
	return u.String()
}
