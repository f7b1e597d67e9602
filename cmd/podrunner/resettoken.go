package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlab"
)

type resetTokenOptions struct {
	configFile string
	name, url  string
	id         int64
	all        bool
	pat        string
}

func newResetTokenCmd() *cobra.Command {
	o := &resetTokenOptions{}
	cmd := &cobra.Command{
		Use:   "reset-token",
		Short: "Get a new authentication token for runners and save it in config.toml",
		Long: `Reset the authentication token of the runner selected by --name (or --url
and --id), or of every runner with --all-runners. Without --pat the runner's
current token authenticates the reset; with --pat a personal access token
does (POST runners/<id>/reset_authentication_token).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runResetToken(cmd, o) },
	}
	addConfigFlag(cmd, &o.configFile)
	fs := cmd.Flags()
	fs.StringVarP(&o.name, "name", "n", "", "runner name")
	fs.StringVarP(&o.url, "url", "u", "", "GitLab URL of the runner")
	fs.Int64VarP(&o.id, "id", "i", 0, "runner id")
	fs.BoolVar(&o.all, "all-runners", false, "reset the token of every runner")
	fs.StringVar(&o.pat, "pat", "", "personal access token with the create_runner or manage_runner scope")
	cli.BindEnv(fs, "pat", "PRIVATE_TOKEN")
	return cmd
}

func runResetToken(cmd *cobra.Command, o *resetTokenOptions) error {
	log := cli.Logger(cmd)
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	if !o.all && o.name == "" && (o.url == "" || o.id == 0) {
		return errors.New("say which runner: --name, or --url and --id, or --all-runners")
	}
	cfg, err := loadConfig(log, o.configFile)
	if err != nil {
		return err
	}
	var picked []*config.Runner
	for _, r := range cfg.Runners {
		if r == nil {
			continue
		}
		one := &config.Config{Runners: []*config.Runner{r}}
		if o.all || (o.name != "" || o.url != "") && one.FindRunner(o.name, o.url, "") == 0 && (o.id == 0 || r.ID == o.id) {
			picked = append(picked, r)
		}
	}
	if len(picked) == 0 {
		return fmt.Errorf("no runner in %s matches the selection", o.configFile)
	}
	var failed []string
	for _, r := range picked {
		client, err := newClient(log, o.configFile, r)
		if err != nil {
			failed = append(failed, runnerLabel(r)+": "+err.Error())
			continue
		}
		var rt *gitlab.RunnerToken
		if o.pat != "" {
			if r.ID == 0 {
				client.Close()
				failed = append(failed, runnerLabel(r)+": no runner id in the config, needed with --pat")
				continue
			}
			rt, err = client.ResetTokenWithPAT(ctx, r.ID, o.pat)
		} else {
			rt, err = client.ResetToken(ctx)
		}
		client.Close()
		if err != nil {
			msg := err.Error()
			if errors.Is(err, gitlab.ErrForbidden) {
				msg = "GitLab refused (403): check the token: " + msg
			}
			fmt.Fprintf(out, "Resetting runner token... failed  runner=%s name=%q error=%q\n", config.ShortToken(r.Token), r.Name, msg)
			failed = append(failed, runnerLabel(r))
			continue
		}
		old := config.ShortToken(r.Token)
		r.Token = rt.Token
		r.TokenObtainedAt = time.Now().UTC().Truncate(time.Second)
		r.TokenExpiresAt = rt.TokenExpiresAt.UTC()
		// Save after each success so a later failure loses nothing.
		if err := cfg.Save(o.configFile); err != nil {
			return fmt.Errorf("token of runner %s was reset but the config could not be saved: %w", runnerLabel(r), err)
		}
		fmt.Fprintf(out, "Resetting runner token... succeeded  runner=%s new=%s name=%q\n", old, config.ShortToken(r.Token), r.Name)
	}
	if len(failed) > 0 {
		return fmt.Errorf("token reset failed for %d runner(s): %v", len(failed), failed)
	}
	return nil
}
