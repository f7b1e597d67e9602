package helper

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/cache"
	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
)

// cacheTarget are the flags that say where one cache archive lives: a
// file in the local cache_dir, or a URL the runner pre-signed for this
// one download or upload (GitLab Runner's --url and --header): the helper
// holds no store credentials and links no cloud SDK.
type cacheTarget struct {
	file    string
	url     string
	headers []string // "Name: value", sent with the upload
	timeout int      // minutes
}

func (t *cacheTarget) flags(cmd *cobra.Command, upload bool) {
	fs := cmd.Flags()
	fs.StringVar(&t.file, "file", "", "archive file in the local cache directory")
	fs.StringVar(&t.url, "url", "", "pre-signed URL of the archive in the remote cache store")
	if upload {
		fs.StringArrayVar(&t.headers, "header", nil, "HTTP header \"Name: value\" to send with the upload; repeatable")
	}
	fs.IntVar(&t.timeout, "timeout", job.DefaultCacheRequestTimeout, "minutes to wait for a response of the store")
}

// store builds the store and the archive's name in it.
func (t *cacheTarget) store() (cache.Store, string, error) {
	switch {
	case t.file != "" && t.url != "":
		return nil, "", errors.New("give one of --file or --url")
	case t.file != "":
		abs, err := filepath.Abs(t.file)
		if err != nil {
			return nil, "", fmt.Errorf("cache file %s: %w", t.file, err)
		}
		return cache.Dir{Root: filepath.Dir(abs)}, filepath.Base(abs), nil
	case t.url != "":
		u, err := url.Parse(t.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL is a credential: not repeated.
			return nil, "", errors.New("--url is not an http(s) URL")
		}
		h := http.Header{}
		for _, kv := range t.headers {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, "", fmt.Errorf("--header %q: use \"Name: value\"", kv)
			}
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		return cache.NewHTTP(time.Duration(t.timeout)*time.Minute, h), t.url, nil
	}
	return nil, "", errors.New("no cache given: use --file or --url")
}

// helperMemoryLimit is the Go heap's soft limit in the cache helpers
// (unless GOMEMLIMIT is set): the live heap is one upload part and a few
// buffers, and without a limit the collector lets garbage grow to twice
// that, which shows in the job pod's memory.
const helperMemoryLimit = 24 << 20

func limitMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(helperMemoryLimit)
	}
}

// signalContext is cancelled on SIGTERM/SIGINT, so that a cancelled job
// aborts an upload instead of leaving half of it behind.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
}

func newCacheExtractorCmd() *cobra.Command {
	var t cacheTarget
	var dir string
	cmd := &cobra.Command{
		Use:   "cache-extractor",
		Short: "restore a job cache into the project directory (called by job scripts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			limitMemory()
			ctx, stop := signalContext(cmd)
			defer stop()
			st, name, err := t.store()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Downloading cache from %s\n", st.Describe(name))
			start := time.Now()
			stats, n, err := cache.Extract(ctx, st, name, dir)
			if errors.Is(err, cache.ErrNotFound) {
				// A warning, as GitLab Runner's; non-zero, so that the
				// script tries the next key.
				trace.Warningf(out, "no cache at %s", st.Describe(name))
				return cli.QuietExit{Code: 1}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Extracted %d files (%s, %s downloaded) %s\n", stats.Files, size(stats.Bytes), size(n), rate(n, time.Since(start)))
			return nil
		},
	}
	t.flags(cmd, false)
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to extract into (the project directory)")
	return cmd
}

func newCacheArchiverCmd() *cobra.Command {
	var (
		t       cacheTarget
		dir     string
		spec    archive.Spec
		maxSize int64
	)
	cmd := &cobra.Command{
		Use:   "cache-archiver",
		Short: "save files of the project directory as a job cache (called by job scripts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			limitMemory()
			ctx, stop := signalContext(cmd)
			defer stop()
			if len(spec.Paths) == 0 && !spec.Untracked {
				return errors.New("nothing to archive: give --path or --untracked")
			}
			st, name, err := t.store()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Uploading cache to %s\n", st.Describe(name))
			start := time.Now()
			spec.Warn = func(msg string) { trace.Warningf(out, "%s", msg) }
			res, err := cache.Archive(ctx, st, name, dir, spec, maxSize)
			if errors.Is(err, archive.ErrNoFiles) {
				// The paths' own warnings (with each pattern) said why.
				fmt.Fprintln(out, "No files to cache: the stored cache (if any) is kept")
				return cli.QuietExit{Code: job.CacheArchiverNoFiles}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Archived %d files (%s, %s uploaded) %s\n", res.Files, size(res.Bytes), size(res.Size), rate(res.Size, time.Since(start)))
			return nil
		},
	}
	t.flags(cmd, true)
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", ".", "directory the paths are relative to (the project directory)")
	fs.StringArrayVar(&spec.Paths, "path", nil, "file or glob (** for any depth) to cache; repeatable")
	fs.StringArrayVar(&spec.Exclude, "exclude", nil, "glob to leave out; repeatable")
	fs.BoolVar(&spec.Untracked, "untracked", false, "cache the files git does not track")
	fs.Int64Var(&maxSize, "max-size", 0, "do not upload an archive bigger than this many bytes (0: no limit)")
	// GitLab Runner's name of the same flag.
	fs.Int64Var(&maxSize, "max-uploaded-archive-size", 0, "same as --max-size")
	fs.StringVar(&spec.CompressionLevel, "compression-level", "", "zip compression: fastest, fast, default, slow, slowest")
	cli.BindEnv(fs, "compression-level", "CACHE_COMPRESSION_LEVEL")
	return cmd
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf("in %.1fs (%.1f MB/s)", d.Seconds(), float64(n)/1e6/d.Seconds())
}
