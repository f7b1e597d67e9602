package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
)

type unregisterOptions struct {
	configFile string
	sel        selector
	all        bool
}

func newUnregisterCmd() *cobra.Command {
	o := &unregisterOptions{}
	cmd := &cobra.Command{
		Use:   "unregister",
		Short: "Remove runners from GitLab and from config.toml",
		Long: `Unregister the runner selected by --name (or --url and --token), or every
runner with --all-runners. For glrt- tokens only this runner manager
(runner + system id) is removed from GitLab; legacy runners are deleted.
Runners GitLab removed successfully are also removed from config.toml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUnregister(cmd, o) },
	}
	addConfigFlag(cmd, &o.configFile)
	addSelectorFlags(cmd, &o.sel)
	cmd.Flags().BoolVar(&o.all, "all-runners", false, "unregister every runner of the config")
	return cmd
}

func runUnregister(cmd *cobra.Command, o *unregisterOptions) error {
	log := cli.Logger(cmd)
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	if !o.all && o.sel.name == "" && (o.sel.url == "" || o.sel.token == "") {
		return errors.New("say which runner to unregister: --name, or --url and --token, or --all-runners")
	}
	cfg, err := loadOrNewConfig(log, o.configFile)
	if err != nil {
		return err
	}
	var idx []int
	if o.all {
		idx = selector{}.match(cfg)
	} else {
		idx = o.sel.match(cfg)
	}
	runners := make([]*config.Runner, 0, len(idx))
	for _, i := range idx {
		runners = append(runners, cfg.Runners[i])
	}
	if len(runners) == 0 {
		if r, ok := o.sel.adHoc(); ok && !o.all {
			runners, idx = append(runners, r), []int{-1}
		} else if o.all {
			fmt.Fprintf(out, "No runners in %s\n", o.configFile)
			return nil
		} else {
			return fmt.Errorf("no runner in %s matches %s", o.configFile, o.sel)
		}
	}
	sysID, err := systemID(log, o.configFile)
	if err != nil {
		return err
	}
	var failed []string
	var remove []int
	for n, r := range runners {
		if err := unregisterToken(ctx, log, o.configFile, r, sysID); err != nil {
			fmt.Fprintf(out, "Unregistering runner from GitLab failed  runner=%s name=%q error=%q\n", config.ShortToken(r.Token), r.Name, err.Error())
			failed = append(failed, runnerLabel(r))
			continue
		}
		fmt.Fprintf(out, "Unregistering runner from GitLab succeeded  runner=%s name=%q\n", config.ShortToken(r.Token), r.Name)
		if idx[n] >= 0 {
			remove = append(remove, idx[n])
		}
	}
	if len(remove) > 0 {
		cfg.Runners = deleteIndices(cfg.Runners, remove)
		if err := cfg.Save(o.configFile); err != nil {
			return fmt.Errorf("save config: %w", err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("unregister failed for %d runner(s), kept in the config: %v", len(failed), failed)
	}
	return nil
}
