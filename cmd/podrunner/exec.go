package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/execview"
	"github.com/podrunner/podrunner/internal/runner"
)

// execStateDir is where exec keeps what outlives a run (caches, logs),
// under the directory it runs in; exec leaves it out of the snapshot.
const execStateDir = ".podrunner"

type execOptions struct {
	file          string
	executor      string
	jobs          []string
	vars          []string
	concurrency   int
	buildsDir     string
	keep          bool
	cacheDir      string
	logsDir       string
	output        string
	kubeconfig    string
	namespace     string
	image         string
	helperImage   string
	helperVolume  bool
	pullPolicy    string
	listenAddress string
	defaultBranch string
	protected     []string
}

func newExecCmd() *cobra.Command {
	o := &execOptions{}
	cmd := &cobra.Command{
		Use:   "exec",
		Short: "Run the .gitlab-ci.yml of the current directory locally, through the real runner",
		Long: `exec runs the pipeline of the current directory without GitLab: an in-process
GitLab-compatible coordinator serves a snapshot of the directory (committed and
uncommitted files, minus what git ignores) over git, builds the pipeline from
the CI file as GitLab would (stages, needs, rules, retry, artifacts, caches),
and podrunner's own runner loop runs the jobs with the chosen executor: on this
machine (shell) or as pods in the current kubeconfig's cluster (kubernetes).
Tags do not restrict which jobs run; manual jobs run only when named with --job.

On a terminal the jobs are shown live by stage, with the log of each failing job;
otherwise (CI, pipes) one greppable line per job state change and every log line
prefixed with its job. Job logs are saved under --logs-dir, caches kept under
--cache-dir between runs. The exit code is non-zero when the pipeline fails.`,
		Example: `  podrunner exec
  podrunner exec --job test --var GO_VERSION=1.26
  podrunner exec --executor kubernetes --namespace ci --image alpine:3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return err
			}
			return runExec(cmd, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.file, "file", "f", ".gitlab-ci.yml", "CI file, relative to the current directory")
	fs.StringVar(&o.executor, "executor", config.ExecutorShell, "executor: shell or kubernetes")
	fs.StringArrayVarP(&o.jobs, "job", "j", nil, "run only this job and the jobs it needs or takes artifacts from (repeatable); plays a manual job")
	fs.StringArrayVar(&o.vars, "var", nil, "pipeline variable KEY=VALUE (repeatable)")
	fs.StringArrayVar(&o.protected, "protected-branch", nil, "a branch to treat as protected besides the default branch (repeatable)")
	fs.StringVar(&o.defaultBranch, "default-branch", "", "the project's default branch, the only protected one (default: origin/HEAD, init.defaultBranch, main or master)")
	fs.IntVar(&o.concurrency, "concurrency", runtime.NumCPU(), "jobs run at once")
	fs.StringVar(&o.cacheDir, "cache-dir", filepath.Join(execStateDir, "cache"), "where job caches are kept between runs (kubernetes: a hostPath on the node)")
	fs.StringVar(&o.logsDir, "logs-dir", filepath.Join(execStateDir, "logs"), "where job logs are saved, one directory per run")
	fs.StringVar(&o.output, "output", "auto", "auto (live on a terminal, else plain), live, plain or quiet (plain without job logs)")
	fs.StringVar(&o.buildsDir, "builds-dir", "", "where shell jobs run (default: a temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (builds, coordinator data) afterwards")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (kubernetes; default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&o.namespace, "namespace", "", "namespace of the job pods (kubernetes; default: the kubeconfig context's, else \"default\")")
	fs.StringVar(&o.image, "image", "alpine:latest", "image of jobs that name no image: keyword (kubernetes)")
	fs.StringVar(&o.helperImage, "helper-image", "", "image holding the podrunner helper (kubernetes; default: the executor's)")
	fs.BoolVar(&o.helperVolume, "helper-image-volume", false, "mount the helper image as an image volume instead of a helper container (kubernetes 1.35+ with containerd 2.1+; helper_image_volume)")
	fs.StringVar(&o.pullPolicy, "pull-policy", "if-not-present", "image pull policy: always, if-not-present or never (kubernetes)")
	fs.StringVar(&o.listenAddress, "listen-address", "", "address the coordinator listens on, which pods must reach (kubernetes; default: "+
		"this machine's address on the route to the API server)")
	return cmd
}

// validate checks the flags before anything is started.
func (o *execOptions) validate(cmd *cobra.Command) error {
	switch o.executor {
	case config.ExecutorShell:
		for _, name := range []string{"kubeconfig", "namespace", "image", "helper-image", "helper-image-volume", "pull-policy", "listen-address"} {
			if cmd.Flags().Changed(name) {
				return fmt.Errorf("--%s is for --executor kubernetes (the shell executor runs jobs on this machine)", name)
			}
		}
	case config.ExecutorKubernetes:
		if o.buildsDir != "" {
			return errors.New("--builds-dir is for --executor shell (pods clone into their own volume)")
		}
		switch o.pullPolicy {
		case "always", "if-not-present", "never":
		default:
			return fmt.Errorf("--pull-policy %q: use always, if-not-present or never", o.pullPolicy)
		}
		if o.listenAddress != "" {
			if _, err := listenHostPort(o.listenAddress); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("--executor %q: use %q or %q", o.executor, config.ExecutorShell, config.ExecutorKubernetes)
	}
	if o.concurrency < 1 {
		return fmt.Errorf("--concurrency %d: must be at least 1", o.concurrency)
	}
	switch o.output {
	case "auto", "live", "plain", "quiet":
	default:
		return fmt.Errorf("--output %q: use auto, live, plain or quiet", o.output)
	}
	if _, err := o.variables(); err != nil {
		return err
	}
	for _, j := range o.jobs {
		if strings.TrimSpace(j) == "" {
			return errors.New("--job needs a job name")
		}
	}
	if o.cacheDir == "" {
		return errors.New("--cache-dir must not be empty")
	}
	if o.logsDir == "" {
		return errors.New("--logs-dir must not be empty")
	}
	return nil
}

func (o *execOptions) variables() ([]coordinator.ProjectVariable, error) {
	var vars []coordinator.ProjectVariable
	for _, kv := range o.vars {
		key, val, found := strings.Cut(kv, "=")
		if !found || key == "" {
			return nil, fmt.Errorf("--var %q: use KEY=VALUE", kv)
		}
		vars = append(vars, coordinator.ProjectVariable{Key: key, Value: val})
	}
	return vars, nil
}

// listenHostPort turns --listen-address (a host, or host:port) into host:port.
func listenHostPort(s string) (string, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" {
			return "", fmt.Errorf("--listen-address %q: name the address pods reach this machine at, not only a port", s)
		}
		return net.JoinHostPort(host, port), nil
	}
	if strings.Contains(s, "/") || strings.TrimSpace(s) != s || s == "" {
		return "", fmt.Errorf("--listen-address %q: use an address (10.0.0.5) or address:port", s)
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "0"), nil
}

// errPipelineFailed makes exec exit non-zero; the summary already said why.
var errPipelineFailed = errors.New("pipeline failed")

func runExec(cmd *cobra.Command, o *execOptions) error {
	log := cli.Logger(cmd)
	if !cli.FlagGiven(cmd.Root().PersistentFlags(), "log-level") && !cli.FlagGiven(cmd.Root().PersistentFlags(), "debug") {
		// The view tells of jobs (failed ones too); the runner's own story
		// only on request, or when it breaks.
		log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError}))
	}
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	vars, _ := o.variables()
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	ciYAML, err := os.ReadFile(o.file)
	if err != nil {
		return fmt.Errorf("read CI file: %w (run exec in the project directory, or name the file with --file)", err)
	}
	// Parse here first: errors then name the user's file, with line and column.
	// os.Root: an included file (or a symlink on its way) must not lead
	// outside the project.
	projectRoot, err := os.OpenRoot(wd)
	if err != nil {
		return fmt.Errorf("open project directory: %w", err)
	}
	defer projectRoot.Close()
	cfg, err := ciyaml.ParseWith(o.file, ciYAML, ciyaml.ParseOptions{ReadFile: func(name string) ([]byte, error) {
		return projectRoot.ReadFile(filepath.FromSlash(name))
	}})
	if err != nil {
		return err
	}
	if err := checkJobNames(cfg, o.file, o.jobs); err != nil {
		return err
	}

	var kt *kubeTarget
	if o.executor == config.ExecutorKubernetes {
		if kt, err = o.kubeTarget(); err != nil {
			return err
		}
	}
	cacheDir, err := filepath.Abs(o.cacheDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}

	work, err := os.MkdirTemp("", "podrunner-exec-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(errOut, "builds kept in %s\n", work)
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

	copts := coordinator.Options{
		IgnoreTags: true, DataDir: filepath.Join(work, "coordinator"),
		TraceUpdateInterval: time.Second, Logger: log,
	}
	if kt != nil {
		copts.ListenAddr = kt.listen
	}
	coord, err := coordinator.New(copts)
	if err != nil {
		return err
	}
	// Not ctx: on Ctrl-C the coordinator must still hear the runner
	// report the aborted jobs; Close ends it.
	if err := coord.Start(context.Background()); err != nil {
		if kt != nil {
			return fmt.Errorf("coordinator on %s: %w (choose an address of this machine with --listen-address)", kt.listen, err)
		}
		return err
	}
	defer coord.Close()
	project := "local/" + slug(filepath.Base(wd))
	if _, err := coord.AddProject(project, repo); err != nil {
		return err
	}
	defBranch := o.defaultBranch
	if defBranch == "" {
		defBranch = defaultBranch(wd, branch)
	}
	if err := coord.SetDefaultBranch(project, defBranch); err != nil {
		return err
	}
	for _, b := range o.protected {
		if err := coord.ProtectBranch(project, b); err != nil {
			return err
		}
	}
	_, token := coord.CreateRunner(coordinator.RunnerOptions{Description: "podrunner exec", RunUntagged: true})

	rc := &config.Runner{
		Name: "podrunner-exec", URL: coord.URL(), Token: token, Executor: o.executor,
		RequestConcurrency: o.concurrency,
	}
	switch o.executor {
	case config.ExecutorShell:
		rc.BuildsDir = o.buildsDir
		if rc.BuildsDir == "" {
			rc.BuildsDir = filepath.Join(work, "builds")
		}
		rc.CacheDir = cacheDir
	case config.ExecutorKubernetes:
		// The local cache directory reaches the pods as a hostPath: on a
		// single-node local cluster the node is this machine.
		rc.CacheDir = podCacheDir
		rc.Kubernetes = &config.Kubernetes{
			Namespace: kt.namespace, Image: o.image, HelperImage: o.helperImage, HelperImageVolume: o.helperVolume,
			PullPolicy: config.StringOrList{o.pullPolicy},
			Volumes: &config.Volumes{HostPaths: []config.HostPathVolume{{
				VolumeMount: config.VolumeMount{Name: "podrunner-exec-cache", MountPath: podCacheDir},
				HostPath:    cacheDir,
			}}},
		}
	}
	rcfg := config.New()
	rcfg.Concurrent = o.concurrency
	rcfg.Runners = []*config.Runner{rc}
	if err := rcfg.Validate(); err != nil {
		return err
	}
	pl, err := coord.CreatePipelineWith(project, coordinator.PipelineOptions{Ref: branch, CIConfig: ciYAML, Variables: vars, Jobs: o.jobs})
	if err != nil {
		// The coordinator has no warnings to give then: the first parse's
		// say why (trigger jobs skipped, so no jobs left).
		var ws []string
		for _, w := range cfg.Warnings {
			ws = append(ws, w.Error())
		}
		printWarnings(errOut, o.file, ws)
		return pipelineError(o.file, branch, err)
	}
	// The coordinator's warnings, not the first parse's: it evaluates
	// include:rules, which the first parse only warns about.
	printWarnings(errOut, o.file, pl.Warnings)
	if o.executor == config.ExecutorShell {
		for _, w := range shellIgnores(cfg, pl.Jobs) {
			fmt.Fprintf(errOut, "WARNING: %s\n", w)
		}
	}
	first, _ := coord.Pipeline(pl.ID)
	if len(first.Jobs) == 0 {
		return fmt.Errorf("%s: no jobs to run for branch %s: every job was left out by rules, only/except or --job", o.file, branch)
	}

	logs, err := newLogStore(o.logsDir)
	if err != nil {
		return err
	}
	view := o.newView(out)

	mgrReady := make(chan *runner.Manager, 1)
	served := make(chan error, 1)
	go func() {
		served <- serve(context.Background(), log, serveOptions{
			cfg: rcfg, workingDir: work, noSignals: true, checkInterval: execCheckInterval, kubeconfig: o.kubeconfig,
			ready: func(m *runner.Manager) { mgrReady <- m },
		})
	}()
	var m *runner.Manager
	select {
	case m = <-mgrReady:
	case err := <-served:
		return err
	}

	f := &follower{coord: coord, id: pl.ID, cfg: cfg, view: view, logs: logs, play: o.jobs, errOut: errOut}
	final, werr := f.run(ctx)
	if werr != nil {
		// Interrupted: running jobs are aborted (reported failed, their
		// pods deleted); a second Ctrl-C now ends exec at once.
		stop()
		fmt.Fprintln(errOut, "Interrupted: aborting the running jobs (Ctrl-C again to quit at once)")
		m.Abort()
	} else {
		m.Stop()
	}
	if err := <-served; err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		// The aborted jobs as the runner reported them, their logs saved.
		if p, _, err := f.step(); err == nil {
			final = p
		}
		view.Close()
		if len(final.Jobs) > 0 {
			execview.Summary(out, final, time.Now())
		}
		return werr
	}
	view.Close()
	execview.Summary(out, final, time.Now())
	if logs.dir != "" {
		fmt.Fprintf(out, "Job logs: %s\n", logs.dir)
	}
	switch final.Status {
	case execview.StatusSuccess:
		return nil
	case execview.StatusManual, "blocked":
		var manual []string
		for _, j := range final.Jobs {
			if j.Status == execview.StatusManual && !j.AllowFailure {
				manual = append(manual, j.Name)
			}
		}
		return fmt.Errorf("pipeline blocked by manual job %s: run it with --job %s", strings.Join(manual, ", "), firstOr(manual, "NAME"))
	}
	return errPipelineFailed
}

// execCheckInterval replaces check_interval's 3 s for exec. A request loop
// whose last_update went stale (it just took a job, or another loop did)
// gets an immediate empty answer and then sleeps check_interval before it
// long-polls again; while all loops sleep, a job that just became pending
// waits (3 s between stages of a needs/stage chain). The coordinator is in
// this process, so polling it this often costs nothing.
const execCheckInterval = 20 * time.Millisecond

// shellIgnores says, once per job of the pipeline, which image and
// services the shell executor does not use (it runs scripts on this
// machine), so a job that passes here is not taken for one that passes in
// its image.
func shellIgnores(cfg *ciyaml.Config, inPipeline map[string]int64) []string {
	var out []string
	for _, j := range cfg.Jobs {
		if _, ok := inPipeline[j.Name]; !ok {
			continue
		}
		var what []string
		if j.Image != nil && j.Image.Name != "" {
			what = append(what, "image "+j.Image.Name)
		}
		for _, sv := range j.Services {
			what = append(what, "service "+sv.Name)
		}
		if len(what) > 0 {
			out = append(out, fmt.Sprintf("job %s: %s not used by the shell executor (--executor kubernetes runs them)", j.Name, strings.Join(what, ", ")))
		}
	}
	return out
}

// printWarnings prints the CI file's warnings under the name it was given.
func printWarnings(w io.Writer, file string, warnings []string) {
	for _, m := range warnings {
		if rest, ok := strings.CutPrefix(m, ".gitlab-ci.yml:"); ok {
			m = file + ":" + rest
		}
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
}

// podCacheDir is cache_dir inside the job pods.
const podCacheDir = "/podrunner-cache"

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// newView picks the live view on a terminal, plain lines otherwise.
func (o *execOptions) newView(w io.Writer) execview.View {
	mode := o.output
	f, isFile := w.(*os.File)
	if mode == "auto" {
		mode = "plain"
		if isFile && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb" {
			mode = "live"
		}
	}
	switch mode {
	case "live":
		width := func() int { return 0 }
		if isFile {
			width = func() int {
				cols, _, err := term.GetSize(int(f.Fd()))
				if err != nil {
					return 0
				}
				return cols
			}
		}
		lv := execview.NewLive(w, width)
		lv.Color = os.Getenv("NO_COLOR") == ""
		return lv
	case "quiet":
		p := execview.NewPlain(w)
		p.Quiet = true
		return p
	default:
		return execview.NewPlain(w)
	}
}

// checkJobNames makes sure every --job names a job of the file (or the
// base name of a parallel job).
func checkJobNames(cfg *ciyaml.Config, file string, names []string) error {
	var known []string
	for _, j := range cfg.Jobs {
		known = append(known, j.Name)
		if j.ParallelOf != "" {
			known = append(known, j.ParallelOf)
		}
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			known = slices.Compact(slices.Sorted(slices.Values(known)))
			return fmt.Errorf("--job %q: %s has no such job (jobs: %s)", n, file, strings.Join(known, ", "))
		}
	}
	return nil
}

// pipelineError words the coordinator's refusal to create the pipeline.
func pipelineError(file, branch string, err error) error {
	if errors.Is(err, ciyaml.ErrFiltered) {
		return fmt.Errorf("%s: the pipeline for branch %s is filtered out by workflow:rules: nothing to run "+
			"(set the variables the rules test with --var KEY=VALUE)", file, branch)
	}
	var list ciyaml.ErrorList
	var one *ciyaml.Error
	if errors.As(err, &list) || errors.As(err, &one) {
		return fmt.Errorf("%s: %w", file, err)
	}
	return fmt.Errorf("create the pipeline from %s: %w", file, err)
}

// kubeTarget is where `exec --executor kubernetes` runs its pods and
// where the coordinator listens so that they reach it.
type kubeTarget struct {
	namespace string
	// listen is host:port for the coordinator (port 0: any).
	listen string
}
