package coordinator

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// gitTimeout bounds every git command the coordinator runs itself.
const gitTimeout = 2 * time.Minute

func lookPath(bin string) (string, error) { return exec.LookPath(bin) }

func (s *Server) gitBytes(dir string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.git, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func (s *Server) gitOut(dir string, args ...string) (string, error) {
	out, err := s.gitBytes(dir, args...)
	return strings.TrimSpace(string(out)), err
}

// mirror creates the bare repository served for the project.
func (s *Server) mirror(fullPath, repoDir string) (string, error) {
	src, err := filepath.Abs(repoDir)
	if err != nil {
		return "", fmt.Errorf("repository %s: %w", repoDir, err)
	}
	if _, err := s.gitOut(src, "rev-parse", "--git-dir"); err != nil {
		return "", fmt.Errorf("%s is not a git repository (git init and commit first): %w", repoDir, err)
	}
	bare := filepath.Join(s.dir, "repos", filepath.FromSlash(fullPath)+".git")
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(bare), err)
	}
	if _, err := s.gitOut(s.dir, "clone", "--quiet", "--bare", "--no-local", src, bare); err != nil {
		return "", fmt.Errorf("mirror %s: %w", repoDir, err)
	}
	// Allow fetching any advertised object by sha (the runner may
	// fetch the pipeline sha directly).
	if _, err := s.gitOut(bare, "config", "uploadpack.allowAnySHA1InWant", "true"); err != nil {
		return "", err
	}
	return bare, nil
}

// refresh fetches new commits of branches and tags from the source.
func (s *Server) refresh(p *project) error {
	_, err := s.gitOut(p.bare, "fetch", "--quiet", "--prune", "--force", p.source,
		"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
	if err != nil {
		return fmt.Errorf("update mirror of %s: %w", p.fullPath, err)
	}
	return nil
}

func (s *Server) resolveCommit(p *project, ref string) (commit, error) {
	c := commit{ref: ref, beforeSha: strings.Repeat("0", 40)}
	if p.objectFormat == "sha256" {
		c.beforeSha = strings.Repeat("0", 64)
	}
	switch {
	case s.refExists(p, "refs/heads/"+ref):
		c.refType = "branch"
		c.sha, _ = s.gitOut(p.bare, "rev-parse", "refs/heads/"+ref+"^{commit}")
	case s.refExists(p, "refs/tags/"+ref):
		c.refType = "tag"
		c.sha, _ = s.gitOut(p.bare, "rev-parse", "refs/tags/"+ref+"^{commit}")
	default:
		return c, fmt.Errorf("ref %q is neither a branch nor a tag of %s", ref, p.fullPath)
	}
	out, err := s.gitBytes(p.bare, "log", "-1", "--format=%an%x00%ae%x00%aI%x00%B", c.sha)
	if err != nil {
		return c, err
	}
	parts := strings.SplitN(string(out), "\x00", 4)
	if len(parts) == 4 {
		c.authorName, c.authorEmail, c.timestamp = parts[0], parts[1], parts[2]
		c.message = strings.TrimRight(parts[3], "\n") + "\n"
		c.title, c.description, _ = strings.Cut(strings.TrimRight(parts[3], "\n"), "\n")
		c.description = strings.TrimLeft(c.description, "\n")
		if c.description != "" {
			c.description += "\n"
		}
	}
	return c, nil
}

func (s *Server) refExists(p *project, ref string) bool {
	_, err := s.gitOut(p.bare, "show-ref", "--verify", "--quiet", ref)
	return err == nil
}

// handleGit serves /<namespace>/<project>.git/… over Git's smart HTTP
// protocol. Like GitLab, it wants basic auth gitlab-ci-token:<job token>
// of a job of that project that is running; pushes are refused and the
// dumb protocol is not served (404, as Workhorse answers).
//
// Like Workhorse, it runs "git upload-pack --stateless-rpc" itself rather
// than the git http-backend CGI: one process per request instead of three
// (git, http-backend, upload-pack), which is most of a small fetch's time.
func (s *Server) handleGit(w http.ResponseWriter, r *http.Request) {
	i := strings.Index(r.URL.Path, ".git/")
	if i < 0 {
		http.NotFound(w, r)
		return
	}
	fullPath := strings.Trim(r.URL.Path[:i], "/")
	rest := r.URL.Path[i+len(".git"):]
	s.mu.Lock()
	p := s.projects[fullPath]
	var authorized bool
	if user, pass, ok := r.BasicAuth(); ok && user == "gitlab-ci-token" && p != nil {
		for _, j := range s.jobs {
			if j.token == pass && j.pipeline.project == p && j.processingOnRunner() {
				authorized = true
				break
			}
		}
	}
	s.mu.Unlock()
	if !authorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return
	}
	service := r.URL.Query().Get("service")
	if rest == "/git-receive-pack" || service == "git-receive-pack" {
		http.Error(w, "You are not allowed to push code to this project.", http.StatusForbidden)
		return
	}
	switch {
	case rest == "/info/refs" && r.Method == http.MethodGet && service == "git-upload-pack":
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		w.Header().Set("Cache-Control", "no-cache")
		// Protocol v2 starts with its capabilities; v0 with the service line.
		if !strings.Contains(r.Header.Get("Git-Protocol"), "version=2") {
			w.Write([]byte("001e# service=git-upload-pack\n0000"))
		}
		s.uploadPack(w, r, p.bare, nil, "--advertise-refs")
	case rest == "/git-upload-pack" && r.Method == http.MethodPost:
		body := io.Reader(r.Body)
		switch r.Header.Get("Content-Encoding") {
		case "gzip", "x-gzip": // git gzips request bodies over 1 KiB
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, "request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			defer zr.Close()
			body = zr
		}
		w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
		w.Header().Set("Cache-Control", "no-cache")
		s.uploadPack(w, r, p.bare, body)
	default:
		http.Error(w, "Not Found", http.StatusNotFound)
	}
}

// uploadPack runs git upload-pack for one smart HTTP request on the bare
// repository, its output the response body (headers already set).
func (s *Server) uploadPack(w http.ResponseWriter, r *http.Request, bare string, stdin io.Reader, args ...string) {
	args = append(append([]string{"upload-pack", "--stateless-rpc"}, args...), bare)
	cmd := exec.CommandContext(r.Context(), s.git, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LC_ALL=C"}
	if proto := r.Header.Get("Git-Protocol"); proto != "" {
		cmd.Env = append(cmd.Env, "GIT_PROTOCOL="+proto)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, w, &logWriter{s}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil && r.Context().Err() == nil {
		// The status line is gone with the first byte; git's own error
		// (an ERR packet) is in the body, the rest in the log.
		s.log.Warn("git upload-pack", "repository", bare, "err", err)
	}
}

type logWriter struct{ s *Server }

func (l *logWriter) Write(p []byte) (int, error) {
	l.s.log.Warn("git upload-pack", "stderr", strings.TrimSpace(string(p)))
	return len(p), nil
}
