// Package gitstatus lists a repository's untracked files with go-git, for
// artifacts with `untracked: true` where no git binary is installed, as in
// most job images. Importing it registers it with package archive;
// podrunner-helper does, the manager does not (it would link go-git only
// for this).
package gitstatus

import (
	"fmt"
	"path/filepath"

	"github.com/go-git/go-git/v5"

	"github.com/podrunner/podrunner/internal/archive"
)

func init() { archive.RegisterUntrackedWithoutGit(Untracked) }

// Untracked lists the files under root that git neither tracks nor
// ignores, relative to root, in no particular order.
func Untracked(root string) ([]string, error) {
	repo, err := git.PlainOpenWithOptions(root, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, fmt.Errorf("untracked files: open git repository at %s: %w", root, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, fmt.Errorf("untracked files: %w", err)
	}
	st, err := wt.Status()
	if err != nil {
		return nil, fmt.Errorf("untracked files: git status: %w", err)
	}
	top := wt.Filesystem.Root()
	var files []string
	for p, fs := range st {
		if fs.Worktree != git.Untracked {
			continue
		}
		rel, err := filepath.Rel(root, filepath.Join(top, filepath.FromSlash(p)))
		if err != nil || !filepath.IsLocal(rel) {
			continue
		}
		files = append(files, filepath.ToSlash(rel))
	}
	return files, nil
}
