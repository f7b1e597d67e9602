package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

func pub(k, v string) job.Variable { return job.Variable{Key: k, Value: v, Public: true} }

func overwriteConfig() *config.Kubernetes {
	return &config.Kubernetes{
		Namespace:                             "ci",
		NamespaceOverwriteAllowed:             "^ci-.*$",
		ServiceAccount:                        "default-sa",
		ServiceAccountOverwriteAllowed:        "^(build|deploy)$",
		PodLabelsOverwriteAllowed:             "^team=",
		PodAnnotationsOverwriteAllowed:        ".*",
		NodeSelectorOverwriteAllowed:          "^disk=",
		NodeTolerationsOverwriteAllowed:       ".*",
		NodeSelector:                          map[string]string{"kubernetes.io/os": "linux"},
		MemoryLimit:                           "512Mi",
		MemoryLimitOverwriteMaxAllowed:        "1Gi",
		CPURequest:                            "100m",
		CPURequestOverwriteMaxAllowed:         "2",
		HelperMemoryLimitOverwriteMaxAllowed:  "128Mi",
		ServiceMemoryLimit:                    "256Mi",
		ServiceMemoryLimitOverwriteMaxAllowed: "1Gi",
		PodMemoryLimitOverwriteMaxAllowed:     "4Gi",
	}
}

func TestResolveSettingsAllowed(t *testing.T) {
	cfg := overwriteConfig()
	cfg.BearerTokenOverwriteAllowed = true
	s, err := ResolveSettings(cfg, job.Variables{
		pub("KUBERNETES_NAMESPACE_OVERWRITE", "ci-team"),
		pub("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "deploy"),
		{Key: "KUBERNETES_BEARER_TOKEN", Value: "tok", Masked: true},
		pub("KUBERNETES_POD_LABELS_1", "team=a/b c"),
		pub("KUBERNETES_POD_ANNOTATIONS_X", "example.com/note=free text $ ok"),
		pub("KUBERNETES_NODE_SELECTOR_DISK", "disk=ssd"),
		pub("KUBERNETES_NODE_TOLERATIONS_1", "gpu=true:NoSchedule"),
		pub("KUBERNETES_NODE_TOLERATIONS_2", "dedicated"),
		pub("KUBERNETES_MEMORY_LIMIT", "1Gi"),
		pub("KUBERNETES_CPU_REQUEST", "1500m"),
		pub("KUBERNETES_HELPER_MEMORY_LIMIT", "100Mi"),
		pub("KUBERNETES_POD_MEMORY_LIMIT", "3Gi"),
		pub("KUBERNETES_MEMORY_LIMIT", "768Mi"), // later wins
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Namespace != "ci-team" || s.ServiceAccount != "deploy" || s.BearerToken != "tok" {
		t.Errorf("namespace %q sa %q token %q", s.Namespace, s.ServiceAccount, s.BearerToken)
	}
	if s.PodLabels["team"] != "a_b_c" || s.PodAnnotations["example.com/note"] != "free text $ ok" {
		t.Errorf("labels %v annotations %v", s.PodLabels, s.PodAnnotations)
	}
	if s.NodeSelector["disk"] != "ssd" || s.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("node selector %v (config and overwrite merged)", s.NodeSelector)
	}
	want := []corev1.Toleration{
		{Key: "dedicated", Operator: corev1.TolerationOpExists},
		{Key: "gpu", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule},
	}
	if len(s.NodeTolerations) != 2 || s.NodeTolerations[0] != want[0] || s.NodeTolerations[1] != want[1] {
		t.Errorf("tolerations %+v", s.NodeTolerations)
	}
	if got := s.Build.Limits.Memory().String(); got != "768Mi" {
		t.Errorf("memory limit %s", got)
	}
	if got := s.Build.Requests.Cpu().String(); got != "1500m" {
		t.Errorf("cpu request %s", got)
	}
	if got := s.Helper.Limits.Memory().String(); got != "100Mi" {
		t.Errorf("helper memory limit %s", got)
	}
	if got := s.Pod.Limits.Memory().String(); got != "3Gi" {
		t.Errorf("pod memory limit %s", got)
	}
	if got := s.Service.Limits.Memory().String(); got != "256Mi" {
		t.Errorf("service memory limit %s (config)", got)
	}
}

func TestResolveSettingsIgnoredWhenDisabled(t *testing.T) {
	cfg := &config.Kubernetes{Namespace: "ci", ServiceAccount: "sa"} // no *_overwrite_allowed rules
	s, err := ResolveSettings(cfg, job.Variables{
		pub("KUBERNETES_NAMESPACE_OVERWRITE", "other"),
		pub("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "admin"),
		pub("KUBERNETES_BEARER_TOKEN", "tok"),
		pub("KUBERNETES_POD_LABELS_1", "team=x"),
		pub("KUBERNETES_NODE_SELECTOR_1", "a=b"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Namespace != "ci" || s.ServiceAccount != "sa" || s.BearerToken != "" || len(s.PodLabels) != 0 || len(s.NodeSelector) != 0 {
		t.Errorf("disabled overwrites applied: %+v", s)
	}
}

func TestResolveSettingsRefused(t *testing.T) {
	cases := []struct {
		name string
		v    job.Variable
		want string
	}{
		{"memory over cap", pub("KUBERNETES_MEMORY_LIMIT", "2Gi"),
			"KUBERNETES_MEMORY_LIMIT=2Gi is above memory_limit_overwrite_max_allowed (1Gi) in [runners.kubernetes]: lower the variable or raise the cap"},
		{"cpu over cap", pub("KUBERNETES_CPU_REQUEST", "2001m"),
			"KUBERNETES_CPU_REQUEST=2001m is above cpu_request_overwrite_max_allowed (2) in [runners.kubernetes]: lower the variable or raise the cap"},
		{"helper over cap", pub("KUBERNETES_HELPER_MEMORY_LIMIT", "1Gi"),
			"KUBERNETES_HELPER_MEMORY_LIMIT=1Gi is above helper_memory_limit_overwrite_max_allowed (128Mi) in [runners.kubernetes]: lower the variable or raise the cap"},
		{"service over cap", pub("KUBERNETES_SERVICE_MEMORY_LIMIT", "2Gi"),
			"KUBERNETES_SERVICE_MEMORY_LIMIT=2Gi is above service_memory_limit_overwrite_max_allowed (1Gi) in [runners.kubernetes]: lower the variable or raise the cap"},
		{"no cap", pub("KUBERNETES_EPHEMERAL_STORAGE_LIMIT", "1Gi"),
			"KUBERNETES_EPHEMERAL_STORAGE_LIMIT=1Gi is not allowed: ephemeral_storage_limit_overwrite_max_allowed is not set in [runners.kubernetes]; remove the variable or ask the runner's admin to set the cap"},
		{"bad quantity", pub("KUBERNETES_MEMORY_LIMIT", "lots"),
			"KUBERNETES_MEMORY_LIMIT=lots is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi): fix the variable"},
		{"namespace", pub("KUBERNETES_NAMESPACE_OVERWRITE", "prod"),
			`KUBERNETES_NAMESPACE_OVERWRITE=prod is not allowed by namespace_overwrite_allowed ("^ci-.*$") in [runners.kubernetes]: use a value matching the pattern or change the pattern`},
		{"namespace invalid", pub("KUBERNETES_NAMESPACE_OVERWRITE", "ci-Bad_Name"),
			`KUBERNETES_NAMESPACE_OVERWRITE=ci-Bad_Name is not a namespace name`},
		{"service account", pub("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "admin"),
			`KUBERNETES_SERVICE_ACCOUNT_OVERWRITE=admin is not allowed by service_account_overwrite_allowed ("^(build|deploy)$") in [runners.kubernetes]`},
		{"label", pub("KUBERNETES_POD_LABELS_X", "owner=me"),
			`KUBERNETES_POD_LABELS_X=owner=me is not allowed by pod_labels_overwrite_allowed ("^team=") in [runners.kubernetes]`},
		{"label without =", pub("KUBERNETES_POD_ANNOTATIONS_X", "novalue"),
			"KUBERNETES_POD_ANNOTATIONS_X=novalue is not of the form key=value: fix the variable"},
		{"reserved label", pub("KUBERNETES_POD_ANNOTATIONS_X", "job.runner.gitlab.com/id=1"),
			`KUBERNETES_POD_ANNOTATIONS_X: key "job.runner.gitlab.com/id" is reserved for the runner (runner.gitlab.com, podrunner.io): use another key`},
		{"reserved podrunner", pub("KUBERNETES_POD_ANNOTATIONS_X", "podrunner.io/trace-prefix=x"),
			`key "podrunner.io/trace-prefix" is reserved`},
		{"masked annotation", job.Variable{Key: "KUBERNETES_POD_ANNOTATIONS_X", Value: "a=secret", Public: true, Masked: true},
			"KUBERNETES_POD_ANNOTATIONS_X is a masked or protected variable: its value would be readable in the pod's metadata; make it a plain variable or remove it"},
		{"masked value not shown", job.Variable{Key: "KUBERNETES_NAMESPACE_OVERWRITE", Value: "prod-secret", Masked: true},
			`KUBERNETES_NAMESPACE_OVERWRITE=[MASKED] is not allowed`},
		{"node selector", pub("KUBERNETES_NODE_SELECTOR_X", "zone=a"),
			`KUBERNETES_NODE_SELECTOR_X=zone=a is not allowed by node_selector_overwrite_allowed ("^disk=")`},
		{"toleration effect", pub("KUBERNETES_NODE_TOLERATIONS_X", "k=v:Sometimes"),
			`node toleration "k=v": effect "Sometimes" is not NoSchedule, PreferNoSchedule or NoExecute`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ResolveSettings(overwriteConfig(), job.Variables{c.v})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v\nwant  %s", err, c.want)
			}
			if !IsConfigError(err) {
				t.Errorf("not a ConfigError: %T", err)
			}
			if c.v.Masked && strings.Contains(err.Error(), c.v.Value) {
				t.Errorf("error repeats a masked value: %v", err)
			}
		})
	}
}

func TestResolveSettingsReportsEveryError(t *testing.T) {
	_, err := ResolveSettings(overwriteConfig(), job.Variables{
		pub("KUBERNETES_MEMORY_LIMIT", "9Gi"),
		pub("KUBERNETES_NAMESPACE_OVERWRITE", "prod"),
	})
	if err == nil || !strings.Contains(err.Error(), "KUBERNETES_MEMORY_LIMIT") || !strings.Contains(err.Error(), "KUBERNETES_NAMESPACE_OVERWRITE") {
		t.Fatalf("err = %v", err)
	}
}

func TestServiceResources(t *testing.T) {
	s, err := ResolveSettings(overwriteConfig(), job.Variables{pub("KUBERNETES_SERVICE_MEMORY_LIMIT", "512Mi")})
	if err != nil {
		t.Fatal(err)
	}
	rr, err := s.ServiceResources(nil)
	if err != nil || rr.Limits.Memory().String() != "512Mi" {
		t.Fatalf("job-level service limit: %v %v", rr.Limits, err)
	}
	rr, err = s.ServiceResources(job.Variables{pub("KUBERNETES_SERVICE_MEMORY_LIMIT", "1Gi")})
	if err != nil || rr.Limits.Memory().String() != "1Gi" {
		t.Fatalf("per-service limit: %v %v", rr.Limits, err)
	}
	if s.Service.Limits.Memory().String() != "512Mi" {
		t.Error("per-service overwrite changed the job-level value")
	}
	if _, err := s.ServiceResources(job.Variables{pub("KUBERNETES_SERVICE_MEMORY_LIMIT", "3Gi")}); err == nil ||
		!strings.Contains(err.Error(), "KUBERNETES_SERVICE_MEMORY_LIMIT=3Gi is above service_memory_limit_overwrite_max_allowed (1Gi)") {
		t.Fatalf("per-service cap: %v", err)
	}
}

func TestTolerations(t *testing.T) {
	got, err := Tolerations(map[string]string{"": "", "a=1": "NoExecute", "b": "PreferNoSchedule"})
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.Toleration{
		{Operator: corev1.TolerationOpExists},
		{Key: "a", Operator: corev1.TolerationOpEqual, Value: "1", Effect: corev1.TaintEffectNoExecute},
		{Key: "b", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectPreferNoSchedule},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := Tolerations(map[string]string{"=v": "NoSchedule"}); err == nil {
		t.Error("a value without key was accepted")
	}
}
