package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
)

func newListCmd() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the runners of config.toml (tokens shortened)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cli.Logger(cmd), configFile)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Listing configured runners  ConfigFile=%s\n", configFile)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tEXECUTOR\tURL\tTOKEN")
			for _, r := range cfg.Runners {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s...\n", r.Name, r.Executor, r.URL, config.ShortToken(r.Token))
			}
			return tw.Flush()
		},
	}
	addConfigFlag(cmd, &configFile)
	return cmd
}
