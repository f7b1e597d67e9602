package kubernetes

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

const configSection = "[runners.kubernetes]"

// ConfigError is a job that cannot run with this runner's configuration:
// a KUBERNETES_* overwrite refused or over its cap, a pull policy that is
// not allowed, an invalid service alias… The job fails with
// runner_configuration_error (GitLab maps it to script_failure when it does
// not know that reason). Msg says what to change.
type ConfigError struct {
	// Variable is the job variable at fault, if any.
	Variable string
	// Key is the config key involved, if any.
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Msg }

// IsConfigError reports whether err (or one it wraps) is a ConfigError.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// Settings are the effective pod settings of one job: the config with the
// job's allowed KUBERNETES_* overwrites applied.
type Settings struct {
	Namespace      string
	ServiceAccount string
	// BearerToken is KUBERNETES_BEARER_TOKEN when bearer_token_overwrite_allowed;
	// the caller must then talk to the API with it. Never logged.
	BearerToken     string
	PodLabels       map[string]string
	PodAnnotations  map[string]string
	NodeSelector    map[string]string
	NodeTolerations []corev1.Toleration

	// Resources of the build, helper (init-agent) and service containers,
	// and of the pod (pod-level resources, Kubernetes ≥ 1.32).
	Build, Helper, Service, Pod corev1.ResourceRequirements

	cfg *config.Kubernetes
}

// resourceSpec ties one resource overwrite variable to its config keys.
type resourceSpec struct {
	suffix   string // CPU_LIMIT → KUBERNETES_<group>CPU_LIMIT, <group>cpu_limit
	name     corev1.ResourceName
	limit    bool
	value    func(*config.Kubernetes) config.Quantity
	maxValue func(*config.Kubernetes) config.Quantity
}

type resourceGroup struct {
	varPrefix string // "KUBERNETES_", "KUBERNETES_HELPER_" …
	keyPrefix string // "", "helper_" …
	specs     []resourceSpec
}

func q(f func(*config.Kubernetes) config.Quantity) func(*config.Kubernetes) config.Quantity { return f }

var (
	buildResources = resourceGroup{"KUBERNETES_", "", []resourceSpec{
		{"CPU_LIMIT", corev1.ResourceCPU, true, q(func(c *config.Kubernetes) config.Quantity { return c.CPULimit }), q(func(c *config.Kubernetes) config.Quantity { return c.CPULimitOverwriteMaxAllowed })},
		{"CPU_REQUEST", corev1.ResourceCPU, false, q(func(c *config.Kubernetes) config.Quantity { return c.CPURequest }), q(func(c *config.Kubernetes) config.Quantity { return c.CPURequestOverwriteMaxAllowed })},
		{"MEMORY_LIMIT", corev1.ResourceMemory, true, q(func(c *config.Kubernetes) config.Quantity { return c.MemoryLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.MemoryLimitOverwriteMaxAllowed })},
		{"MEMORY_REQUEST", corev1.ResourceMemory, false, q(func(c *config.Kubernetes) config.Quantity { return c.MemoryRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.MemoryRequestOverwriteMaxAllowed })},
		{"EPHEMERAL_STORAGE_LIMIT", corev1.ResourceEphemeralStorage, true, q(func(c *config.Kubernetes) config.Quantity { return c.EphemeralStorageLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.EphemeralStorageLimitOverwriteMaxAllowed })},
		{"EPHEMERAL_STORAGE_REQUEST", corev1.ResourceEphemeralStorage, false, q(func(c *config.Kubernetes) config.Quantity { return c.EphemeralStorageRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.EphemeralStorageRequestOverwriteMaxAllowed })},
	}}
	helperResources = resourceGroup{"KUBERNETES_HELPER_", "helper_", []resourceSpec{
		{"CPU_LIMIT", corev1.ResourceCPU, true, q(func(c *config.Kubernetes) config.Quantity { return c.HelperCPULimit }), q(func(c *config.Kubernetes) config.Quantity { return c.HelperCPULimitOverwriteMaxAllowed })},
		{"CPU_REQUEST", corev1.ResourceCPU, false, q(func(c *config.Kubernetes) config.Quantity { return c.HelperCPURequest }), q(func(c *config.Kubernetes) config.Quantity { return c.HelperCPURequestOverwriteMaxAllowed })},
		{"MEMORY_LIMIT", corev1.ResourceMemory, true, q(func(c *config.Kubernetes) config.Quantity { return c.HelperMemoryLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.HelperMemoryLimitOverwriteMaxAllowed })},
		{"MEMORY_REQUEST", corev1.ResourceMemory, false, q(func(c *config.Kubernetes) config.Quantity { return c.HelperMemoryRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.HelperMemoryRequestOverwriteMaxAllowed })},
		{"EPHEMERAL_STORAGE_LIMIT", corev1.ResourceEphemeralStorage, true, q(func(c *config.Kubernetes) config.Quantity { return c.HelperEphemeralStorageLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.HelperEphemeralStorageLimitOverwriteMaxAllowed })},
		{"EPHEMERAL_STORAGE_REQUEST", corev1.ResourceEphemeralStorage, false, q(func(c *config.Kubernetes) config.Quantity { return c.HelperEphemeralStorageRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.HelperEphemeralStorageRequestOverwriteMaxAllowed })},
	}}
	serviceResources = resourceGroup{"KUBERNETES_SERVICE_", "service_", []resourceSpec{
		{"CPU_LIMIT", corev1.ResourceCPU, true, q(func(c *config.Kubernetes) config.Quantity { return c.ServiceCPULimit }), q(func(c *config.Kubernetes) config.Quantity { return c.ServiceCPULimitOverwriteMaxAllowed })},
		{"CPU_REQUEST", corev1.ResourceCPU, false, q(func(c *config.Kubernetes) config.Quantity { return c.ServiceCPURequest }), q(func(c *config.Kubernetes) config.Quantity { return c.ServiceCPURequestOverwriteMaxAllowed })},
		{"MEMORY_LIMIT", corev1.ResourceMemory, true, q(func(c *config.Kubernetes) config.Quantity { return c.ServiceMemoryLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.ServiceMemoryLimitOverwriteMaxAllowed })},
		{"MEMORY_REQUEST", corev1.ResourceMemory, false, q(func(c *config.Kubernetes) config.Quantity { return c.ServiceMemoryRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.ServiceMemoryRequestOverwriteMaxAllowed })},
		{"EPHEMERAL_STORAGE_LIMIT", corev1.ResourceEphemeralStorage, true, q(func(c *config.Kubernetes) config.Quantity { return c.ServiceEphemeralStorageLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.ServiceEphemeralStorageLimitOverwriteMaxAllowed })},
		{"EPHEMERAL_STORAGE_REQUEST", corev1.ResourceEphemeralStorage, false, q(func(c *config.Kubernetes) config.Quantity { return c.ServiceEphemeralStorageRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.ServiceEphemeralStorageRequestOverwriteMaxAllowed })},
	}}
	podResources = resourceGroup{"KUBERNETES_POD_", "pod_", []resourceSpec{
		{"CPU_LIMIT", corev1.ResourceCPU, true, q(func(c *config.Kubernetes) config.Quantity { return c.PodCPULimit }), q(func(c *config.Kubernetes) config.Quantity { return c.PodCPULimitOverwriteMaxAllowed })},
		{"CPU_REQUEST", corev1.ResourceCPU, false, q(func(c *config.Kubernetes) config.Quantity { return c.PodCPURequest }), q(func(c *config.Kubernetes) config.Quantity { return c.PodCPURequestOverwriteMaxAllowed })},
		{"MEMORY_LIMIT", corev1.ResourceMemory, true, q(func(c *config.Kubernetes) config.Quantity { return c.PodMemoryLimit }), q(func(c *config.Kubernetes) config.Quantity { return c.PodMemoryLimitOverwriteMaxAllowed })},
		{"MEMORY_REQUEST", corev1.ResourceMemory, false, q(func(c *config.Kubernetes) config.Quantity { return c.PodMemoryRequest }), q(func(c *config.Kubernetes) config.Quantity { return c.PodMemoryRequestOverwriteMaxAllowed })},
	}}
)

// Map overwrites (KUBERNETES_<kind>_<anything> = "key=value").
const (
	varNamespace      = "KUBERNETES_NAMESPACE_OVERWRITE"
	varServiceAccount = "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE"
	varBearerToken    = "KUBERNETES_BEARER_TOKEN"
	varPodLabels      = "KUBERNETES_POD_LABELS_"
	varPodAnnotations = "KUBERNETES_POD_ANNOTATIONS_"
	varNodeSelector   = "KUBERNETES_NODE_SELECTOR_"
	varNodeToleration = "KUBERNETES_NODE_TOLERATIONS_"
)

// reservedPrefixes are label/annotation key domains the job may not set:
// they identify the pod for the runner (and for GitLab Runner tooling).
var reservedPrefixes = []string{"runner.gitlab.com/", "podrunner.io/"}

// ResolveSettings applies the job's KUBERNETES_* variables to cfg, under
// GitLab Runner's rules (reference 2.9):
//   - a regex rule (*_overwrite_allowed) that is empty disables the
//     overwrite and the variable is ignored; a value that does not match
//     (unanchored) is an error;
//   - a resource overwrite needs its *_overwrite_max_allowed cap and must
//     not be above it;
//   - map overwrites are merged on top of the configured maps.
//
// Errors are *ConfigError saying which variable, value, cap and key.
// vars are the job's expanded variables.
func ResolveSettings(cfg *config.Kubernetes, vars job.Variables) (*Settings, error) {
	if cfg == nil {
		cfg = &config.Kubernetes{}
	}
	s := &Settings{
		Namespace:      cfg.Namespace,
		ServiceAccount: cfg.ServiceAccount,
		PodLabels:      map[string]string{},
		PodAnnotations: map[string]string{},
		NodeSelector:   maps.Clone(cfg.NodeSelector),
		cfg:            cfg,
	}
	if s.NodeSelector == nil {
		s.NodeSelector = map[string]string{}
	}
	last := lastVars(vars)
	var errs []error

	if v, ok := last[varNamespace]; ok && v.Value != "" {
		ok, err := allowed(cfg.NamespaceOverwriteAllowed, "namespace_overwrite_allowed", v)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			if msgs := validation.IsDNS1123Label(v.Value); len(msgs) > 0 {
				errs = append(errs, invalidValue(v, "a namespace name", msgs))
			} else {
				s.Namespace = v.Value
			}
		}
	}
	if v, ok := last[varServiceAccount]; ok && v.Value != "" {
		ok, err := allowed(cfg.ServiceAccountOverwriteAllowed, "service_account_overwrite_allowed", v)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			if msgs := validation.IsDNS1123Subdomain(v.Value); len(msgs) > 0 {
				errs = append(errs, invalidValue(v, "a service account name", msgs))
			} else {
				s.ServiceAccount = v.Value
			}
		}
	}
	if v, ok := last[varBearerToken]; ok && v.Value != "" && cfg.BearerTokenOverwriteAllowed {
		s.BearerToken = v.Value
	}

	tolerations := maps.Clone(cfg.NodeTolerations)
	if tolerations == nil {
		tolerations = map[string]string{}
	}
	for _, name := range sortedKeys(last) {
		v := last[name]
		switch {
		case strings.HasPrefix(name, varPodLabels):
			errs = append(errs, mapOverwrite(v, cfg.PodLabelsOverwriteAllowed, "pod_labels_overwrite_allowed", s.PodLabels, true))
		case strings.HasPrefix(name, varPodAnnotations):
			errs = append(errs, mapOverwrite(v, cfg.PodAnnotationsOverwriteAllowed, "pod_annotations_overwrite_allowed", s.PodAnnotations, false))
		case strings.HasPrefix(name, varNodeSelector):
			errs = append(errs, mapOverwrite(v, cfg.NodeSelectorOverwriteAllowed, "node_selector_overwrite_allowed", s.NodeSelector, true))
		case strings.HasPrefix(name, varNodeToleration):
			ok, err := allowed(cfg.NodeTolerationsOverwriteAllowed, "node_tolerations_overwrite_allowed", v)
			if err != nil || !ok {
				errs = append(errs, err)
				continue
			}
			// key[=value]:Effect; the config map has the same "key=value" → Effect shape.
			kv, effect := v.Value, ""
			if i := strings.LastIndexByte(v.Value, ':'); i >= 0 {
				kv, effect = v.Value[:i], v.Value[i+1:]
			}
			tolerations[kv] = effect
		}
	}
	var err error
	s.NodeTolerations, err = Tolerations(tolerations)
	if err != nil {
		errs = append(errs, err)
	}

	for _, g := range []struct {
		group resourceGroup
		out   *corev1.ResourceRequirements
	}{{buildResources, &s.Build}, {helperResources, &s.Helper}, {serviceResources, &s.Service}, {podResources, &s.Pod}} {
		rr, err := resources(cfg, g.group, last, nil)
		if err != nil {
			errs = append(errs, err)
		}
		*g.out = rr
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// ServiceResources returns the resources of one service container: the
// job-level service resources with the service's own KUBERNETES_SERVICE_*
// variables (from its `variables:`) applied under the same caps.
func (s *Settings) ServiceResources(serviceVars job.Variables) (corev1.ResourceRequirements, error) {
	last := lastVars(serviceVars)
	has := false
	for name := range last {
		if strings.HasPrefix(name, serviceResources.varPrefix) {
			has = true
		}
	}
	if !has {
		return *s.Service.DeepCopy(), nil
	}
	return resources(s.cfg, serviceResources, last, &s.Service)
}

// resources builds the requirements of one group: the configured values,
// then the overwrite variables checked against their caps. base, when
// given, replaces the configured values (per-service overwrites).
func resources(cfg *config.Kubernetes, g resourceGroup, vars map[string]job.Variable, base *corev1.ResourceRequirements) (corev1.ResourceRequirements, error) {
	var rr corev1.ResourceRequirements
	if base != nil {
		rr = *base.DeepCopy()
	}
	var errs []error
	set := func(limit bool, name corev1.ResourceName, qty resource.Quantity) {
		list := &rr.Requests
		if limit {
			list = &rr.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = qty
	}
	for _, sp := range g.specs {
		key := g.keyPrefix + strings.ToLower(sp.suffix)
		if base == nil {
			if raw := strings.TrimSpace(string(sp.value(cfg))); raw != "" {
				qty, err := resource.ParseQuantity(raw)
				if err != nil {
					errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf("%s = %q in %s is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi): fix the runner's config", key, raw, configSection)})
					continue
				}
				set(sp.limit, sp.name, qty)
			}
		}
		name := g.varPrefix + sp.suffix
		v, ok := vars[name]
		if !ok || strings.TrimSpace(v.Value) == "" {
			continue
		}
		val := strings.TrimSpace(v.Value)
		capKey := key + "_overwrite_max_allowed"
		qty, err := resource.ParseQuantity(val)
		if err != nil {
			errs = append(errs, &ConfigError{Variable: name, Key: capKey, Msg: fmt.Sprintf("%s=%s is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi): fix the variable", name, val)})
			continue
		}
		rawMax := strings.TrimSpace(string(sp.maxValue(cfg)))
		if rawMax == "" {
			errs = append(errs, &ConfigError{Variable: name, Key: capKey, Msg: fmt.Sprintf("%s=%s is not allowed: %s is not set in %s; remove the variable or ask the runner's admin to set the cap", name, val, capKey, configSection)})
			continue
		}
		maxQty, err := resource.ParseQuantity(rawMax)
		if err != nil {
			errs = append(errs, &ConfigError{Key: capKey, Msg: fmt.Sprintf("%s = %q in %s is not a Kubernetes quantity: fix the runner's config", capKey, rawMax, configSection)})
			continue
		}
		if qty.Cmp(maxQty) > 0 {
			errs = append(errs, &ConfigError{Variable: name, Key: capKey, Msg: fmt.Sprintf("%s=%s is above %s (%s) in %s: lower the variable or raise the cap", name, val, capKey, rawMax, configSection)})
			continue
		}
		set(sp.limit, sp.name, qty)
	}
	return rr, errors.Join(errs...)
}

// allowed checks v against a *_overwrite_allowed rule. An empty rule
// disables the overwrite (false, nil), as in GitLab Runner.
func allowed(rule config.Pattern, key string, v job.Variable) (bool, error) {
	if rule == "" {
		return false, nil
	}
	re, err := regexp.Compile(string(rule))
	if err != nil {
		return false, &ConfigError{Key: key, Msg: fmt.Sprintf("%s = %q in %s is not a valid regular expression: %v", key, rule, configSection, err)}
	}
	if !re.MatchString(v.Value) {
		return false, &ConfigError{Variable: v.Key, Key: key, Msg: fmt.Sprintf("%s=%s is not allowed by %s (%q) in %s: use a value matching the pattern or change the pattern", v.Key, shown(v), key, rule, configSection)}
	}
	return true, nil
}

// mapOverwrite applies one "key=value" variable to m.
func mapOverwrite(v job.Variable, rule config.Pattern, ruleKey string, m map[string]string, isLabel bool) error {
	ok, err := allowed(rule, ruleKey, v)
	if err != nil || !ok {
		return err
	}
	k, val, found := strings.Cut(v.Value, "=")
	k = strings.TrimSpace(k)
	if !found || k == "" {
		return &ConfigError{Variable: v.Key, Msg: fmt.Sprintf("%s=%s is not of the form key=value: fix the variable", v.Key, shown(v))}
	}
	if v.Masked || !v.Public {
		// Pod metadata is readable by anyone who may get pods.
		return &ConfigError{Variable: v.Key, Msg: fmt.Sprintf("%s is a masked or protected variable: its value would be readable in the pod's metadata; make it a plain variable or remove it", v.Key)}
	}
	if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
		return &ConfigError{Variable: v.Key, Msg: fmt.Sprintf("%s: %q is not a valid Kubernetes key (%s): fix the variable", v.Key, k, strings.Join(msgs, "; "))}
	}
	if isReserved(k) {
		return &ConfigError{Variable: v.Key, Msg: fmt.Sprintf("%s: key %q is reserved for the runner (runner.gitlab.com, podrunner.io): use another key", v.Key, k)}
	}
	if isLabel {
		val = LabelValue(val)
	}
	m[k] = val
	return nil
}

func isReserved(key string) bool {
	for _, p := range reservedPrefixes {
		domain := strings.TrimSuffix(p, "/")
		prefix, _, hasSlash := strings.Cut(key, "/")
		if hasSlash && (prefix == domain || strings.HasSuffix(prefix, "."+domain)) {
			return true
		}
	}
	return false
}

// Tolerations converts the node_tolerations map ("key=value" or "key" →
// effect; an empty key tolerates every taint; an empty effect every effect)
// into Kubernetes tolerations, sorted for a stable pod spec.
func Tolerations(m map[string]string) ([]corev1.Toleration, error) {
	var out []corev1.Toleration
	var errs []error
	for _, kv := range sortedKeys(m) {
		effect := strings.TrimSpace(m[kv])
		t := corev1.Toleration{Effect: corev1.TaintEffect(effect)}
		switch t.Effect {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			errs = append(errs, &ConfigError{Key: "node_tolerations", Msg: fmt.Sprintf("node toleration %q: effect %q is not NoSchedule, PreferNoSchedule or NoExecute", kv, effect)})
			continue
		}
		k, v, hasValue := strings.Cut(strings.TrimSpace(kv), "=")
		t.Key = k
		if hasValue {
			t.Operator = corev1.TolerationOpEqual
			t.Value = v
		} else {
			t.Operator = corev1.TolerationOpExists
		}
		if k == "" && hasValue {
			errs = append(errs, &ConfigError{Key: "node_tolerations", Msg: fmt.Sprintf("node toleration %q has a value but no key", kv)})
			continue
		}
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}

func invalidValue(v job.Variable, what string, msgs []string) error {
	return &ConfigError{Variable: v.Key, Msg: fmt.Sprintf("%s=%s is not %s (%s): fix the variable", v.Key, shown(v), what, strings.Join(msgs, "; "))}
}

// shown is a variable's value for an error message; masked and protected
// values are not repeated.
func shown(v job.Variable) string {
	if v.Masked || !v.Public {
		return "[MASKED]"
	}
	return v.Value
}

// lastVars indexes the last definition of each variable (later entries win).
func lastVars(vars job.Variables) map[string]job.Variable {
	m := make(map[string]job.Variable, len(vars))
	for _, v := range vars {
		m[v.Key] = v
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
