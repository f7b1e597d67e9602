package archive

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// selectRegular returns the regular files s selects (reports are files;
// directories and symlinks are skipped with a warning).
func selectRegular(ctx context.Context, root string, s Spec) ([]string, error) {
	files, err := selectFiles(ctx, root, s)
	if err != nil {
		return nil, err
	}
	out := files[:0]
	for _, rel := range files {
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			return nil, fmt.Errorf("report %s: %w", rel, err)
		}
		if !fi.Mode().IsRegular() {
			if !fi.IsDir() {
				s.warn(fmt.Sprintf("%s: not a regular file; not part of the report", rel))
			}
			continue
		}
		out = append(out, rel)
	}
	if len(out) == 0 {
		return nil, ErrNoFiles
	}
	return out, nil
}

// WriteGzip streams the selected regular files as concatenated gzip
// members, each named after its path: GitLab's "gzip" artifact format
// for reports (junit, dotenv …).
func WriteGzip(ctx context.Context, w io.Writer, root string, s Spec) (Stats, error) {
	files, err := selectRegular(ctx, root, s)
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	for _, rel := range files {
		if err := writeGzipMember(ctx, w, root, rel, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

func writeGzipMember(ctx context.Context, w io.Writer, root, rel string, st *Stats) error {
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	gz := gzip.NewWriter(w)
	gz.Name = rel
	gz.ModTime = fi.ModTime()
	n, err := io.Copy(gz, ctxReader{ctx, f})
	st.Bytes += n
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	st.Files++
	return nil
}

// ErrRawMultiple is returned by WriteRaw when the spec selects more than
// one file: the raw format holds exactly one.
var ErrRawMultiple = errors.New("only one file can be sent as raw")

// WriteRaw streams the single regular file s selects, unchanged (GitLab's
// "raw" artifact format), and returns its path relative to root.
func WriteRaw(ctx context.Context, w io.Writer, root string, s Spec) (Stats, string, error) {
	files, err := selectRegular(ctx, root, s)
	if err != nil {
		return Stats{}, "", err
	}
	if len(files) > 1 {
		return Stats{}, "", fmt.Errorf("%w (selected %d: %s …)", ErrRawMultiple, len(files), strings.Join(files[:2], ", "))
	}
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(files[0])))
	if err != nil {
		return Stats{}, "", fmt.Errorf("archive %s: %w", files[0], err)
	}
	defer f.Close()
	n, err := io.Copy(w, ctxReader{ctx, f})
	if err != nil {
		return Stats{Bytes: n}, files[0], fmt.Errorf("archive %s: %w", files[0], err)
	}
	return Stats{Files: 1, Bytes: n}, files[0], nil
}

// Limits GitLab applies to dotenv reports by default (application limits
// dotenv_size and dotenv_variables).
const (
	DotenvMaxSize      = 5 * 1024
	DotenvMaxVariables = 20
)

var dotenvKey = regexp.MustCompile(`^[a-zA-Z0-9_]+$`)

// CheckDotenv reads a dotenv report as GitLab parses it (one KEY=VALUE per
// line, key of ASCII letters, digits and underscores, no empty lines, no
// comments, no multi-line values) and returns a finding per line GitLab
// would reject, plus the size and count limits. Findings name the line
// but never quote values (they may be secrets).
func CheckDotenv(r io.Reader) ([]string, error) {
	var findings []string
	br := bufio.NewReader(io.LimitReader(r, 1<<20))
	size, vars, line := 0, 0, 0
	seen := map[string]bool{}
	for {
		raw, err := br.ReadString('\n')
		if raw == "" && err != nil {
			if err == io.EOF {
				break
			}
			return findings, fmt.Errorf("read dotenv report: %w", err)
		}
		line++
		size += len(raw)
		text := strings.TrimRight(raw, "\r\n")
		key, _, ok := strings.Cut(text, "=")
		key = strings.TrimSpace(key)
		switch {
		case strings.TrimSpace(text) == "":
			findings = append(findings, fmt.Sprintf("line %d: empty lines are not supported in dotenv reports", line))
		case strings.HasPrefix(strings.TrimSpace(text), "#"):
			findings = append(findings, fmt.Sprintf("line %d: comments are not supported in dotenv reports", line))
		case !ok:
			findings = append(findings, fmt.Sprintf("line %d: not KEY=VALUE", line))
		case !dotenvKey.MatchString(key):
			findings = append(findings, fmt.Sprintf("line %d: key %q: only ASCII letters, digits and _ are allowed", line, key))
		case len(key) > 255:
			findings = append(findings, fmt.Sprintf("line %d: key longer than 255 characters", line))
		default:
			if !seen[key] {
				seen[key] = true
				vars++
			}
		}
		if err == io.EOF {
			break
		}
	}
	if size > DotenvMaxSize {
		findings = append(findings, fmt.Sprintf("the report is %d bytes; GitLab accepts at most %d by default (dotenv_size limit)", size, DotenvMaxSize))
	}
	if vars > DotenvMaxVariables {
		findings = append(findings, fmt.Sprintf("the report has %d variables; GitLab accepts at most %d by default (dotenv_variables limit)", vars, DotenvMaxVariables))
	}
	return findings, nil
}
