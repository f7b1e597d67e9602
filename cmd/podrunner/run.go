package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/runner"
	"github.com/podrunner/podrunner/internal/version"
)

func addRunCommands(root *cobra.Command) {
	root.AddCommand(newRunCmd(), newRunSingleCmd(), newExecCmd())
}

type runOptions struct {
	configFile    string
	listenAddress string
	workingDir    string
	user          string
	service       string
	syslog        bool
}

func newRunCmd() *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the runners of config.toml: ask GitLab for jobs and run them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMulti(cmd, o)
		},
	}
	addConfigFlag(cmd, &o.configFile)
	fs := cmd.Flags()
	fs.StringVar(&o.listenAddress, "listen-address", "", "address for /metrics and /health (overrides listen_address)")
	cli.BindEnv(fs, "listen-address", "LISTEN_ADDRESS")
	fs.StringVarP(&o.workingDir, "working-directory", "d", "", "base directory of relative builds_dir/cache_dir (default: current directory)")
	fs.StringVarP(&o.user, "user", "u", "", "accepted for GitLab Runner compatibility; podrunner runs as the invoking user")
	fs.StringVarP(&o.service, "service", "n", "", "accepted for GitLab Runner compatibility (service name)")
	fs.BoolVar(&o.syslog, "syslog", false, "accepted for GitLab Runner compatibility; logs go to stderr")
	return cmd
}

func runMulti(cmd *cobra.Command, o *runOptions) error {
	log := cli.Logger(cmd)
	cfg, err := loadConfig(log, o.configFile)
	if err != nil {
		return err
	}
	if log, err = loggerForConfig(cmd, cfg); err != nil {
		return err
	}
	if o.user != "" {
		log.Warn("--user is ignored: podrunner runs jobs as the user that started it", "user", o.user)
	}
	listen := cfg.ListenAddress
	if o.listenAddress != "" {
		listen = o.listenAddress
	}
	return serve(cmd.Context(), log, serveOptions{
		cfg: cfg, configFile: o.configFile, watch: true, listen: listen, workingDir: o.workingDir,
	})
}

type runSingleOptions struct {
	configFile      string
	runnerName      string
	maxBuilds       int
	waitTimeout     int
	shutdownTimeout int
	listenAddress   string
	workingDir      string
	flags           *runnerFlags
}

func newRunSingleCmd() *cobra.Command {
	o := &runSingleOptions{}
	cmd := &cobra.Command{
		Use:   "run-single",
		Short: "Run one runner from flags (or one [[runners]] entry of config.toml with -r)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSingle(cmd, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.configFile, "config", "c", "", "config file to take the runner from (with --runner)")
	cli.BindEnv(fs, "config", "CONFIG_FILE")
	fs.StringVarP(&o.runnerName, "runner", "r", "", "name of the [[runners]] entry of --config to run")
	cli.BindEnv(fs, "runner", "RUNNER_NAME_FROM_CONFIG")
	fs.IntVar(&o.maxBuilds, "max-builds", 0, "stop after this many jobs (0: no limit)")
	cli.BindEnv(fs, "max-builds", "MAX_BUILDS")
	fs.IntVar(&o.waitTimeout, "wait-timeout", 0, "stop when no job arrived for this many seconds (0: wait forever)")
	cli.BindEnv(fs, "wait-timeout", "WAIT_TIMEOUT")
	fs.IntVar(&o.shutdownTimeout, "shutdown-timeout", 0, "seconds to wait for aborted jobs to be reported (default 30)")
	cli.BindEnv(fs, "shutdown-timeout", "SHUTDOWN_TIMEOUT")
	fs.StringVar(&o.listenAddress, "listen-address", "", "address for /metrics and /health")
	cli.BindEnv(fs, "listen-address", "LISTEN_ADDRESS")
	fs.StringVarP(&o.workingDir, "working-directory", "d", "", "base directory of relative builds_dir/cache_dir")
	o.flags = addRunnerFlags(fs)
	return cmd
}

func runSingle(cmd *cobra.Command, o *runSingleOptions) error {
	log := cli.Logger(cmd)
	cfg := config.New()
	var r *config.Runner
	if o.runnerName != "" || (o.configFile != "" && !cmd.Flags().Changed("url")) {
		if o.configFile == "" {
			o.configFile = defaultConfigFile()
		}
		full, err := loadConfig(log, o.configFile)
		if err != nil {
			return err
		}
		for _, rc := range full.Runners {
			if o.runnerName == "" || rc.Name == o.runnerName {
				r = rc
				break
			}
		}
		if r == nil {
			return fmt.Errorf("no runner named %q in %s: check `podrunner list -c %s`", o.runnerName, o.configFile, o.configFile)
		}
	} else {
		var err error
		if r, err = o.flags.runner(); err != nil {
			return err
		}
		if r.URL == "" || r.Token == "" {
			return errors.New("run-single needs --url and --token (or $CI_SERVER_URL and $CI_SERVER_TOKEN), or --config with --runner")
		}
		if r.Executor == "" {
			r.Executor = config.ExecutorShell
		}
	}
	cfg.Runners = []*config.Runner{r}
	if o.shutdownTimeout > 0 {
		cfg.ShutdownTimeout = o.shutdownTimeout
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return serve(cmd.Context(), log, serveOptions{
		cfg: cfg, listen: o.listenAddress, workingDir: o.workingDir,
		maxBuilds: o.maxBuilds, waitTimeout: time.Duration(o.waitTimeout) * time.Second,
	})
}

// stateDir holds the records of running shell jobs (internal/jobrecord):
// next to config.toml, like .runner_system_id, because a record is only
// finished by a runner of that config with that system_id. Without a
// config file (run-single, exec) the system_id is new each time, so no
// later process could finish a record: none are kept.
func stateDir(configFile string) string {
	if configFile == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(configFile), "job-records")
}

type serveOptions struct {
	cfg         *config.Config
	configFile  string // empty: no file to watch
	watch       bool
	listen      string
	workingDir  string
	maxBuilds   int
	waitTimeout time.Duration
	// manager receives the manager once built (exec uses it).
	ready func(*runner.Manager)
	// noSignals leaves signal handling to the caller (exec).
	noSignals bool
	// checkInterval, when set, overrides check_interval below its
	// one-second granularity (exec).
	checkInterval time.Duration
	// kubeconfig is the Kubernetes executor's kubeconfig file instead of
	// $KUBECONFIG (exec --kubeconfig).
	kubeconfig string
}

// serve runs the runner manager until it stops: SIGQUIT stops taking jobs
// and waits for running ones; SIGTERM/SIGINT (before or after SIGQUIT)
// abort running jobs, each reported failed, within shutdown_timeout; any
// signal but SIGHUP after that exits at once; SIGHUP reloads config.toml.
func serve(ctx context.Context, log *slog.Logger, o serveOptions) error {
	wd := o.workingDir
	if wd == "" {
		var err error
		if wd, err = os.Getwd(); err != nil {
			return err
		}
	}
	configDir := wd
	var sysID string
	var err error
	if o.configFile != "" {
		configDir = filepath.Dir(o.configFile)
		sysID, err = systemID(log, o.configFile)
	} else {
		sysID, err = config.NewSystemID()
	}
	if err != nil {
		return err
	}
	v := version.Get()
	metrics := runner.NewMetrics(v.Version, v.Revision)
	log = slog.New(metrics.LogHandler(log.Handler()))
	execs := runner.NewExecutors()
	defer execs.Close()
	build := runner.Build{
		Executors:  execs,
		Logger:     log,
		Version:    gitlab.VersionInfo{Name: v.Name, Version: v.Version, Revision: v.Revision, Branch: v.Branch},
		SystemID:   sysID,
		ConfigDir:  configDir,
		WorkingDir: wd,
		Metrics:    metrics,
		Factories:  executorFactories(o.kubeconfig),
	}
	settings, err := runner.FromConfig(o.cfg, build)
	if err != nil {
		return configError(o.configFile, err)
	}
	if o.checkInterval > 0 {
		settings.CheckInterval = o.checkInterval
	}
	if len(settings.Runners) == 0 {
		log.Warn("No runners in the configuration: register one with `podrunner register`; waiting for config changes")
	}
	m, err := runner.New(settings, runner.Options{
		Logger: log, SystemID: sysID, Version: v.Version, Revision: v.Revision, Metrics: metrics,
		MaxBuilds: o.maxBuilds, WaitTimeout: o.waitTimeout, UntilStopped: o.watch,
		StateDir: stateDir(o.configFile),
	})
	if err != nil {
		return configError(o.configFile, err)
	}
	metrics.ConfigLoaded(true)
	if o.ready != nil {
		o.ready(m)
	}

	runCtx, stopAux := context.WithCancel(context.Background())
	defer stopAux()
	var aux []chan struct{}
	goAux := func(f func()) {
		done := make(chan struct{})
		aux = append(aux, done)
		go func() { defer close(done); f() }()
	}
	defer func() {
		stopAux()
		for _, d := range aux {
			<-d
		}
	}()

	var watcher *config.Watcher
	if o.watch && o.configFile != "" {
		watcher = config.NewWatcher(o.configFile, o.cfg, config.WatcherOptions{
			Logger: log,
			OnChange: func(cfg *config.Config, warnings []config.Warning) {
				for _, w := range warnings {
					log.Warn("config: " + w.String())
				}
				s, err := runner.FromConfig(cfg, build)
				if err == nil {
					err = m.Update(s)
				}
				if err != nil {
					metrics.ConfigLoaded(false)
					log.Error("Refusing the changed configuration; keeping the running one", "config", o.configFile, "error", err)
					return
				}
				metrics.ConfigLoaded(true)
				log.Info("Configuration loaded", "config", o.configFile, "runners", len(s.Runners), "concurrent", s.Concurrent)
			},
		})
		goAux(func() { watcher.Run(runCtx) })
	}

	if o.listen != "" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return fmt.Errorf("listen_address %s: %w", o.listen, err)
		}
		srv := &http.Server{Handler: m.Handler(nil), ReadHeaderTimeout: 10 * time.Second}
		log.Info("Metrics and health server listening", "address", ln.Addr().String())
		goAux(func() { srv.Serve(ln) })
		goAux(func() {
			<-runCtx.Done()
			srv.Close()
		})
	}

	if !o.noSignals {
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		defer signal.Stop(sigs)
		goAux(func() {
			// SIGQUIT finishes jobs; SIGTERM/SIGINT (also after SIGQUIT,
			// the usual escalation of supervisors) aborts and reports
			// them; only a signal after that exits at once.
			quitting, aborting := false, false
			for {
				select {
				case <-runCtx.Done():
					return
				case sig := <-sigs:
					switch {
					case sig == syscall.SIGHUP:
						if watcher != nil {
							log.Info("SIGHUP: reloading configuration")
							watcher.Reload()
						}
					case aborting:
						log.Error("Another signal while aborting: exiting at once; running jobs may stay running in GitLab", "signal", sig.String())
						os.Exit(1)
					case sig == syscall.SIGQUIT:
						if !quitting {
							quitting = true
							log.Info("SIGQUIT: finishing running jobs, then exiting")
							m.Stop()
						}
					default:
						aborting = true
						log.Warn("Signal received: aborting running jobs", "signal", sig.String())
						m.Abort()
					}
				}
			}
		})
	}
	log.Info("Runner started", "version", v.Version, "runners", len(settings.Runners), "concurrent", settings.Concurrent, "system_id", sysID)
	err = m.Run(ctx)
	log.Info("Runner stopped")
	return err
}

func configError(file string, err error) error {
	if file == "" {
		return err
	}
	return fmt.Errorf("%s: %w", file, err)
}
