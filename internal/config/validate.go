package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// NormalizeURL strips a trailing "/" and then a legacy trailing "/ci"
// (as GitLab Runner does) and checks that the URL is http(s) with a host.
// legacyCI reports whether "/ci" was removed.
func NormalizeURL(raw string) (normalized string, legacyCI bool, err error) {
	s := strings.TrimSpace(raw)
	s = strings.TrimRight(s, "/")
	if strings.HasSuffix(s, "/ci") {
		s = strings.TrimSuffix(s, "/ci")
		legacyCI = true
	}
	u, perr := url.Parse(s)
	if perr != nil {
		if ue, ok := perr.(*url.Error); ok {
			perr = ue.Err // url.Error repeats the whole URL
		}
		return "", false, fmt.Errorf("invalid URL %q: %v", clip(raw), perr)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", false, fmt.Errorf("invalid URL %q: the scheme must be http or https (e.g. https://gitlab.example.com)", clip(raw))
	}
	if u.Host == "" {
		return "", false, fmt.Errorf("invalid URL %q: no host (e.g. https://gitlab.example.com)", clip(raw))
	}
	return s, legacyCI, nil
}

func (p *parser) normalize(c *Config) {
	if c.CheckInterval <= 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	for i, r := range c.Runners {
		if r == nil {
			continue
		}
		key := indexKey("runners", i)
		if r.URL != "" {
			if u, legacy, err := NormalizeURL(r.URL); err == nil {
				if legacy {
					p.warn(joinKey(key, "url"), 0, "the trailing /ci is a legacy form and was removed; write %q", u)
				}
				r.URL = u
			}
		}
		r.applyDefaults()
	}
}

// applyDefaults fills the per-runner defaults that GitLab Runner applies
// when a key is absent or zero.
func (r *Runner) applyDefaults() {
	if r.RequestConcurrency == 0 {
		r.RequestConcurrency = DefaultRequestConcurrency
	}
	if r.OutputLimit == 0 {
		r.OutputLimit = DefaultOutputLimit
	}
}

var (
	logLevels  = []string{"panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"}
	logFormats = []string{"runner", "text", "json"}
	shells     = []string{"bash", "sh", "pwsh", "powershell"}
	envKeyRe   = regexp.MustCompile(`^[^=\s]+$`)
)

func oneOf(v string, allowed []string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// Validate checks c without file positions (for a config built in code,
// e.g. by register). Parse runs the same checks with positions.
func (c *Config) Validate() error {
	p := &parser{idx: nil}
	return p.validate(c)
}

func (p *parser) validate(c *Config) error {
	if c.Concurrent < 1 {
		p.fail("concurrent", "must be at least 1, got %d", c.Concurrent)
	}
	if c.ShutdownTimeout < 0 {
		p.fail("shutdown_timeout", "must not be negative, got %d", c.ShutdownTimeout)
	}
	if c.LogLevel != "" && !oneOf(strings.ToLower(c.LogLevel), logLevels) {
		p.fail("log_level", "unknown log level %q: use one of %s", c.LogLevel, quoteList(logLevels))
	}
	if c.LogFormat != "" && !oneOf(c.LogFormat, logFormats) {
		p.fail("log_format", "unknown log format %q: use one of %s", c.LogFormat, quoteList(logFormats))
	}
	if c.ListenAddress != "" {
		if err := checkListenAddress(c.ListenAddress); err != nil {
			p.fail("listen_address", "%v", err)
		}
	}
	if c.ConnectionMaxAge != nil && c.ConnectionMaxAge.Duration < 0 {
		p.fail("connection_max_age", "must not be negative")
	}
	for i, r := range c.Runners {
		key := indexKey("runners", i)
		if r == nil {
			p.fail(key, "empty runner entry")
			continue
		}
		p.validateRunner(key, r)
	}
	// Generic checks for typed values anywhere in the tree.
	walk(reflect.ValueOf(c).Elem(), "", func(path string, v reflect.Value) {
		switch x := v.Interface().(type) {
		case Quantity:
			if x != "" {
				if !quantityPattern.MatchString(string(x)) {
					p.fail(path, "invalid quantity %q: use a Kubernetes quantity such as \"500m\", \"0.5\", \"512Mi\" or \"2Gi\"", string(x))
				}
			}
		case Pattern:
			if x != "" {
				if _, err := regexp.Compile(string(x)); err != nil {
					p.fail(path, "invalid regular expression %q: %s", string(x), strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				}
			}
		}
	})
	sort.SliceStable(p.errs, func(i, j int) bool {
		a, b := p.errs[i].(*Error), p.errs[j].(*Error)
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Key < b.Key
	})
	return errors.Join(p.errs...)
}

// MaxWarmPods caps [runners.kubernetes] warm_pods.
const MaxWarmPods = 100

// quantityPattern is the grammar of a Kubernetes quantity (apimachinery's
// resource.Quantity): the Kubernetes executor parses the value itself;
// config only checks its form, so that a manager without that executor
// links no Kubernetes code.
var quantityPattern = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$`)

func checkListenAddress(a string) error {
	if _, _, err := net.SplitHostPort(a); err != nil {
		if _, _, err2 := net.SplitHostPort(a + ":" + DefaultMetricsPort); err2 != nil {
			return fmt.Errorf("invalid address %q: use host:port, e.g. \":9252\"", clip(a))
		}
	}
	return nil
}

func (p *parser) validateRunner(key string, r *Runner) {
	if r.URL == "" {
		if !p.template {
			p.fail(joinKey(key, "url"), "missing url: set it to your GitLab instance, e.g. \"https://gitlab.example.com\"")
		}
	} else if _, _, err := NormalizeURL(r.URL); err != nil {
		p.fail(joinKey(key, "url"), "%v", err)
	}
	if r.Token == "" && !p.template {
		p.fail(joinKey(key, "token"), "missing token: run \"podrunner register\" or copy the runner authentication token (glrt-...)")
	}
	switch r.Executor {
	case ExecutorShell, ExecutorKubernetes:
	case "":
		if p.template {
			break
		}
		p.fail(joinKey(key, "executor"), "missing executor: use %q or %q", ExecutorShell, ExecutorKubernetes)
	default:
		p.fail(joinKey(key, "executor"), "unknown executor %q: use %q or %q", r.Executor, ExecutorShell, ExecutorKubernetes)
	}
	nonNegative := func(name string, v int) {
		if v < 0 {
			p.fail(joinKey(key, name), "must not be negative, got %d", v)
		}
	}
	nonNegative("limit", r.Limit)
	nonNegative("request_concurrency", r.RequestConcurrency)
	nonNegative("output_limit", r.OutputLimit)
	nonNegative("unhealthy_requests_limit", r.UnhealthyRequestsLimit)
	nonNegative("job_status_final_update_retry_limit", r.JobStatusFinalUpdateRetryLimit)
	for name, v := range map[string]int64{"extract_max_size": r.ExtractMaxSize, "extract_max_ratio": r.ExtractMaxRatio, "extract_ratio_free_size": r.ExtractRatioFreeSize} {
		if v < 0 {
			p.fail(joinKey(key, name), "must not be negative, got %d", v)
		}
	}
	for name, d := range map[string]*Duration{"unhealthy_interval": r.UnhealthyInterval, "prepare_timeout": r.PrepareTimeout, "get_sources_timeout": r.GetSourcesTimeout} {
		if d != nil && d.Duration < 0 {
			p.fail(joinKey(key, name), "must not be negative")
		}
	}
	if r.Shell != "" && !oneOf(r.Shell, shells) {
		p.fail(joinKey(key, "shell"), "unknown shell %q: use one of %s", r.Shell, quoteList(shells))
	}
	for i, e := range r.Environment {
		if err := CheckEnvEntry(e); err != nil {
			p.fail(indexKey(joinKey(key, "environment"), i), "%v", err)
		}
	}
	for name := range r.FeatureFlags {
		if !strings.HasPrefix(name, "FF_") {
			p.warn(joinKey(joinKey(key, "feature_flags"), name), 0, "feature flag names start with FF_; this one is ignored")
		}
	}
	if r.Cache != nil {
		p.validateCache(joinKey(key, "cache"), r.Cache)
	}
	if r.Kubernetes != nil {
		p.validateKubernetes(joinKey(key, "kubernetes"), r.Kubernetes)
	}
}

// CheckEnvEntry checks one "KEY=VALUE" entry of runners[].environment.
func CheckEnvEntry(e string) error {
	k, _, ok := strings.Cut(e, "=")
	if !ok {
		return fmt.Errorf("invalid entry %q: use \"KEY=VALUE\"", clip(e))
	}
	if !envKeyRe.MatchString(k) {
		return fmt.Errorf("invalid entry %q: the variable name before \"=\" must be non-empty and without spaces", clip(e))
	}
	return nil
}

func (p *parser) validateCache(key string, c *Cache) {
	if c.Type != "" && !oneOf(c.Type, []string{"s3", "gcs", "azure"}) {
		p.fail(joinKey(key, "Type"), "unknown cache type %q: use \"s3\", \"gcs\" or \"azure\"", c.Type)
	}
	if c.MaxUploadedArchiveSize < 0 {
		p.fail(joinKey(key, "MaxUploadedArchiveSize"), "must not be negative")
	}
	if c.S3 != nil && c.S3.AuthenticationType != "" && !oneOf(strings.ToLower(c.S3.AuthenticationType), []string{"iam", "access-key"}) {
		p.fail(joinKey(joinKey(key, "s3"), "AuthenticationType"), "unknown authentication type %q: use \"iam\" or \"access-key\"", c.S3.AuthenticationType)
	}
}

var (
	pullPolicies = []string{"always", "if-not-present", "never"}
	dnsPolicies  = []string{"none", "default", "cluster-first", "cluster-first-with-host-net"}
	taintEffects = []string{"", "NoSchedule", "PreferNoSchedule", "NoExecute"}
	patchTypes   = []string{"", "merge", "json", "strategic"}
)

func (p *parser) validateKubernetes(key string, k *Kubernetes) {
	k8s := func(name string) string { return joinKey(key, name) }
	for i, pp := range k.PullPolicy {
		if !oneOf(pp, pullPolicies) {
			p.fail(indexKey(k8s("pull_policy"), i), "unknown pull policy %q: use one of %s", pp, quoteList(pullPolicies))
		}
	}
	for i, pp := range k.AllowedPullPolicies {
		if !oneOf(pp, pullPolicies) {
			p.fail(indexKey(k8s("allowed_pull_policies"), i), "unknown pull policy %q: use one of %s", pp, quoteList(pullPolicies))
		}
	}
	if k.DNSPolicy != "" && !oneOf(k.DNSPolicy, dnsPolicies) {
		p.fail(k8s("dns_policy"), "unknown DNS policy %q: use one of %s", k.DNSPolicy, quoteList(dnsPolicies))
	}
	if k.WarmPods > MaxWarmPods {
		p.fail(k8s("warm_pods"), "at most %d warm pods, got %d", MaxWarmPods, k.WarmPods)
	}
	for name, v := range map[string]int{"warm_pods": k.WarmPods, "warm_pods_idle_timeout": k.WarmPodsIdleTimeout, "warm_pods_refill_per_minute": k.WarmPodsRefillPerMinute} {
		if v < 0 {
			p.fail(k8s(name), "must not be negative, got %d", v)
		}
	}
	for name, v := range map[string]int{"poll_interval": k.PollInterval, "poll_timeout": k.PollTimeout, "resource_availability_check_max_attempts": k.ResourceAvailabilityCheckMaxAttempts, "retry_limit": k.RetryLimit, "retry_backoff_max": k.RetryBackoffMax} {
		if v < 0 {
			p.fail(k8s(name), "must not be negative, got %d", v)
		}
	}
	for name, v := range map[string]*int64{"terminationGracePeriodSeconds": k.TerminationGracePeriodSeconds, "pod_termination_grace_period_seconds": k.PodTerminationGracePeriodSeconds, "cleanup_grace_period_seconds": k.CleanupGracePeriodSeconds} {
		if v != nil && *v < 0 {
			p.fail(k8s(name), "must not be negative, got %d", *v)
		}
	}
	if k.CleanupResourcesTimeout != nil && k.CleanupResourcesTimeout.Duration < 0 {
		p.fail(k8s("cleanup_resources_timeout"), "must not be negative")
	}
	for t, effect := range k.NodeTolerations {
		if !oneOf(effect, taintEffects) {
			p.fail(joinKey(k8s("node_tolerations"), t), "unknown taint effect %q: use \"NoSchedule\", \"PreferNoSchedule\" or \"NoExecute\"", effect)
		}
	}
	for i, h := range k.HostAliases {
		if net.ParseIP(h.IP) == nil {
			p.fail(joinKey(indexKey(k8s("host_aliases"), i), "ip"), "invalid IP address %q", h.IP)
		}
		if len(h.Hostnames) == 0 {
			p.fail(joinKey(indexKey(k8s("host_aliases"), i), "hostnames"), "at least one hostname is needed")
		}
	}
	for i, ps := range k.PodSpec {
		if !oneOf(ps.PatchType, patchTypes) {
			p.fail(joinKey(indexKey(k8s("pod_spec"), i), "patch_type"), "unknown patch type %q: use \"merge\", \"json\" or \"strategic\"", ps.PatchType)
		}
		if ps.Patch != "" && ps.PatchPath != "" {
			p.fail(indexKey(k8s("pod_spec"), i), "set patch or patch_path, not both")
		}
	}
	if v := k.Volumes; v != nil {
		vk := k8s("volumes")
		check := func(kind string, i int, m VolumeMount) {
			base := indexKey(joinKey(vk, kind), i)
			if m.Name == "" {
				p.fail(joinKey(base, "name"), "missing volume name")
			}
			if m.MountPath == "" {
				p.fail(joinKey(base, "mount_path"), "missing mount_path")
			}
		}
		for i, x := range v.HostPaths {
			check("host_path", i, x.VolumeMount)
		}
		for i, x := range v.PVCs {
			check("pvc", i, x.VolumeMount)
		}
		for i, x := range v.ConfigMaps {
			check("config_map", i, x.VolumeMount)
		}
		for i, x := range v.Secrets {
			check("secret", i, x.VolumeMount)
		}
		for i, x := range v.EmptyDirs {
			check("empty_dir", i, x.VolumeMount)
			if x.Medium != "" && x.Medium != "Memory" && !strings.HasPrefix(x.Medium, "HugePages") {
				p.fail(joinKey(indexKey(joinKey(vk, "empty_dir"), i), "medium"), "unknown medium %q: use \"\" (node disk) or \"Memory\"", x.Medium)
			}
		}
		for i, x := range v.CSIs {
			check("csi", i, x.VolumeMount)
		}
		for i, x := range v.NFSs {
			check("nfs", i, x.VolumeMount)
		}
	}
}

// walk calls fn for every value reachable from v, with its key path.
// Embedded structs are flattened like the TOML decoder does.
func walk(v reflect.Value, path string, fn func(path string, v reflect.Value)) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walk(v.Elem(), path, fn)
		}
		return
	}
	fn(path, v)
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "-" {
				continue
			}
			if f.Anonymous && name == "" {
				walk(v.Field(i), path, fn)
				continue
			}
			if name == "" {
				name = f.Name
			}
			walk(v.Field(i), joinKey(path, name), fn)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		for i := 0; i < v.Len(); i++ {
			walk(v.Index(i), indexKey(path, i), fn)
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return
		}
		for _, k := range v.MapKeys() {
			walk(v.MapIndex(k), joinKey(path, k.String()), fn)
		}
	}
}
