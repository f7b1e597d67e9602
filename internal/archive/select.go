package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// selectFiles returns the slash-separated paths (relative to root, sorted)
// that s selects. Directories matched by Paths are added with everything
// beneath them; symbolic links are never followed.
func selectFiles(ctx context.Context, root string, s Spec) ([]string, error) {
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("archive root %s: %w", root, err)
	}
	if fi, err := os.Stat(absRoot); err != nil {
		return nil, fmt.Errorf("archive root: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("archive root %s is not a directory", absRoot)
	}
	sel := &selection{ctx: ctx, root: absRoot, warn: s.warn, set: map[string]struct{}{}}
	sel.exclude = make([]string, 0, len(s.Exclude))
	for _, p := range s.Exclude {
		rel, ok := relPattern(absRoot, p)
		if !ok {
			s.warn(fmt.Sprintf("exclude %q: not a subpath of the project directory; ignored", p))
			continue
		}
		if !doublestar.ValidatePattern(rel) {
			return nil, fmt.Errorf("exclude %q: invalid glob pattern", p)
		}
		sel.exclude = append(sel.exclude, rel)
	}
	for _, p := range s.Paths {
		if err := sel.addPattern(p); err != nil {
			return nil, err
		}
	}
	if s.Untracked {
		files, err := untrackedFiles(ctx, absRoot)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			sel.add(f)
		}
	}
	out := make([]string, 0, len(sel.set))
	for p := range sel.set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

type selection struct {
	ctx     context.Context
	root    string
	warn    func(string)
	exclude []string
	set     map[string]struct{}
}

// relPattern makes a pattern relative to root; ok is false when it points
// outside root (GitLab Runner skips such paths with a warning).
func relPattern(root, p string) (string, bool) {
	p = strings.TrimSpace(p)
	if p == "" {
		return "", false
	}
	if filepath.IsAbs(p) {
		rel, err := filepath.Rel(root, filepath.Clean(p))
		if err != nil {
			return "", false
		}
		p = rel
	}
	p = path.Clean(filepath.ToSlash(p))
	if p == ".." || strings.HasPrefix(p, "../") || strings.HasPrefix(p, "/") {
		return "", false
	}
	return p, true
}

func (s *selection) excluded(rel string) bool {
	// As in GitLab, exclude is not recursive: it matches the entry's own
	// path (use dir/**/* to drop a directory's content).
	for _, pat := range s.exclude {
		if doublestar.MatchUnvalidated(pat, rel) {
			return true
		}
	}
	return false
}

func (s *selection) add(rel string) {
	if rel == "." || rel == "" || s.excluded(rel) {
		return
	}
	s.set[rel] = struct{}{}
}

func (s *selection) addPattern(p string) error {
	rel, ok := relPattern(s.root, p)
	if !ok {
		s.warn(fmt.Sprintf("%s: not a subpath of the project directory; skipped", p))
		return nil
	}
	if !doublestar.ValidatePattern(rel) {
		return fmt.Errorf("path %q: invalid glob pattern", p)
	}
	var matches []string
	if rel == "." {
		matches = []string{"."}
	} else {
		var err error
		matches, err = doublestar.Glob(os.DirFS(s.root), rel, doublestar.WithNoFollow())
		if err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
	}
	if len(matches) == 0 {
		s.warn(fmt.Sprintf("%s: no matching files. Ensure that the artifact path is relative to the working directory (%s)", p, s.root))
		return nil
	}
	for _, m := range matches {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		if err := s.addTree(m); err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
	}
	return nil
}

// addTree adds rel and, for a real directory, everything beneath it.
func (s *selection) addTree(rel string) error {
	abs := filepath.Join(s.root, filepath.FromSlash(rel))
	fi, err := os.Lstat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if !fi.IsDir() {
		s.add(rel)
		return nil
	}
	return filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := s.ctx.Err(); err != nil {
			return err
		}
		r, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		s.add(filepath.ToSlash(r))
		return nil
	})
}

// untrackedWithoutGit lists untracked files where no git binary is
// installed (job images often have none): go-git's status, registered by
// package archive/gitstatus, which podrunner-helper links. The manager does
// not: its shell executor clones with git, so git is there.
var untrackedWithoutGit func(root string) ([]string, error)

// RegisterUntrackedWithoutGit sets how untracked files are listed where no
// git binary is installed (package archive/gitstatus calls it).
func RegisterUntrackedWithoutGit(f func(root string) ([]string, error)) { untrackedWithoutGit = f }

// untrackedFiles lists the files under root that git neither tracks nor
// ignores, relative to root, as `git ls-files -o --exclude-standard` does.
func untrackedFiles(ctx context.Context, root string) ([]string, error) {
	if gitBin, err := exec.LookPath("git"); err == nil {
		cmd := exec.CommandContext(ctx, gitBin, "-c", "core.quotepath=off", "ls-files", "-o", "--exclude-standard", "-z")
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("untracked files: git ls-files in %s: %w: %s", root, err, strings.TrimSpace(stderr.String()))
		}
		var files []string
		for _, f := range bytes.Split(out, []byte{0}) {
			if len(f) > 0 {
				files = append(files, path.Clean(string(f)))
			}
		}
		return files, nil
	}
	if untrackedWithoutGit == nil {
		return nil, errors.New("untracked files: no git binary on PATH; install git")
	}
	return untrackedWithoutGit(root)
}
