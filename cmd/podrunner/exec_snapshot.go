package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// snapshot commits the files of dir (tracked and untracked, minus what git
// ignores, when dir is in a git work tree) into a new repository at repo and
// returns its branch.
func snapshot(dir, repo string) (string, error) {
	files, err := listFiles(dir)
	if err != nil {
		return "", err
	}
	branch := "main"
	if b, err := gitOut(dir, "rev-parse", "--abbrev-ref", "HEAD"); err == nil && b != "" && b != "HEAD" {
		branch = b
	}
	if _, err := gitOut("", "init", "-q", "-b", branch, repo); err != nil {
		return "", err
	}
	for _, f := range files {
		src := filepath.Join(dir, f)
		dst := filepath.Join(repo, f)
		info, err := os.Lstat(src)
		if err != nil {
			continue // listed but deleted in the work tree
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return "", err
			}
			if err := os.Symlink(target, dst); err != nil {
				return "", err
			}
		case info.Mode().IsRegular():
			data, err := os.ReadFile(src)
			if err != nil {
				return "", err
			}
			if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
				return "", err
			}
		}
	}
	if _, err := gitOut(repo, "add", "-A"); err != nil {
		return "", err
	}
	// HEAD's message and author, so rules on CI_COMMIT_MESSAGE/_TITLE
	// and CI_COMMIT_AUTHOR can be tried locally.
	name, email, msg := "podrunner exec", "exec@podrunner.local", "podrunner exec snapshot"
	if head, err := gitOut(dir, "log", "-1", "--format=%an%x00%ae%x00%B", "HEAD"); err == nil {
		if f := strings.SplitN(head, "\x00", 3); len(f) == 3 && f[0] != "" && f[1] != "" && strings.TrimSpace(f[2]) != "" {
			name, email, msg = f[0], f[1], f[2]
		}
	}
	if _, err := gitOut(repo, "-c", "user.name="+name, "-c", "user.email="+email,
		"commit", "-q", "--allow-empty", "--cleanup=verbatim", "-m", msg); err != nil {
		return "", err
	}
	return branch, nil
}

// defaultBranch is the project's default branch as the repository at dir
// knows it: origin/HEAD (the remote's default), else init.defaultBranch or
// main/master when such a branch exists, else the only local branch (GitLab
// makes the first pushed branch the default), else init.defaultBranch,
// else current (a directory without a repository, or one new branch).
func defaultBranch(dir, current string) string {
	if ref, err := gitOut(dir, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"); err == nil {
		if b, ok := strings.CutPrefix(ref, "origin/"); ok && b != "" {
			return b
		}
	}
	configured, _ := gitOut(dir, "config", "init.defaultBranch")
	exists := func(b string) bool {
		if b == "" {
			return false
		}
		_, err := gitOut(dir, "rev-parse", "-q", "--verify", "refs/heads/"+b)
		return err == nil
	}
	for _, b := range []string{configured, "main", "master"} {
		if exists(b) {
			return b
		}
	}
	if out, err := gitOut(dir, "for-each-ref", "--format=%(refname:short)", "refs/heads/"); err == nil {
		if bs := strings.Fields(out); len(bs) == 1 {
			return bs[0]
		}
	}
	if configured != "" {
		return configured
	}
	return current
}

func listFiles(dir string) ([]string, error) {
	if out, err := gitOut(dir, "ls-files", "-z", "-co", "--exclude-standard"); err == nil {
		var files []string
		for _, f := range strings.Split(out, "\x00") {
			if f != "" && !inStateDir(f) {
				files = append(files, f)
			}
		}
		return files, nil
	}
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || path == filepath.Join(dir, execStateDir)) {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	return files, err
}

func gitOut(dir string, args ...string) (string, error) {
	c := exec.Command("git", args...)
	c.Dir = dir
	var stderr bytes.Buffer
	c.Stderr = &stderr
	c.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "project"
	}
	return b.String()
}

// inStateDir reports whether a path (relative to the snapshot's root, as
// git lists it) is under exec's own state directory: caches and logs of
// earlier runs are no part of the project.
func inStateDir(rel string) bool {
	return rel == execStateDir || strings.HasPrefix(rel, execStateDir+"/")
}
