package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// runnerFlags binds the [[runners]] keys (with [runners.kubernetes] and
// [runners.cache]) to flags and GitLab Runner's environment variables.
// Shared by register and, for the lead, run-single.
type runnerFlags struct {
	r     config.Runner
	kube  config.Kubernetes
	cache config.Cache
	s3    config.CacheS3
	gcs   config.CacheGCS
	azure config.CacheAzure

	env          []string
	featureFlags []string
}

// addRunnerFlags adds the runner flags to fs.
func addRunnerFlags(fs *pflag.FlagSet) *runnerFlags {
	o := &runnerFlags{}
	fs.StringVarP(&o.r.URL, "url", "u", "", "GitLab instance URL, e.g. https://gitlab.example.com")
	cli.BindEnv(fs, "url", "CI_SERVER_URL")
	fs.StringVarP(&o.r.Token, "token", "t", "", "runner authentication token (glrt-...)")
	cli.BindEnv(fs, "token", "CI_SERVER_TOKEN")
	fs.StringVar(&o.r.TLSCAFile, "tls-ca-file", "", "CA certificates to verify GitLab")
	cli.BindEnv(fs, "tls-ca-file", "CI_SERVER_TLS_CA_FILE")
	fs.StringVar(&o.r.TLSCertFile, "tls-cert-file", "", "client certificate for GitLab")
	cli.BindEnv(fs, "tls-cert-file", "CI_SERVER_TLS_CERT_FILE")
	fs.StringVar(&o.r.TLSKeyFile, "tls-key-file", "", "client key for GitLab")
	cli.BindEnv(fs, "tls-key-file", "CI_SERVER_TLS_KEY_FILE")
	// --description is GitLab Runner's old name of --name: the root's
	// flag normalization maps it here.
	fs.StringVar(&o.r.Name, "name", "", "runner name, also --description (default: host name)")
	cli.BindEnv(fs, "name", "RUNNER_NAME")
	fs.StringVar(&o.r.Executor, "executor", "", "executor: shell or kubernetes")
	cli.BindEnv(fs, "executor", "RUNNER_EXECUTOR")
	fs.IntVar(&o.r.Limit, "limit", 0, "maximum concurrent jobs of this runner (0: no limit)")
	cli.BindEnv(fs, "limit", "RUNNER_LIMIT")
	fs.IntVar(&o.r.RequestConcurrency, "request-concurrency", 0, "maximum concurrent job requests (default 1)")
	cli.BindEnv(fs, "request-concurrency", "RUNNER_REQUEST_CONCURRENCY")
	fs.IntVar(&o.r.OutputLimit, "output-limit", 0, "maximum job log size in KiB (default 4096)")
	cli.BindEnv(fs, "output-limit", "RUNNER_OUTPUT_LIMIT")
	fs.StringVar(&o.r.BuildsDir, "builds-dir", "", "directory where builds are stored")
	cli.BindEnv(fs, "builds-dir", "RUNNER_BUILDS_DIR")
	fs.StringVar(&o.r.CacheDir, "cache-dir", "", "directory where the build cache is stored")
	cli.BindEnv(fs, "cache-dir", "RUNNER_CACHE_DIR")
	fs.StringArrayVar(&o.env, "env", nil, "KEY=VALUE added to every job (repeatable)")
	cli.BindEnv(fs, "env", "RUNNER_ENV")
	fs.StringVar(&o.r.Shell, "shell", "", "shell: bash or sh")
	cli.BindEnv(fs, "shell", "RUNNER_SHELL")
	fs.StringVar(&o.r.CloneURL, "clone-url", "", "URL jobs clone from instead of the GitLab URL")
	cli.BindEnv(fs, "clone-url", "CLONE_URL")
	fs.StringVar(&o.r.PreGetSourcesScript, "pre-get-sources-script", "", "script run before fetching sources")
	cli.BindEnv(fs, "pre-get-sources-script", "RUNNER_PRE_GET_SOURCES_SCRIPT")
	fs.StringVar(&o.r.PostGetSourcesScript, "post-get-sources-script", "", "script run after fetching sources")
	cli.BindEnv(fs, "post-get-sources-script", "RUNNER_POST_GET_SOURCES_SCRIPT")
	fs.StringVar(&o.r.PreBuildScript, "pre-build-script", "", "script run before the build")
	cli.BindEnv(fs, "pre-build-script", "RUNNER_PRE_BUILD_SCRIPT")
	fs.StringVar(&o.r.PostBuildScript, "post-build-script", "", "script run after the build")
	cli.BindEnv(fs, "post-build-script", "RUNNER_POST_BUILD_SCRIPT")
	fs.BoolVar(&o.r.DebugTraceDisabled, "debug-trace-disabled", false, "forbid CI_DEBUG_TRACE")
	cli.BindEnv(fs, "debug-trace-disabled", "RUNNER_DEBUG_TRACE_DISABLED")
	fs.StringArrayVar(&o.featureFlags, "feature-flags", nil, "FF_NAME=true|false (repeatable)")
	cli.BindEnv(fs, "feature-flags", "FEATURE_FLAGS")

	bindStructFlags(fs, "kubernetes", "KUBERNETES", &o.kube)
	bindStructFlags(fs, "cache", "CACHE", &o.cache)
	bindStructFlags(fs, "cache-s3", "CACHE_S3", &o.s3)
	bindStructFlags(fs, "cache-gcs", "CACHE_GCS", &o.gcs)
	bindStructFlags(fs, "cache-azure", "CACHE_AZURE", &o.azure)
	return o
}

// runner assembles the runner entry from the flags.
func (o *runnerFlags) runner() (*config.Runner, error) {
	r := o.r
	for _, e := range o.env {
		if err := config.CheckEnvEntry(e); err != nil {
			return nil, fmt.Errorf("--env: %w", err)
		}
	}
	r.Environment = append([]string(nil), o.env...)
	for _, ff := range o.featureFlags {
		name, val, ok := strings.Cut(ff, "=")
		b, err := parseBoolDefault(val, !ok)
		if name == "" || err != nil {
			return nil, fmt.Errorf("--feature-flags: invalid entry %q: use FF_NAME=true or FF_NAME=false", ff)
		}
		if r.FeatureFlags == nil {
			r.FeatureFlags = map[string]bool{}
		}
		r.FeatureFlags[name] = b
	}
	if !reflect.ValueOf(o.kube).IsZero() {
		k := o.kube
		r.Kubernetes = &k
	}
	c := o.cache
	if !reflect.ValueOf(o.s3).IsZero() {
		s3 := o.s3
		c.S3 = &s3
	}
	if !reflect.ValueOf(o.gcs).IsZero() {
		gcs := o.gcs
		c.GCS = &gcs
	}
	if !reflect.ValueOf(o.azure).IsZero() {
		az := o.azure
		c.Azure = &az
	}
	if !reflect.ValueOf(c).IsZero() {
		r.Cache = &c
	}
	return &r, nil
}

func parseBoolDefault(s string, empty bool) (bool, error) {
	if s == "" {
		return empty, nil
	}
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q", s)
}

// saveConfig is replaced by tests to make saving fail.
var saveConfig = (*config.Config).Save

type registerOptions struct {
	configFile        string
	nonInteractive    bool
	registrationToken string
	tagList           string
	runUntagged       bool
	locked            bool
	accessLevel       string
	maximumTimeout    int
	paused            bool
	maintenanceNote   string
	leaveRunner       bool
	templateConfig    string
	runner            *runnerFlags
}

func newRegisterCmd() *cobra.Command {
	o := &registerOptions{}
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register a runner with GitLab and add it to config.toml",
		Long: `Register a runner and append it to config.toml.

With a runner authentication token (glrt-..., created in GitLab's UI) the
token is verified (POST runners/verify). With a legacy registration token
(--registration-token) a new runner is created (POST runners). Every flag can
also be given by the environment variable shown next to it, as with GitLab
Runner. Registration is always non-interactive.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRegister(cmd, o) },
	}
	fs := cmd.Flags()
	addConfigFlag(cmd, &o.configFile)
	fs.BoolVarP(&o.nonInteractive, "non-interactive", "n", false, "never ask questions (always the case)")
	cli.BindEnv(fs, "non-interactive", "REGISTER_NON_INTERACTIVE")
	fs.StringVarP(&o.registrationToken, "registration-token", "r", "", "legacy registration token (deprecated by GitLab)")
	cli.BindEnv(fs, "registration-token", "REGISTRATION_TOKEN")
	fs.StringVar(&o.tagList, "tag-list", "", "comma-separated tags (legacy registration only)")
	cli.BindEnv(fs, "tag-list", "RUNNER_TAG_LIST")
	fs.BoolVar(&o.runUntagged, "run-untagged", false, "pick jobs without tags (legacy registration only)")
	cli.BindEnv(fs, "run-untagged", "REGISTER_RUN_UNTAGGED")
	fs.BoolVar(&o.locked, "locked", true, "lock the runner to the project (legacy registration only)")
	cli.BindEnv(fs, "locked", "REGISTER_LOCKED")
	fs.StringVar(&o.accessLevel, "access-level", "", "not_protected or ref_protected (legacy registration only)")
	cli.BindEnv(fs, "access-level", "REGISTER_ACCESS_LEVEL")
	fs.IntVar(&o.maximumTimeout, "maximum-timeout", 0, "maximum job timeout in seconds (legacy registration only)")
	cli.BindEnv(fs, "maximum-timeout", "REGISTER_MAXIMUM_TIMEOUT")
	fs.BoolVar(&o.paused, "paused", false, "register paused (legacy registration only)")
	cli.BindEnv(fs, "paused", "REGISTER_PAUSED")
	fs.StringVar(&o.maintenanceNote, "maintenance-note", "", "maintenance note (legacy registration only)")
	cli.BindEnv(fs, "maintenance-note", "REGISTER_MAINTENANCE_NOTE")
	fs.BoolVar(&o.leaveRunner, "leave-runner", false, "do not unregister the new runner when saving the config fails")
	cli.BindEnv(fs, "leave-runner", "REGISTER_LEAVE_RUNNER")
	fs.StringVar(&o.templateConfig, "template-config", "", "TOML file whose [[runners]] entry fills the keys not given by flags")
	cli.BindEnv(fs, "template-config", "TEMPLATE_CONFIG_FILE")
	o.runner = addRunnerFlags(fs)
	return cmd
}

// legacyOnly are the register flags GitLab owns for glrt- runners, with
// their defaults: an env value equal to the default is not a conflict
// (the Helm chart leaves some set).
var legacyOnly = []struct{ flag, def string }{
	{"tag-list", ""},
	{"run-untagged", "false"},
	{"locked", "true"},
	{"access-level", ""},
	{"maximum-timeout", "0"},
	{"paused", "false"},
	{"maintenance-note", ""},
}

func runRegister(cmd *cobra.Command, o *registerOptions) error {
	log := cli.Logger(cmd)
	fs := cmd.Flags()
	ctx := cmd.Context()

	r, err := o.runner.runner()
	if err != nil {
		return err
	}
	if o.templateConfig != "" {
		data, err := os.ReadFile(o.templateConfig)
		if err != nil {
			return fmt.Errorf("template config: %w", err)
		}
		tr, warnings, err := config.ParseRunnerTemplate(data, o.templateConfig)
		for _, w := range warnings {
			log.Warn("template config: " + w.String())
		}
		if err != nil {
			return fmt.Errorf("template config:\n%w", err)
		}
		if tr != nil {
			mergeMissing(reflect.ValueOf(r).Elem(), reflect.ValueOf(tr).Elem())
		}
	}

	token := r.Token
	legacy := false
	if o.registrationToken != "" {
		token = o.registrationToken
		if config.IsAuthenticationToken(token) {
			log.Warn("the registration token is a runner authentication token (glrt-); using it as --token")
		} else {
			legacy = true
		}
	}

	var missing []string
	if r.URL == "" {
		missing = append(missing, "--url ($CI_SERVER_URL)")
	}
	if token == "" {
		missing = append(missing, "--token ($CI_SERVER_TOKEN) or --registration-token ($REGISTRATION_TOKEN)")
	}
	if r.Executor == "" {
		missing = append(missing, "--executor ($RUNNER_EXECUTOR): shell or kubernetes")
	}
	if len(missing) > 0 {
		return fmt.Errorf("cannot register, missing:\n  %s", strings.Join(missing, "\n  "))
	}

	if !legacy {
		var bad []string
		for _, l := range legacyOnly {
			f := fs.Lookup(l.flag)
			if f.Changed || cli.FlagGiven(fs, l.flag) && f.Value.String() != l.def {
				bad = append(bad, cli.FlagSource(fs, l.flag))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s cannot be set when registering with a runner authentication token (glrt-): GitLab keeps these settings; change them on the runner's page in GitLab, or drop them", strings.Join(bad, ", "))
		}
	}

	url, legacyCI, err := config.NormalizeURL(r.URL)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	if legacyCI {
		log.Warn("the trailing /ci of the URL is a legacy form and was removed", "url", url)
	}
	r.URL = url
	if r.Name == "" {
		if h, err := os.Hostname(); err == nil {
			r.Name = h
		}
	}

	cfg, err := loadOrNewConfig(log, o.configFile)
	if err != nil {
		return err
	}
	// Check the entry before talking to GitLab, with a placeholder token.
	probe := *r
	probe.Token = "placeholder"
	probe.ID = 0
	if err := (&config.Config{Concurrent: 1, Runners: []*config.Runner{&probe}}).Validate(); err != nil {
		return fmt.Errorf("invalid runner settings:\n%w", err)
	}

	sysID, err := systemID(log, o.configFile)
	if err != nil {
		return err
	}
	client, err := newClient(log, o.configFile, &config.Runner{URL: r.URL, Token: token, TLSCAFile: r.TLSCAFile, TLSCertFile: r.TLSCertFile, TLSKeyFile: r.TLSKeyFile, Executor: r.Executor, Shell: r.Shell})
	if err != nil {
		return err
	}
	defer client.Close()

	var rt *gitlab.RunnerToken
	if legacy {
		rt, err = client.Register(ctx, gitlab.RegisterRequest{
			Description:     r.Name,
			MaintenanceNote: o.maintenanceNote,
			Tags:            splitTags(o.tagList),
			RunUntagged:     o.runUntagged,
			Locked:          o.locked,
			AccessLevel:     o.accessLevel,
			MaximumTimeout:  o.maximumTimeout,
			Paused:          o.paused,
		})
		if err != nil {
			if errors.Is(err, gitlab.ErrForbidden) {
				return fmt.Errorf("registration refused by GitLab (403): check the registration token: %w", err)
			}
			return fmt.Errorf("register runner: %w", err)
		}
	} else {
		rt, err = client.Verify(ctx, sysID)
		if err != nil {
			if errors.Is(err, gitlab.ErrForbidden) {
				return fmt.Errorf("runner token refused by GitLab (403): check the token (glrt-...) and that the runner still exists: %w", err)
			}
			return fmt.Errorf("verify runner: %w", err)
		}
		if rt.ID == 0 {
			return errors.New("verify runner: GitLab did not return the runner id; this GitLab is too old for runner authentication tokens, use a registration token")
		}
	}
	r.ID = rt.ID
	r.Token = rt.Token
	if r.Token == "" {
		r.Token = token
	}
	r.TokenObtainedAt = time.Now().UTC().Truncate(time.Second)
	r.TokenExpiresAt = rt.TokenExpiresAt.UTC()

	cfg.Runners = append(cfg.Runners, r)
	if err := saveConfig(cfg, o.configFile); err != nil {
		err = fmt.Errorf("save config: %w", err)
		if legacy && !o.leaveRunner {
			if uerr := unregisterToken(ctx, log, o.configFile, r, sysID); uerr != nil {
				return errors.Join(err, fmt.Errorf("the runner %d was created in GitLab but could not be removed again: %w", r.ID, uerr))
			}
			return errors.Join(err, fmt.Errorf("the runner %d was removed from GitLab again (use --leave-runner to keep it)", r.ID))
		}
		return err
	}
	log.Info("runner registered", "name", r.Name, "id", r.ID, "runner", config.ShortToken(r.Token), "executor", r.Executor, "config", o.configFile)
	fmt.Fprintf(cmd.OutOrStdout(), "Runner registered successfully. Config saved in %s (runner %q, id %d, token %s...)\n", o.configFile, r.Name, r.ID, config.ShortToken(r.Token))
	return nil
}

func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// loadOrNewConfig loads configFile, or starts a new config when it does
// not exist yet.
func loadOrNewConfig(log *slog.Logger, path string) (*config.Config, error) {
	cfg, warnings, err := config.Load(path)
	for _, w := range warnings {
		log.Warn("config: " + w.String())
	}
	if errors.Is(err, os.ErrNotExist) {
		return config.New(), nil
	}
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// unregisterToken removes a runner from GitLab (not from the config).
func unregisterToken(ctx context.Context, log *slog.Logger, configPath string, r *config.Runner, sysID string) error {
	c, err := newClient(log, configPath, r)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Unregister(ctx, sysID)
}

// bindStructFlags adds one flag per simple field of the struct pointed to
// by ptr, named --<prefix>-<toml key with "_" as "-"> and falling back to
// $<ENVPREFIX>_<TOML KEY UPPER> (or the field's `env` tag). CamelCase keys
// (the cache's) become snake_case first. Fields that are tables, lists of
// tables or other complex values are left to config.toml and templates.
func bindStructFlags(fs *pflag.FlagSet, prefix, envPrefix string, ptr any) {
	v := reflect.ValueOf(ptr).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if !flaggable(fv.Type()) {
			continue
		}
		snake := toSnake(key)
		name := prefix + "-" + strings.ReplaceAll(snake, "_", "-")
		env := envPrefix + "_" + strings.ToUpper(snake)
		if e := f.Tag.Get("env"); e != "" {
			env = e
		}
		rv := &reflectValue{v: fv}
		fl := fs.VarPF(rv, name, "", fmt.Sprintf("config key %s", key))
		if rv.isBool() {
			fl.NoOptDefVal = "true"
		}
		cli.BindEnv(fs, name, env)
	}
}

var (
	durationType = reflect.TypeFor[config.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

func flaggable(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
		if t == durationType {
			return true
		}
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	case reflect.Map:
		return t.Key().Kind() == reflect.String && (t.Elem().Kind() == reflect.String || t.Elem().Kind() == reflect.Bool || t.Elem().Kind() == reflect.Int)
	}
	return false
}

// toSnake turns CamelCase (ServerAddress, ServerSideEncryptionKeyID) into
// snake_case; snake_case keys are returned as they are.
func toSnake(s string) string {
	if strings.ContainsAny(s, "_-") || strings.ToLower(s) == s {
		return s
	}
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 && (unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// reflectValue is a pflag.Value writing into a struct field.
type reflectValue struct {
	v reflect.Value
}

func (r *reflectValue) target() reflect.Value {
	if r.v.Kind() == reflect.Pointer {
		if r.v.IsNil() {
			r.v.Set(reflect.New(r.v.Type().Elem()))
		}
		return r.v.Elem()
	}
	return r.v
}

func (r *reflectValue) isBool() bool {
	t := r.v.Type()
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Bool
}

func (r *reflectValue) Type() string {
	t := r.v.Type()
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "strings"
	case t.Kind() == reflect.Map:
		return "key:value"
	}
	return t.Kind().String()
}

func (r *reflectValue) String() string {
	if !r.v.IsValid() || r.v.Kind() == reflect.Pointer && r.v.IsNil() {
		return ""
	}
	v := r.v
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Type() == durationType {
		return v.Interface().(config.Duration).String()
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = v.Index(i).String()
		}
		return strings.Join(parts, ",")
	case reflect.Map:
		if v.Len() == 0 {
			return ""
		}
	}
	return fmt.Sprint(v.Interface())
}

// Set parses s: lists take comma-separated items (repeating the flag
// appends), maps take "key:value" (or "key=value" when there is no ":").
func (r *reflectValue) Set(s string) error {
	if r.v.Kind() == reflect.Pointer && r.v.Type().Elem() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: use e.g. 90s, 15m or 1h30m", s)
		}
		r.v.Set(reflect.ValueOf(config.DurationPtr(d)))
		return nil
	}
	t := r.target()
	switch t.Kind() {
	case reflect.String:
		t.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q: use true or false", s)
		}
		t.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, t.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		t.SetInt(n)
	case reflect.Slice:
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				t.Set(reflect.Append(t, reflect.ValueOf(item).Convert(t.Type().Elem())))
			}
		}
	case reflect.Map:
		k, val, ok := strings.Cut(s, ":")
		if !ok {
			k, val, ok = strings.Cut(s, "=")
		}
		if !ok || k == "" {
			return fmt.Errorf("invalid entry %q: use key:value", s)
		}
		if t.IsNil() {
			t.Set(reflect.MakeMap(t.Type()))
		}
		ev := reflect.New(t.Type().Elem()).Elem()
		sub := &reflectValue{v: ev}
		if err := sub.Set(val); err != nil {
			return err
		}
		t.SetMapIndex(reflect.ValueOf(k), ev)
	default:
		return fmt.Errorf("unsupported flag type %s", t.Type())
	}
	return nil
}

// mergeMissing fills the zero fields of dst from src, recursively, the way
// GitLab Runner merges --template-config: values given on the command line
// or in the environment win; maps gain the keys they lack.
func mergeMissing(dst, src reflect.Value) {
	switch dst.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		if dst.IsNil() {
			dst.Set(src)
			return
		}
		if dst.Elem().Kind() == reflect.Struct && dst.Type().Elem() != durationType {
			mergeMissing(dst.Elem(), src.Elem())
		}
	case reflect.Struct:
		if dst.Type() == timeType {
			if dst.Interface().(time.Time).IsZero() {
				dst.Set(src)
			}
			return
		}
		for i := 0; i < dst.NumField(); i++ {
			if dst.Type().Field(i).IsExported() {
				mergeMissing(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Map:
		if src.Len() == 0 {
			return
		}
		if dst.IsNil() {
			dst.Set(reflect.MakeMap(dst.Type()))
		}
		for _, k := range src.MapKeys() {
			if !dst.MapIndex(k).IsValid() {
				dst.SetMapIndex(k, src.MapIndex(k))
			}
		}
	case reflect.Slice:
		if dst.Len() == 0 && src.Len() > 0 {
			dst.Set(src)
		}
	default:
		if dst.IsZero() {
			dst.Set(src)
		}
	}
}
