package helper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/trace"
	"github.com/podrunner/podrunner/internal/version"
)

// artifactsConn are the flags that reach GitLab. The token comes from
// $CI_JOB_TOKEN (the stage scripts set it for the command) rather than the
// command line, where other processes could read it.
type artifactsConn struct {
	url, token, caFile string
	id                 int64
}

func (c *artifactsConn) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "GitLab URL")
	cli.BindEnv(fs, "url", "CI_SERVER_URL")
	fs.StringVar(&c.token, "token", "", "job token (prefer the environment variable)")
	cli.BindEnv(fs, "token", "CI_JOB_TOKEN")
	fs.Int64Var(&c.id, "id", 0, "job ID")
	cli.BindEnv(fs, "id", "CI_JOB_ID")
	fs.StringVar(&c.caFile, "tls-ca-file", "", "CA certificates of GitLab (PEM)")
	cli.BindEnv(fs, "tls-ca-file", "CI_SERVER_TLS_CA_FILE")
}

func (c *artifactsConn) client(cmd *cobra.Command) (*gitlab.Client, error) {
	switch {
	case c.url == "":
		return nil, errors.New("no GitLab URL: give --url or set $CI_SERVER_URL")
	case c.token == "":
		return nil, errors.New("no job token: set $CI_JOB_TOKEN")
	case c.id <= 0:
		return nil, errors.New("no job ID: give --id or set $CI_JOB_ID")
	}
	v := version.Get()
	return gitlab.NewClient(gitlab.Credentials{URL: c.url, TLSCAFile: c.caFile}, gitlab.Options{
		Version: gitlab.VersionInfo{Version: v.Version, Revision: v.Revision, Branch: v.Branch},
		Logger:  cli.Logger(cmd),
	})
}

// artifactsSignalContext is cancelled on SIGTERM/SIGINT: a cancelled job
// stops its transfer instead of finishing it.
func artifactsSignalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
}

type uploadFlags struct {
	conn     artifactsConn
	dir      string
	paths    []string
	exclude  []string
	untrack  bool
	format   string
	typ      string
	name     string
	expireIn string
	level    string
}

func newArtifactsUploaderCmd() *cobra.Command {
	var f uploadFlags
	cmd := &cobra.Command{
		Use:   "artifacts-uploader",
		Short: "archive the job's artifacts and upload them to GitLab (called by job scripts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := artifactsSignalContext(cmd)
			defer stop()
			return uploadArtifacts(ctx, cmd, &f)
		},
	}
	fs := cmd.Flags()
	f.conn.flags(fs)
	fs.StringVar(&f.dir, "dir", "", "directory the paths are relative to (default: the current directory)")
	fs.StringArrayVar(&f.paths, "path", nil, "glob of files to add (repeatable; ** matches directories)")
	fs.StringArrayVar(&f.exclude, "exclude", nil, "glob of files to leave out (repeatable)")
	fs.BoolVar(&f.untrack, "untracked", false, "add the files git does not track")
	fs.StringVar(&f.format, "artifact-format", "zip", "zip, gzip or raw")
	fs.StringVar(&f.typ, "artifact-type", "archive", "archive, junit, dotenv …")
	fs.StringVar(&f.name, "name", "", "name of the archive (without extension)")
	fs.StringVar(&f.expireIn, "expire-in", "", "how long GitLab keeps the artifacts, e.g. \"1 week\"")
	fs.StringVar(&f.level, "compression-level", "", "zip compression: fastest, fast, default, slow, slowest")
	cli.BindEnv(fs, "compression-level", "ARTIFACT_COMPRESSION_LEVEL")
	return cmd
}

// writerFor returns the archive writer of a format.
func writerFor(format string) (func(ctx context.Context, w io.Writer, root string, s archive.Spec) (archive.Stats, error), error) {
	switch format {
	case "", "zip":
		return archive.WriteZip, nil
	case "gzip":
		return archive.WriteGzip, nil
	case "raw":
		return func(ctx context.Context, w io.Writer, root string, s archive.Spec) (archive.Stats, error) {
			st, _, err := archive.WriteRaw(ctx, w, root, s)
			return st, err
		}, nil
	}
	return nil, fmt.Errorf("artifact format %q is not supported by podrunner: use zip, gzip or raw", format)
}

func uploadArtifacts(ctx context.Context, cmd *cobra.Command, f *uploadFlags) error {
	out := cmd.OutOrStdout()
	dir := f.dir
	if dir == "" {
		dir = "."
	}
	write, err := writerFor(f.format)
	if err != nil {
		return err
	}
	warn := func(msg string) { trace.Warningf(out, "%s", msg) }
	spec := archive.Spec{Paths: f.paths, Exclude: f.exclude, Untracked: f.untrack, CompressionLevel: f.level, Warn: warn}
	files, err := archive.Select(ctx, dir, spec)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		// As GitLab Runner: nothing to upload is not a job failure.
		trace.Errorf(out, "No files to upload")
		return nil
	}
	fmt.Fprintf(out, "%d matching artifact files and directories\n", len(files))
	name := f.name
	if f.format == "raw" && name == "" {
		name = filepath.Base(files[0])
	}
	if f.typ == "dotenv" {
		checkDotenvFiles(out, dir, files)
	}
	c, err := f.conn.client(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	// Warnings of the selection were printed once; retries stay quiet.
	spec.Warn = nil
	var (
		mu   sync.Mutex
		last archive.Stats
	)
	open := func() (io.ReadCloser, error) {
		return newArchiveStream(ctx, func(w io.Writer) error {
			st, err := write(ctx, w, dir, spec)
			mu.Lock()
			last = st
			mu.Unlock()
			return err
		}), nil
	}
	start := time.Now()
	typ := f.typ
	if typ == "" {
		typ = "archive"
	}
	fmt.Fprintf(out, "Uploading artifacts as %q to coordinator...\n", typ)
	err = c.UploadArtifactsFrom(ctx, f.conn.id, f.conn.token, gitlab.ArtifactsOptions{
		Name: name, Format: f.format, Type: f.typ, ExpireIn: f.expireIn,
	}, open)
	if err != nil {
		if errors.Is(err, archive.ErrNoFiles) {
			trace.Errorf(out, "No files to upload (they vanished while archiving)")
			return nil
		}
		return err
	}
	mu.Lock()
	st := last
	mu.Unlock()
	d := time.Since(start)
	fmt.Fprintf(out, "Uploaded artifacts: %d entries, %s in %s (%s/s)\n", st.Files, humanBytes(st.Bytes), d.Round(time.Millisecond), humanBytes(int64(float64(st.Bytes)/max(d.Seconds(), 0.001))))
	return nil
}

// checkDotenvFiles warns about what GitLab would refuse in a dotenv
// report; the upload still happens, GitLab has the last word.
func checkDotenvFiles(out io.Writer, dir string, files []string) {
	for _, rel := range files {
		fh, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			trace.Warningf(out, "dotenv report %s: %v", rel, err)
			continue
		}
		findings, err := archive.CheckDotenv(fh)
		fh.Close()
		if err != nil {
			trace.Warningf(out, "dotenv report %s: %v", rel, err)
		}
		for _, m := range findings {
			trace.Warningf(out, "dotenv report %s: %s (GitLab will reject it)", rel, m)
		}
	}
}

// archiveStream runs an archive writer into a pipe read by the upload. Its
// Close stops the writer and waits for it.
type archiveStream struct {
	pr   *io.PipeReader
	done chan struct{}
	once sync.Once
}

func newArchiveStream(ctx context.Context, write func(io.Writer) error) *archiveStream {
	pr, pw := io.Pipe()
	s := &archiveStream{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		err := write(pw)
		if err == nil {
			err = ctx.Err()
		}
		_ = pw.CloseWithError(err)
	}()
	return s
}

func (s *archiveStream) Read(p []byte) (int, error) { return s.pr.Read(p) }

func (s *archiveStream) Close() error {
	s.once.Do(func() {
		_ = s.pr.Close()
		<-s.done
	})
	return nil
}

func newArtifactsDownloaderCmd() *cobra.Command {
	var (
		conn artifactsConn
		dir  string
		name string
	)
	cmd := &cobra.Command{
		Use:   "artifacts-downloader",
		Short: "download a job's artifacts and unpack them into the project directory (called by job scripts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := artifactsSignalContext(cmd)
			defer stop()
			return downloadArtifacts(ctx, cmd, &conn, dir, name)
		},
	}
	fs := cmd.Flags()
	conn.flags(fs)
	fs.StringVar(&dir, "dir", "", "directory to unpack into (default: the current directory)")
	fs.StringVar(&name, "name", "", "name of the job the artifacts come from (for messages)")
	return cmd
}

func downloadArtifacts(ctx context.Context, cmd *cobra.Command, conn *artifactsConn, dir, name string) error {
	out := cmd.OutOrStdout()
	if dir == "" {
		dir = "."
	}
	what := fmt.Sprintf("job %d", conn.id)
	if name != "" {
		what = fmt.Sprintf("%s (job %d)", name, conn.id)
	}
	c, err := conn.client(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	body, err := c.DownloadArtifacts(ctx, conn.id, conn.token)
	switch {
	case errors.Is(err, gitlab.ErrForbidden):
		return fmt.Errorf("artifacts of %s: access denied (the job token may have expired, or the artifacts are not accessible to this job): %w", what, err)
	case errors.Is(err, gitlab.ErrNotFound):
		return fmt.Errorf("artifacts of %s: not found (expired or erased; re-run that job): %w", what, err)
	case err != nil:
		return err
	}
	defer body.Close()
	// zip needs random access: spool to a temporary file (deleted after),
	// never to memory.
	tmp, err := os.CreateTemp("", "podrunner-artifacts-*.zip")
	if err != nil {
		return fmt.Errorf("artifacts of %s: temporary file: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// A download that never ends must not fill the disk.
	limits, err := archive.ProcessLimits()
	if err != nil {
		return fmt.Errorf("artifacts of %s: %w", what, err)
	}
	limit := limits.MaxBytes
	size, err := io.Copy(tmp, io.LimitReader(body, limit+1))
	if err != nil {
		return fmt.Errorf("artifacts of %s: download: %w", what, err)
	}
	if size > limit {
		return fmt.Errorf("artifacts of %s: download: more than %d bytes: %w", what, limit, archive.ErrTooLarge)
	}
	st, err := archive.ExtractZip(ctx, tmp, size, dir)
	if err != nil {
		if errors.Is(err, archive.ErrUnsafePath) {
			return fmt.Errorf("artifacts of %s refused: %w; the archive tries to write outside the project directory", what, err)
		}
		return fmt.Errorf("artifacts of %s: extract: %w", what, err)
	}
	d := time.Since(start)
	fmt.Fprintf(out, "Downloaded artifacts of %s: %s archive, %d entries, %s unpacked in %s\n", what, humanBytes(size), st.Files, humanBytes(st.Bytes), d.Round(time.Millisecond))
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
