// Package agentcmd is podrunner-helper's agent command, the in-pod side of
// the Kubernetes executor (docs/kubernetes-executor.md). It is a package of
// its own so that the manager, which carries the other helper commands for
// the shell executor, links neither the agent nor go-git.
package agentcmd

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/agent/server"
	"github.com/podrunner/podrunner/internal/cli"
)

// Command is "agent": "agent install" in the helper container, "agent
// run" in the build container.
func Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "In-pod agent of the Kubernetes executor (not for direct use)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAgentInstallCmd(), newAgentRunCmd())
	return cmd
}

func newAgentInstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "install DIR",
		Short: "Copy this executable to DIR/podrunner (init container)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the running executable: %w", err)
			}
			dst := filepath.Join(args[0], filepath.Base(agent.Binary))
			if err := installBinary(self, dst); err != nil {
				return err
			}
			cli.Logger(cmd).Info("agent installed", "path", dst)
			return nil
		},
	}
}

// installBinary copies src to dst (mode 0755) through a temporary file in
// dst's directory and a rename, so dst is never seen half-written.
func installBinary(src, dst string) (err error) {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".podrunner-install-*")
	if err != nil {
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

type agentRunOptions struct {
	spec        string
	tokenSHA256 string
	listen      string
	stateDir    string
	linger      time.Duration
}

func newAgentRunCmd() *cobra.Command {
	o := &agentRunOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the job of a spec and serve its log and result (build container)",
		Long: `Run a job, keep its masked log in the state directory and serve log and
result to the runner. With --token-sha256 (job pods) the agent serves HTTPS
with a fresh certificate whose SHA-256 it prints first, and waits for the
spec from the holder of that token; otherwise it reads the spec from --spec.
Exits 0 when the job ran, whatever its result, and 1 when the agent itself
failed (spec unreadable, no shell in the image).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// SIGTERM (pod deletion) and SIGINT abort the job.
			ctx, stop := signal.NotifyContext(cli.Context(cmd), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			opts := server.Options{
				StateDir: o.stateDir,
				Linger:   o.linger,
				Reap:     os.Getpid() == 1,
				Logger:   cli.Logger(cmd),
			}
			if o.tokenSHA256 != "" {
				return server.Await(ctx, server.AwaitOptions{Listen: o.listen, TokenSHA256: o.tokenSHA256, Out: cmd.OutOrStdout()}, opts)
			}
			spec, err := agent.LoadSpec(o.spec)
			if err != nil {
				return err
			}
			return server.Run(ctx, spec, opts)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.spec, "spec", agent.SpecFile, "the agent spec (JSON), when not awaited")
	fs.StringVar(&o.tokenSHA256, "token-sha256", "", "wait for the spec over HTTPS from the holder of the token with this hex SHA-256")
	fs.StringVar(&o.listen, "listen", fmt.Sprintf(":%d", agent.DefaultPort), "address of the agent API while awaiting the spec")
	fs.StringVar(&o.stateDir, "state-dir", agent.BinDir, "directory of the job log and the stage scripts")
	fs.DurationVar(&o.linger, "linger", server.DefaultLinger, "how long to keep serving after the job ended when the runner does not acknowledge")
	return cmd
}
