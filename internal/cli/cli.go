// Package cli is the command-line plumbing shared by podrunner's binaries
// (the manager and the in-pod helper): the root command with GitLab
// Runner's logging flags, flags that fall back to environment variables,
// and the process exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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

// Execute runs root with args and returns the process exit code.
func Execute(root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		var q QuietExit
		if errors.As(err, &q) {
			return q.Code
		}
		fmt.Fprintf(stderr, "ERROR: %v\n", err)
		return 1
	}
	return 0
}

// QuietExit ends a command with a non-zero code after it already told the
// user why (as a warning: a missing cache is not an error).
type QuietExit struct{ Code int }

func (q QuietExit) Error() string { return fmt.Sprintf("exit status %d", q.Code) }

// NewRoot is a root command with GitLab Runner's global flags (--debug,
// --log-level, --log-format and their variables). Its PersistentPreRunE
// applies the environment fallbacks of every flag and sets up the logger
// (Logger); sub-commands must not define their own.
func NewRoot(use, short, version string) *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           use,
		Short:         short,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := ApplyEnv(cmd); err != nil {
				return err
			}
			log, err := NewLogger(cmd.ErrOrStderr(), g.level(), g.logFormat)
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
	BindEnv(pf, "debug", "DEBUG")
	pf.StringVarP(&g.logLevel, "log-level", "l", "", "log level: debug, info, warn, error")
	BindEnv(pf, "log-level", "LOG_LEVEL")
	pf.StringVar(&g.logFormat, "log-format", "", "log format: runner, text or json")
	BindEnv(pf, "log-format", "LOG_FORMAT")
	return root
}

func (g *globalOptions) level() string {
	if g.debug {
		return "debug"
	}
	return g.logLevel
}

// ParseLevel maps GitLab Runner's level names onto slog levels.
func ParseLevel(s string) (slog.Level, error) {
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

// NewLogger builds the process logger; "runner" and "text" are slog's
// text format, "json" its JSON format.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
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

// Logger returns the logger set up by the root command.
func Logger(cmd *cobra.Command) *slog.Logger {
	if cmd != nil && cmd.Context() != nil {
		if l, ok := cmd.Context().Value(loggerKey{}).(*slog.Logger); ok {
			return l
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// Context is cmd's context, or Background for a command run without
// ExecuteContext (tests).
func Context(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// BindEnv makes the flag fall back to the first non-empty environment
// variable of envs when it is not given on the command line.
func BindEnv(fs *pflag.FlagSet, name string, envs ...string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("BindEnv: no flag " + name) // programming error
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envAnnotation] = append(f.Annotations[envAnnotation], envs...)
	f.Usage += " [$" + strings.Join(envs, ", $") + "]"
}

// ApplyEnv sets every flag not given on the command line from its
// environment variable. Empty variables count as unset (the Helm chart
// blanks some).
func ApplyEnv(cmd *cobra.Command) error {
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

// FlagGiven reports whether a flag was set on the command line or from
// its environment variable.
func FlagGiven(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && (f.Changed || len(f.Annotations[fromEnvAnnotation]) > 0)
}

// FlagSource names where a flag's value came from, for messages.
func FlagSource(fs *pflag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return "--" + name
	}
	if !f.Changed && len(f.Annotations[fromEnvAnnotation]) > 0 {
		return "$" + f.Annotations[fromEnvAnnotation][0]
	}
	return "--" + name
}
