package main

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// selector picks runners of a config by name, url and token.
type selector struct {
	name, url, token string
}

func (s selector) empty() bool { return s.name == "" && s.url == "" && s.token == "" }

// match returns the indices of the runners matching every non-empty field;
// all runners when the selector is empty.
func (s selector) match(cfg *config.Config) []int {
	var out []int
	for i, r := range cfg.Runners {
		if r == nil {
			continue
		}
		one := &config.Config{Runners: []*config.Runner{r}}
		if s.empty() || one.FindRunner(s.name, s.url, s.token) == 0 {
			out = append(out, i)
		}
	}
	return out
}

// adHoc is a runner given only on the command line (--url and --token)
// that is not in the config.
func (s selector) adHoc() (*config.Runner, bool) {
	if s.url == "" || s.token == "" {
		return nil, false
	}
	u, _, err := config.NormalizeURL(s.url)
	if err != nil {
		u = s.url
	}
	return &config.Runner{Name: s.name, URL: u, Token: s.token}, true
}

func (s selector) String() string {
	var parts []string
	if s.name != "" {
		parts = append(parts, fmt.Sprintf("name %q", s.name))
	}
	if s.url != "" {
		parts = append(parts, "url "+s.url)
	}
	if s.token != "" {
		parts = append(parts, "token "+config.ShortToken(s.token)+"...")
	}
	if len(parts) == 0 {
		return "any runner"
	}
	return fmt.Sprint(parts)
}

func addSelectorFlags(cmd *cobra.Command, s *selector) {
	fs := cmd.Flags()
	fs.StringVarP(&s.name, "name", "n", "", "runner name")
	fs.StringVarP(&s.url, "url", "u", "", "GitLab URL of the runner")
	cli.BindEnv(fs, "url", "CI_SERVER_URL")
	fs.StringVarP(&s.token, "token", "t", "", "runner token")
	cli.BindEnv(fs, "token", "CI_SERVER_TOKEN")
}

type verifyOptions struct {
	configFile string
	sel        selector
	delete     bool
}

func newVerifyCmd() *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that the runners of config.toml are known to GitLab",
		Long: `Check each runner of config.toml (or those selected by --name, --url,
--token) with POST runners/verify. Prints "is alive" (legacy token) or
"is valid" (glrt- token) per runner. With --delete, runners that GitLab
answers 403 for (removed) are deleted from config.toml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd, o) },
	}
	addConfigFlag(cmd, &o.configFile)
	addSelectorFlags(cmd, &o.sel)
	cmd.Flags().BoolVar(&o.delete, "delete", false, "delete runners that GitLab no longer knows from config.toml")
	return cmd
}

func runVerify(cmd *cobra.Command, o *verifyOptions) error {
	log := cli.Logger(cmd)
	ctx := cmd.Context()
	out := cmd.OutOrStdout()

	cfg, err := loadOrNewConfig(log, o.configFile)
	if err != nil {
		return err
	}
	idx := o.sel.match(cfg)
	runners := make([]*config.Runner, 0, len(idx))
	for _, i := range idx {
		runners = append(runners, cfg.Runners[i])
	}
	if len(runners) == 0 {
		if r, ok := o.sel.adHoc(); ok {
			runners = append(runners, r)
			idx = []int{-1}
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
	dirty := false
	for n, r := range runners {
		client, err := newClient(log, o.configFile, r)
		if err != nil {
			fmt.Fprintf(out, "Verifying runner... failed  runner=%s name=%q error=%q\n", config.ShortToken(r.Token), r.Name, err.Error())
			failed = append(failed, runnerLabel(r))
			continue
		}
		rt, err := client.Verify(ctx, sysID)
		client.Close()
		switch {
		case err == nil:
			state := "is alive"
			if config.IsAuthenticationToken(r.Token) {
				state = "is valid"
			}
			fmt.Fprintf(out, "Verifying runner... %s  runner=%s name=%q\n", state, config.ShortToken(r.Token), r.Name)
			if idx[n] >= 0 && !rt.TokenExpiresAt.IsZero() && !rt.TokenExpiresAt.Equal(r.TokenExpiresAt) {
				r.TokenExpiresAt = rt.TokenExpiresAt.UTC()
				dirty = true
			}
		case errors.Is(err, gitlab.ErrForbidden):
			fmt.Fprintf(out, "Verifying runner... is removed  runner=%s name=%q\n", config.ShortToken(r.Token), r.Name)
			if o.delete && idx[n] >= 0 {
				remove = append(remove, idx[n])
			} else {
				failed = append(failed, runnerLabel(r)+" (removed from GitLab; use --delete to remove it from the config)")
			}
		default:
			fmt.Fprintf(out, "Verifying runner... failed  runner=%s name=%q error=%q\n", config.ShortToken(r.Token), r.Name, err.Error())
			failed = append(failed, runnerLabel(r))
		}
	}
	if len(remove) > 0 {
		cfg.Runners = deleteIndices(cfg.Runners, remove)
		dirty = true
	}
	if dirty {
		if err := cfg.Save(o.configFile); err != nil {
			return fmt.Errorf("save config: %w", err)
		}
		if len(remove) > 0 {
			log.Info("removed runners unknown to GitLab from the config", "count", len(remove), "config", o.configFile)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("verification failed for %d runner(s): %v", len(failed), failed)
	}
	return nil
}

// deleteIndices removes the given indices from rs.
func deleteIndices(rs []*config.Runner, idx []int) []*config.Runner {
	out := rs[:0:0]
	for i, r := range rs {
		if !slices.Contains(idx, i) {
			out = append(out, r)
		}
	}
	return out
}
