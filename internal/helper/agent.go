package helper

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
	"github.com/podrunner/podrunner/internal/cli"
)

// newAgentCmd is the in-pod side of the Kubernetes executor (see
// docs/kubernetes-executor.md): "agent install" in the init container,
// "agent run" in the build container.
func newAgentCmd() *cobra.Command {
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
	spec     string
	stateDir string
	linger   time.Duration
}

func newAgentRunCmd() *cobra.Command {
	o := &agentRunOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the job of a spec and serve its log and result (build container)",
		Long: `Run the job described by the spec (written by the runner into the job's
Secret), keep its masked log in the state directory and serve log and result
over HTTP to the runner. Exits 0 when the job ran, whatever its result, and 1
when the agent itself failed (spec unreadable, no shell in the image).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := agent.LoadSpec(o.spec)
			if err != nil {
				return err
			}
			// SIGTERM (pod deletion) and SIGINT abort the job.
			ctx, stop := signal.NotifyContext(cli.Context(cmd), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return agent.Run(ctx, spec, agent.Options{
				StateDir: o.stateDir,
				Linger:   o.linger,
				Reap:     os.Getpid() == 1,
				Logger:   cli.Logger(cmd),
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.spec, "spec", agent.SpecFile, "the agent spec (JSON)")
	fs.StringVar(&o.stateDir, "state-dir", agent.BinDir, "directory of the job log and the stage scripts")
	fs.DurationVar(&o.linger, "linger", agent.DefaultLinger, "how long to keep serving after the job ended when the runner does not acknowledge")
	return cmd
}
