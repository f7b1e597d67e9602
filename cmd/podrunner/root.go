package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/helper"
	"github.com/podrunner/podrunner/internal/version"
)

// execute runs the CLI and returns the process exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	return cli.Execute(newRootCmd(), args, stdout, stderr)
}

func newRootCmd() *cobra.Command {
	root := cli.NewRoot("podrunner", "GitLab-compatible CI runner that runs jobs as Kubernetes pods", version.Get().Version)
	root.AddCommand(
		newRegisterCmd(),
		newVerifyCmd(),
		newUnregisterCmd(),
		newResetTokenCmd(),
		newListCmd(),
		newVersionCmd(),
	)
	addRunCommands(root)
	// The shell executor's scripts call the helper commands of this binary.
	root.AddCommand(helper.Commands()...)
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

// loggerForConfig returns a logger honouring config.toml's log_level and
// log_format unless --log-level/--debug/--log-format (or their env) were
// given: the command line wins, as in GitLab Runner. For `run`.
func loggerForConfig(cmd *cobra.Command, cfg *config.Config) (*slog.Logger, error) {
	level, format := cfg.LogLevel, cfg.LogFormat
	fs := cmd.Flags()
	if cli.FlagGiven(fs, "log-level") {
		level, _ = fs.GetString("log-level")
	}
	if d, _ := fs.GetBool("debug"); d {
		level = "debug"
	}
	if cli.FlagGiven(fs, "log-format") {
		format, _ = fs.GetString("log-format")
	}
	return cli.NewLogger(cmd.ErrOrStderr(), level, format)
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
	cli.BindEnv(cmd.Flags(), "config", "CONFIG_FILE")
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
