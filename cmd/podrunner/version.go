package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/version"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), version.Get().String())
			return err
		},
	}
}
