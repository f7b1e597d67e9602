package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/version"
)

// Flag annotations: envAnnotation lists the environment variables a flag
// falls back to; fromEnvAnnotation records which one supplied the value.
const (
	envAnnotation     = "podrunner_env"
	fromEnvAnnotation = "podrunner_from_env"
)

type loggerKey struct{}

// globalOptions are the root's persistent flags.
type globalOptions struct {
	debug     bool
	logLevel  string
	logFormat string
}

// execute runs the CLI and returns the process exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		var q quietExit
		if errors.As(err, &q) {
			return q.code
		}
		fmt.Fprintf(stderr, "ERROR: %v\n", err)
		return 1
	}
	return 0
}

// quietExit ends a command with a non-zero code after it already told the
// user why (as a warning: a missing cache is not an error).
type quietExit struct{ code int }

func (q quietExit) Error() string { return fmt.Sprintf("exit status %d", q.code) }

func newRootCmd() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "podrunner",
		Short:         "GitLab-compatible CI runner that runs jobs as Kubernetes pods",
		Version:       version.Get().Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Sub-commands must not define their own PersistentPreRun: this
			// one applies env fallbacks and sets up logging for all.
			if err := applyEnv(cmd); err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), g.level(), g.logFormat)
			if err != nil {
				return err
			}
			cmd.SetContext(context.WithValue(cmd.Context(), loggerKey{}, log))
			return nil
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	pf := root.PersistentFlags()
	pf.BoolVar(&g.debug, "debug", false, "debug logging (same as --log-level=debug)")
	bindEnv(pf, "debug", "DEBUG")
	pf.StringVarP(&g.logLevel, "log-level", "l", "", "log level: debug, info, warn, error")
	bindEnv(pf, "log-level", "LOG_LEVEL")
	pf.StringVar(&g.logFormat, "log-format", "", "log format: runner, text or json")
	bindEnv(pf, "log-format", "LOG_FORMAT")

	root.AddCommand(
		newRegisterCmd(),
		newVerifyCmd(),
		newUnregisterCmd(),
		newResetTokenCmd(),
		newListCmd(),
		newVersionCmd(),
	)
	addRunCommands(root)
	addArtifactsCommands(root)
	addCacheCommands(root)
	// GitLab Runner spells some flags with "_" (--kubernetes-bearer_token):
	// accept both spellings everywhere.
	// --description is the old spelling of register's --name.
	root.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "description" {
			return "name"
		}
		return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
	})
	return root
}

func (g *globalOptions) level() string {
	if g.debug {
		return "debug"
	}
	return g.logLevel
}

// parseLevel maps GitLab Runner's level names onto slog levels.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug", "trace":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "fatal", "panic":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
}

// newLogger builds the process logger; "runner" and "text" are slog's
// text format, "json" its JSON format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "", "runner", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q: use runner, text or json", format)
}

// loggerFrom returns the logger set up by the root command.
func loggerFrom(cmd *cobra.Command) *slog.Logger {
	if cmd != nil && cmd.Context() != nil {
		if l, ok := cmd.Context().Value(loggerKey{}).(*slog.Logger); ok {
			return l
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// loggerForConfig returns a logger honouring config.toml's log_level and
// log_format unless --log-level/--debug/--log-format (or their env) were
// given: the command line wins, as in GitLab Runner. For `run`.
func loggerForConfig(cmd *cobra.Command, cfg *config.Config) (*slog.Logger, error) {
	level, format := cfg.LogLevel, cfg.LogFormat
	fs := cmd.Flags()
	if flagGiven(fs, "log-level") {
		level, _ = fs.GetString("log-level")
	}
	if d, _ := fs.GetBool("debug"); d {
		level = "debug"
	}
	if flagGiven(fs, "log-format") {
		format, _ = fs.GetString("log-format")
	}
	return newLogger(cmd.ErrOrStderr(), level, format)
}

// bindEnv makes the flag fall back to the first non-empty environment
// variable of envs when it is not given on the command line.
func bindEnv(fs *pflag.FlagSet, name string, envs ...string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("bindEnv: no flag " + name) // programming error
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envAnnotation] = append(f.Annotations[envAnnotation], envs...)
	f.Usage += " [$" + strings.Join(envs, ", $") + "]"
}

// applyEnv sets every flag not given on the command line from its
// environment variable. Empty variables count as unset (the Helm chart
// blanks some).
func applyEnv(cmd *cobra.Command) error {
	var errs []error
	visit := func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		for _, env := range f.Annotations[envAnnotation] {
			val, ok := os.LookupEnv(env)
			if !ok || val == "" {
				continue
			}
			if err := f.Value.Set(val); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s (for --%s): %w", env, f.Name, err))
				return
			}
			f.Annotations[fromEnvAnnotation] = []string{env}
			return
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return errors.Join(errs...)
}

// flagGiven reports whether a flag was set on the command line or from
// its environment variable.
func flagGiven(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && (f.Changed || len(f.Annotations[fromEnvAnnotation]) > 0)
}

// flagSource names where a flag's value came from, for messages.
func flagSource(fs *pflag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return "--" + name
	}
	if !f.Changed && len(f.Annotations[fromEnvAnnotation]) > 0 {
		return "$" + f.Annotations[fromEnvAnnotation][0]
	}
	return "--" + name
}

// defaultConfigFile is GitLab Runner's default location.
func defaultConfigFile() string {
	if os.Geteuid() == 0 {
		return "/etc/gitlab-runner/config.toml"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".gitlab-runner", "config.toml")
	}
	return "config.toml"
}

// addConfigFlag adds -c/--config ($CONFIG_FILE).
func addConfigFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVarP(dst, "config", "c", defaultConfigFile(), "config file")
	bindEnv(cmd.Flags(), "config", "CONFIG_FILE")
}

// loadConfig loads path and logs its warnings. Errors carry file:line.
func loadConfig(log *slog.Logger, path string) (*config.Config, error) {
	cfg, warnings, err := config.Load(path)
	for _, w := range warnings {
		log.Warn("config: " + w.String())
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s does not exist: register a runner first (podrunner register) or pass -c", path)
		}
		return nil, err
	}
	return cfg, nil
}

// newClient builds the GitLab client for one runner of the config at
// configPath (its certs/ directory is searched for TLS files).
func newClient(log *slog.Logger, configPath string, r *config.Runner) (*gitlab.Client, error) {
	v := version.Get()
	c, err := gitlab.NewClient(gitlab.Credentials{
		URL:         r.URL,
		Token:       r.Token,
		TLSCAFile:   r.TLSCAFile,
		TLSCertFile: r.TLSCertFile,
		TLSKeyFile:  r.TLSKeyFile,
	}, gitlab.Options{
		Version:  gitlab.VersionInfo{Name: v.Name, Version: v.Version, Revision: v.Revision, Branch: v.Branch},
		Executor: r.Executor,
		Shell:    r.Shell,
		CertDir:  filepath.Join(filepath.Dir(configPath), "certs"),
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("runner %s: %w", runnerLabel(r), err)
	}
	return c, nil
}

// systemID reads or creates the system id next to the config file; a
// failure to persist it is only a warning.
func systemID(log *slog.Logger, configPath string) (string, error) {
	id, err := config.SystemID(filepath.Dir(configPath))
	if err != nil {
		if id == "" {
			return "", err
		}
		log.Warn("system id not saved; a new one will be made next time", "error", err)
	}
	return id, nil
}

// runnerLabel names a runner in messages without its token.
func runnerLabel(r *config.Runner) string {
	if r.Name != "" {
		return fmt.Sprintf("%q (%s)", r.Name, config.ShortToken(r.Token))
	}
	return config.ShortToken(r.Token)
}
