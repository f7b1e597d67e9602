package coordinator

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/podrunner/podrunner/internal/ciyaml"
)

// What pipeline creation reads from the repository: included files, the
// files of the commit (rules:exists), the push's changes (rules:changes)
// and the last commits of cache:key:files.

// commitReader reads files of the commit, for include: local.
func (s *Server) commitReader(p *project, sha string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		name = strings.TrimPrefix(path.Clean("/"+name), "/")
		data, err := s.gitBytes(p.bare, "cat-file", "blob", sha+":"+name)
		if err != nil {
			return nil, fmt.Errorf("file %s does not exist in commit %s", name, sha)
		}
		return data, nil
	}
}

// workingCopyReader reads files of the working copy of dir, refusing
// names that leave it.
func workingCopyReader(dir string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		rel := strings.TrimPrefix(path.Clean("/"+name), "/")
		if rel == "" || !filepath.IsLocal(filepath.FromSlash(rel)) {
			return nil, fmt.Errorf("file %s is outside the repository", name)
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			return nil, fmt.Errorf("open the working copy: %w", err)
		}
		defer root.Close()
		// Through root: a symlink must not lead outside the repository
		// (GitLab reads a committed symlink as its target's name).
		data, err := root.ReadFile(filepath.FromSlash(rel))
		if err != nil {
			return nil, fmt.Errorf("read %s from the working copy: %w", rel, err)
		}
		return data, nil
	}
}

// existsFunc is rules:exists against the files of the commit, listed on
// first use (most pipelines never ask).
func (s *Server) existsFunc(p *project, sha string) func([]string) (bool, error) {
	var once sync.Once
	var files []string
	var lsErr error
	return func(globs []string) (bool, error) {
		once.Do(func() {
			out, err := s.gitBytes(p.bare, "ls-tree", "-r", "--name-only", "-z", sha)
			if err != nil {
				lsErr = fmt.Errorf("list files of %s: %w", sha, err)
			}
			files = splitZ(out)
		})
		if lsErr != nil {
			return false, lsErr
		}
		return anyMatch(globs, files)
	}
}

// changesFunc is rules:changes against the files changed between the
// push's before sha and the pipeline sha.
func (s *Server) changesFunc(p *project, before, sha string) (func([]string) (bool, error), error) {
	out, err := s.gitBytes(p.bare, "diff", "--name-only", "-z", before+".."+sha)
	if err != nil {
		return nil, fmt.Errorf("changes %s..%s: %w", before, sha, err)
	}
	files := splitZ(out)
	return func(globs []string) (bool, error) { return anyMatch(globs, files) }, nil
}

func splitZ(b []byte) []string {
	var out []string
	for _, f := range strings.Split(string(b), "\x00") {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

func anyMatch(globs, files []string) (bool, error) {
	for _, g := range globs {
		re, err := globRegexp(g)
		if err != nil {
			return false, err
		}
		for _, f := range files {
			if re.MatchString(f) {
				return true, nil
			}
		}
	}
	return false, nil
}

// globRegexp compiles a glob as Ruby's File.fnmatch? with FNM_PATHNAME,
// FNM_DOTMATCH and FNM_EXTGLOB (what GitLab uses for changes and exists):
// * and ? stay within a directory, **/ spans directories, [..] classes
// and {a,b} alternatives.
func globRegexp(glob string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	depth := 0
	for i := 0; i < len(glob); i++ {
		c := glob[i]
		switch {
		case c == '*' && strings.HasPrefix(glob[i:], "**/"):
			b.WriteString("(?:[^/]*/)*")
			i += 2
		case c == '*' && glob[i:] == "**":
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			end := strings.IndexByte(glob[i+1:], ']')
			if end < 0 {
				return nil, fmt.Errorf("glob %q: unterminated [", glob)
			}
			class := glob[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		case c == '{':
			depth++
			b.WriteString("(?:")
		case c == '}' && depth > 0:
			depth--
			b.WriteString(")")
		case c == ',' && depth > 0:
			b.WriteString("|")
		case c == '\\' && i+1 < len(glob):
			i++
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	if depth > 0 {
		return nil, fmt.Errorf("glob %q: unterminated {", glob)
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("glob %q: %w", glob, err)
	}
	return re, nil
}

// cacheKeys are the payload keys of the job's caches, as GitLab computes
// them: the literal key ("default" when empty), or for key:files the
// prefix and the SHA-1 of the files' last commits ("default" when none of
// them exists), then the "-protected"/"-non_protected" suffix of separated
// caches (GitLab's default since 15.0; unprotect: true shares the
// non_protected cache).
func (s *Server) cacheKeys(p *project, c commit, d *ciyaml.Job) ([]string, error) {
	var out []string
	for _, cc := range d.Cache {
		key := cc.Key
		if len(cc.KeyFiles) > 0 {
			var ids []string
			for _, f := range cc.KeyFiles {
				id, err := s.gitOut(p.bare, "log", "-1", "--format=%H", c.sha, "--", f)
				if err != nil {
					return nil, fmt.Errorf("%s job: cache key files: %w", d.Name, err)
				}
				if id != "" {
					ids = append(ids, id)
				}
			}
			slices.Sort(ids)
			ids = slices.Compact(ids)
			digest := "default"
			if len(ids) > 0 {
				sum := sha1.Sum([]byte(strings.Join(ids, "-")))
				digest = hex.EncodeToString(sum[:])
			}
			key = digest
			if cc.KeyPrefix != "" {
				key = cc.KeyPrefix + "-" + digest
			}
		}
		if key == "" {
			key = "default"
		}
		out = append(out, key)
	}
	return out, nil
}

// cacheSuffix is the separated-caches suffix of a cache entry.
func cacheSuffix(c commit, cc ciyaml.Cache) string {
	if c.protected && !cc.Unprotect {
		return "-protected"
	}
	return "-non_protected"
}
