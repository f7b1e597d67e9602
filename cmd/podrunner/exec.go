package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlabtest"
	"github.com/podrunner/podrunner/internal/runner"
)

type execOptions struct {
	file        string
	executor    string
	vars        []string
	concurrency int
	buildsDir   string
	keep        bool
}

func newExecCmd() *cobra.Command {
	o := &execOptions{}
	cmd := &cobra.Command{
		Use:   "exec",
		Short: "Run the .gitlab-ci.yml of the current directory locally, through the real runner",
		Long: `exec runs the pipeline of the current directory without GitLab: an in-process
GitLab-compatible coordinator (on loopback) serves a snapshot of the directory
(committed and uncommitted files) over git, builds the jobs from the CI file,
and podrunner's own runner loop runs them with the chosen executor. Tags do not
restrict which jobs run. Each job's log is printed, then a summary; the exit
code is non-zero when the pipeline failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExec(cmd, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.file, "file", "f", ".gitlab-ci.yml", "CI file, relative to the current directory")
	fs.StringVar(&o.executor, "executor", config.ExecutorShell, "executor: shell")
	fs.StringArrayVar(&o.vars, "var", nil, "pipeline variable KEY=VALUE (repeatable)")
	fs.IntVar(&o.concurrency, "concurrency", 1, "jobs run at once")
	fs.StringVar(&o.buildsDir, "builds-dir", "", "where jobs run (default: a temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the builds directory afterwards")
	return cmd
}

// errPipelineFailed makes exec exit non-zero without another message.
var errPipelineFailed = errors.New("pipeline failed")

func runExec(cmd *cobra.Command, o *execOptions) error {
	log := loggerFrom(cmd)
	if !flagGiven(cmd.Root().PersistentFlags(), "log-level") && !flagGiven(cmd.Root().PersistentFlags(), "debug") {
		// The job logs are the output; the runner's own story only on request.
		log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	out := cmd.OutOrStdout()
	if o.executor != config.ExecutorShell {
		return fmt.Errorf("--executor %q: exec supports \"shell\" in this build", o.executor)
	}
	if o.concurrency < 1 {
		return fmt.Errorf("--concurrency %d: must be at least 1", o.concurrency)
	}
	ciYAML, err := os.ReadFile(o.file)
	if err != nil {
		return fmt.Errorf("read CI file: %w", err)
	}
	var vars []gitlabtest.ProjectVariable
	for _, kv := range o.vars {
		key, val, found := strings.Cut(kv, "=")
		if !found || key == "" {
			return fmt.Errorf("--var %q: use KEY=VALUE", kv)
		}
		vars = append(vars, gitlabtest.ProjectVariable{Key: key, Value: val})
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "podrunner-exec-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(cmd.ErrOrStderr(), "builds kept in %s\n", work)
			return
		}
		os.RemoveAll(work)
	}()
	repo := filepath.Join(work, "repo")
	branch, err := snapshot(wd, repo)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", wd, err)
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	coord, err := gitlabtest.New(gitlabtest.Options{
		IgnoreTags: true, DataDir: filepath.Join(work, "coordinator"),
		TraceUpdateInterval: 3 * time.Second, Logger: log,
	})
	if err != nil {
		return err
	}
	if err := coord.Start(ctx); err != nil {
		return err
	}
	defer coord.Close()
	project := "local/" + slug(filepath.Base(wd))
	if _, err := coord.AddProject(project, repo); err != nil {
		return err
	}
	_, token := coord.CreateRunner(gitlabtest.RunnerOptions{Description: "podrunner exec", RunUntagged: true})

	builds := o.buildsDir
	if builds == "" {
		builds = filepath.Join(work, "builds")
	}
	cfg := config.New()
	cfg.Concurrent = o.concurrency
	cfg.Runners = []*config.Runner{{
		Name: "podrunner-exec", URL: coord.URL(), Token: token, Executor: o.executor,
		BuildsDir: builds, CacheDir: filepath.Join(work, "cache"),
	}}
	if err := cfg.Validate(); err != nil {
		return err
	}
	pl, err := coord.CreatePipelineWith(project, gitlabtest.PipelineOptions{Ref: branch, CIConfig: ciYAML, Variables: vars})
	if err != nil {
		return fmt.Errorf("%s: %w", o.file, err)
	}
	for _, w := range pl.Warnings {
		fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: %s\n", w)
	}

	mgrReady := make(chan *runner.Manager, 1)
	served := make(chan error, 1)
	go func() {
		served <- serve(context.Background(), log, serveOptions{
			cfg: cfg, workingDir: work, noSignals: true,
			ready: func(m *runner.Manager) { mgrReady <- m },
		})
	}()
	var m *runner.Manager
	select {
	case m = <-mgrReady:
	case err := <-served:
		return err
	}

	view, werr := followPipeline(ctx, coord, pl.ID, out)
	if werr != nil {
		m.Abort()
	} else {
		m.Stop()
	}
	if err := <-served; err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	printSummary(out, view)
	if view.Status != "success" {
		return errPipelineFailed
	}
	return nil
}

// followPipeline prints each job's log as it arrives, one job at a time
// in the order the jobs started, and returns the finished pipeline.
func followPipeline(ctx context.Context, coord *gitlabtest.Server, id int64, out io.Writer) (gitlabtest.PipelineView, error) {
	printed := map[int64]int{}
	finished := map[int64]bool{}
	current := int64(0)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		view, ok := coord.Pipeline(id)
		if !ok {
			return view, fmt.Errorf("pipeline %d vanished", id)
		}
		jobs := append([]gitlabtest.JobView(nil), view.Jobs...)
		sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].StartedAt.Before(jobs[j].StartedAt) })
		for _, j := range jobs {
			if j.StartedAt.IsZero() || finished[j.ID] {
				continue
			}
			if current != 0 && current != j.ID {
				continue
			}
			if current == 0 {
				current = j.ID
				fmt.Fprintf(out, "\n\x1b[1m━━ job %q (stage %s) ━━\x1b[0m\n", j.Name, j.Stage)
			}
			tr := coord.Trace(j.ID)
			if len(tr) > printed[j.ID] {
				out.Write(tr[printed[j.ID]:])
				printed[j.ID] = len(tr)
			}
			if isFinal(j.Status) {
				finished[j.ID] = true
				current = 0
			}
		}
		if isFinal(view.Status) && current == 0 && allPrinted(jobs, finished) {
			return view, nil
		}
		select {
		case <-ctx.Done():
			return view, fmt.Errorf("interrupted: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func allPrinted(jobs []gitlabtest.JobView, finished map[int64]bool) bool {
	for _, j := range jobs {
		if !j.StartedAt.IsZero() && !finished[j.ID] {
			return false
		}
	}
	return true
}

func isFinal(status string) bool {
	switch status {
	case "success", "failed", "canceled", "skipped", "manual":
		return true
	}
	return false
}

func printSummary(out io.Writer, v gitlabtest.PipelineView) {
	fmt.Fprintf(out, "\n\x1b[1mPipeline %s\x1b[0m\n", v.Status)
	for _, j := range v.Jobs {
		line := fmt.Sprintf("  %-10s %-30s %s", j.Stage, j.Name, j.Status)
		if j.Status == "failed" {
			line += fmt.Sprintf(" (%s", j.FailureReason)
			if j.ExitCode != 0 {
				line += fmt.Sprintf(", exit code %d", j.ExitCode)
			}
			line += ")"
		}
		if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
			line += fmt.Sprintf("  %.1fs", j.FinishedAt.Sub(j.StartedAt).Seconds())
		}
		fmt.Fprintln(out, line)
	}
}

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
	if _, err := gitOut(repo, "-c", "user.name=podrunner exec", "-c", "user.email=exec@podrunner.local",
		"commit", "-q", "--allow-empty", "-m", "podrunner exec snapshot"); err != nil {
		return "", err
	}
	return branch, nil
}

func listFiles(dir string) ([]string, error) {
	if out, err := gitOut(dir, "ls-files", "-z", "-co", "--exclude-standard"); err == nil {
		var files []string
		for _, f := range strings.Split(out, "\x00") {
			if f != "" {
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
		if d.IsDir() && d.Name() == ".git" {
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
