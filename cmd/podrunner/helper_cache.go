package main

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
)

// addCacheCommands adds the helper commands the job scripts call to
// restore and save caches (GitLab Runner's cache-extractor and
// cache-archiver).
func addCacheCommands(root *cobra.Command) {
	root.AddCommand(newCacheExtractorCmd(), newCacheArchiverCmd())
}

// cacheTarget are the flags that say where one cache archive lives: a
// file in the local cache_dir, or an object in S3, Azure Blob Storage or
// GCS (whose credentials come from the environment, see job.CacheSecretEnv).
type cacheTarget struct {
	file     string
	object   string
	s3       job.CacheS3
	azObject string
	azure    job.CacheAzure
	gsObject string
	gcs      job.CacheGCS
	pathFlag string // "true"/"false"/"": --s3-path-style
	timeout  int    // minutes
	partSize int64
}

func (t *cacheTarget) flags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&t.file, "file", "", "archive file in the local cache directory")
	fs.StringVar(&t.object, "s3-object", "", "object name in the S3 bucket (credentials from $"+job.EnvCacheS3AccessKey+" and $"+job.EnvCacheS3SecretKey+")")
	fs.StringVar(&t.s3.ServerAddress, "s3-server-address", "", "S3 host[:port]")
	fs.StringVar(&t.s3.BucketName, "s3-bucket-name", "", "S3 bucket")
	fs.StringVar(&t.s3.BucketLocation, "s3-bucket-location", "", "S3 region")
	fs.BoolVar(&t.s3.Insecure, "s3-insecure", false, "use http instead of https")
	fs.StringVar(&t.pathFlag, "s3-path-style", "", "true: path-style bucket URLs, false: virtual-host style; empty: automatic")
	fs.StringVar(&t.s3.AuthenticationType, "s3-authentication-type", "", "access-key (keys from $"+job.EnvCacheS3AccessKey+" and $"+job.EnvCacheS3SecretKey+") or iam (the AWS credential chain of the environment)")
	fs.IntVar(&t.timeout, "timeout", job.DefaultCacheRequestTimeout, "minutes to wait for a response of the store")
	fs.Int64Var(&t.partSize, "s3-part-size", 0, "multipart upload part size in bytes (memory held per upload)")
	_ = fs.MarkHidden("s3-part-size")
	fs.StringVar(&t.azObject, "azure-object", "", "blob name in the Azure container (account key from $"+job.EnvCacheAzureAccountKey+", else the Azure credentials of the environment)")
	fs.StringVar(&t.azure.AccountName, "azure-account-name", "", "Azure storage account")
	fs.StringVar(&t.azure.ContainerName, "azure-container-name", "", "Azure blob container")
	fs.StringVar(&t.azure.StorageDomain, "azure-storage-domain", "", "Azure blob domain (default "+cache.DefaultAzureStorageDomain+"); with http(s):// an emulator's endpoint")
	fs.StringVar(&t.gsObject, "gcs-object", "", "object name in the GCS bucket (credentials from $"+job.EnvCacheGCSCredentials+", $"+job.EnvCacheGCSAccessID+"/$"+job.EnvCacheGCSPrivateKey+", else the environment's default credentials)")
	fs.StringVar(&t.gcs.BucketName, "gcs-bucket-name", "", "GCS bucket")
}

// store builds the store and the archive's name in it. The S3 credentials
// are taken from the environment and removed from it, so that nothing the
// helper starts (git, for untracked files) inherits them.
func (t *cacheTarget) store() (cache.Store, string, error) {
	given := 0
	for _, o := range []string{t.file, t.object, t.azObject, t.gsObject} {
		if o != "" {
			given++
		}
	}
	// Read once and removed, so that nothing the helper starts (git, for
	// untracked files) inherits them.
	secret := map[string]string{}
	for _, k := range job.CacheSecretEnv {
		if v, ok := os.LookupEnv(k); ok {
			secret[k] = v
			os.Unsetenv(k)
		}
	}
	switch {
	case given > 1:
		return nil, "", errors.New("give one of --file, --s3-object, --azure-object or --gcs-object")
	case t.file != "":
		abs, err := filepath.Abs(t.file)
		if err != nil {
			return nil, "", fmt.Errorf("cache file %s: %w", t.file, err)
		}
		return cache.Dir{Root: filepath.Dir(abs)}, filepath.Base(abs), nil
	case t.azObject != "":
		t.azure.AccountKey = secret[job.EnvCacheAzureAccountKey]
		s, err := cache.NewAzure(cache.AzureConfig{CacheAzure: t.azure, RequestTimeout: time.Duration(t.timeout) * time.Minute})
		if err != nil {
			return nil, "", err
		}
		return s, t.azObject, nil
	case t.gsObject != "":
		// The client's lifetime is the helper's: its connections end with it.
		s, err := cache.NewGCS(context.Background(), cache.GCSConfig{BucketName: t.gcs.BucketName,
			Credentials: []byte(secret[job.EnvCacheGCSCredentials]),
			AccessID:    secret[job.EnvCacheGCSAccessID], PrivateKey: secret[job.EnvCacheGCSPrivateKey]})
		if err != nil {
			return nil, "", err
		}
		return s, t.gsObject, nil
	case t.object != "":
		if !strings.EqualFold(t.s3.AuthenticationType, "iam") {
			t.s3.AccessKey = secret[job.EnvCacheS3AccessKey]
			t.s3.SecretKey = secret[job.EnvCacheS3SecretKey]
			t.s3.SessionToken = secret[job.EnvCacheS3SessionToken]
		}
		switch t.pathFlag {
		case "":
		case "true", "false":
			b := t.pathFlag == "true"
			t.s3.PathStyle = &b
		default:
			return nil, "", fmt.Errorf("--s3-path-style %q: use true or false", t.pathFlag)
		}
		s, err := cache.NewS3(cache.S3Config{CacheS3: t.s3, PartSize: t.partSize, RequestTimeout: time.Duration(t.timeout) * time.Minute})
		if err != nil {
			return nil, "", err
		}
		return s, t.object, nil
	}
	return nil, "", errors.New("no cache given: use --file, --s3-object, --azure-object or --gcs-object")
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
				return quietExit{code: 1}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Extracted %d files (%s, %s downloaded) %s\n", stats.Files, size(stats.Bytes), size(n), rate(n, time.Since(start)))
			return nil
		},
	}
	t.flags(cmd)
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
				return quietExit{code: job.CacheArchiverNoFiles}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Archived %d files (%s, %s uploaded) %s\n", res.Files, size(res.Bytes), size(res.Size), rate(res.Size, time.Since(start)))
			return nil
		},
	}
	t.flags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", ".", "directory the paths are relative to (the project directory)")
	fs.StringArrayVar(&spec.Paths, "path", nil, "file or glob (** for any depth) to cache; repeatable")
	fs.StringArrayVar(&spec.Exclude, "exclude", nil, "glob to leave out; repeatable")
	fs.BoolVar(&spec.Untracked, "untracked", false, "cache the files git does not track")
	fs.Int64Var(&maxSize, "max-size", 0, "do not upload an archive bigger than this many bytes (0: no limit)")
	fs.StringVar(&spec.CompressionLevel, "compression-level", "", "zip compression: fastest, fast, default, slow, slowest")
	bindEnv(fs, "compression-level", "CACHE_COMPRESSION_LEVEL")
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
