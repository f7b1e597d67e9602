package helmchart_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/helmchart"
)

var (
	helmOnce sync.Once
	helmBin  string
	helmRoot string
	helmErr  error
)

// helm returns the helm binary (built by hack/helm/install on first use,
// which takes minutes) and the repository root.
func helm(t *testing.T) (bin, root string) {
	t.Helper()
	helmOnce.Do(func() {
		helmRoot, helmErr = helmchart.RepoRoot()
		if helmErr != nil {
			return
		}
		ctx := context.Background()
		if d, ok := t.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
			defer cancel()
		}
		helmBin, helmErr = helmchart.Install(ctx, helmRoot)
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmBin, helmRoot
}

// seedArgs are the seed's values (shared/examples/seed-pipeline/helm-values.md).
var seedArgs = []string{
	"--namespace", "gitlab-runner",
	"--set", "gitlabUrl=http://gitlab.example.com",
	"--set", "runnerRegistrationToken=SEED-REG-TOKEN-1234",
	"--set", "rbac.create=true",
	"--set", "runners.tags=aks",
	"--set", "runners.executor=kubernetes",
	"--set", "runners.namespace=gitlab-runner",
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, root := helm(t)
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String() + stderr.String(), err
	}
	return out.String(), nil
}

func render(t *testing.T, args ...string) []helmchart.Doc {
	t.Helper()
	out, err := run(t, append([]string{"template", "gitlab-runner", helmchart.ChartPath}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	docs, err := helmchart.Split([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func decode[T runtime.Object](t *testing.T, d helmchart.Doc) T {
	t.Helper()
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(d.YAML, nil, nil)
	if err != nil {
		t.Fatalf("decode %s %s: %v\n%s", d.Kind, d.Name, err, d.YAML)
	}
	v, ok := obj.(T)
	if !ok {
		t.Fatalf("%s %s decodes to %T", d.Kind, d.Name, obj)
	}
	return v
}

func one[T runtime.Object](t *testing.T, docs []helmchart.Doc, kind string) T {
	t.Helper()
	found := helmchart.Find(docs, kind, "")
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s rendered, want 1", len(found), kind)
	}
	return decode[T](t, found[0])
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func TestLint(t *testing.T) {
	out, err := run(t, append([]string{"lint", "--strict", helmchart.ChartPath}, seedArgs[2:]...)...)
	if err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	if !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint output:\n%s", out)
	}
}

func TestSeedValues(t *testing.T) {
	docs := render(t, seedArgs...)
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.Kind]++
		if d.Kind != "Role" && d.Kind != "RoleBinding" && d.Namespace != "gitlab-runner" {
			t.Errorf("%s %s in namespace %q, want gitlab-runner", d.Kind, d.Name, d.Namespace)
		}
	}
	want := map[string]int{"ConfigMap": 1, "Secret": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("rendered kinds %v, want %v", kinds, want)
	}

	// Role: exactly the documented one, in the job namespace.
	data, err := os.ReadFile(filepath.Join(helmRoot, "deploy/rbac/role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := decode[*rbacv1.Role](t, helmchart.Doc{Kind: "Role", YAML: data})
	role := one[*rbacv1.Role](t, docs, "Role")
	if !reflect.DeepEqual(role.Rules, doc.Rules) {
		t.Errorf("chart Role rules %+v\nwant deploy/rbac/role.yaml's %+v", role.Rules, doc.Rules)
	}
	if role.Namespace != "gitlab-runner" {
		t.Errorf("Role namespace %q", role.Namespace)
	}
	rb := one[*rbacv1.RoleBinding](t, docs, "RoleBinding")
	sa := one[*corev1.ServiceAccount](t, docs, "ServiceAccount")
	if rb.RoleRef.Name != role.Name || rb.RoleRef.Kind != "Role" || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Name != sa.Name || rb.Subjects[0].Namespace != "gitlab-runner" || rb.Namespace != "gitlab-runner" {
		t.Errorf("RoleBinding %+v does not bind Role %s to ServiceAccount gitlab-runner/%s", rb, role.Name, sa.Name)
	}

	dep := one[*appsv1.Deployment](t, docs, "Deployment")
	ps := dep.Spec.Template.Spec
	if ps.ServiceAccountName != sa.Name {
		t.Errorf("pod ServiceAccount %q, want %q", ps.ServiceAccountName, sa.Name)
	}
	if *dep.Spec.Replicas != 1 || *ps.TerminationGracePeriodSeconds != 3600 {
		t.Errorf("replicas %d, grace %d", *dep.Spec.Replicas, *ps.TerminationGracePeriodSeconds)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers", len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Image != "podrunner.local/podrunner:dev" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s)", c.Image, c.ImagePullPolicy)
	}
	env := envOf(c)
	for k, v := range map[string]string{
		"CI_SERVER_URL":           "http://gitlab.example.com",
		"RUNNER_EXECUTOR":         "kubernetes",
		"RUNNER_TAG_LIST":         "aks",
		"REGISTER_RUN_UNTAGGED":   "false",
		"REGISTER_LOCKED":         "true",
		"KUBERNETES_NAMESPACE":    "gitlab-runner",
		"KUBERNETES_IMAGE":        "alpine:latest",
		"KUBERNETES_HELPER_IMAGE": "podrunner.local/podrunner:dev",
		"UNREGISTER_RUNNERS":      "true",
		"CONFIG_FILE":             "/home/podrunner/.gitlab-runner/config.toml",
	} {
		if env[k] != v {
			t.Errorf("env %s=%q, want %q", k, env[k], v)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil || strings.Contains(e.Name, "TOKEN") {
			t.Errorf("env %s: tokens must come from the Secret volume only", e.Name)
		}
	}

	// Probes on the health endpoints of the metrics port.
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe missing or not HTTP: %+v", name, p)
			continue
		}
		path := "/health/live"
		if name == "readiness" {
			path = "/health/ready"
		}
		if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe %s on %s, want %s on metrics", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9252 {
		t.Errorf("ports %+v", c.Ports)
	}

	// The token: only in the Secret, which the pod mounts at /secrets.
	sec := one[*corev1.Secret](t, docs, "Secret")
	if got := string(sec.Data["runner-registration-token"]); got != "SEED-REG-TOKEN-1234" {
		t.Errorf("Secret runner-registration-token %q", got)
	}
	if got := string(sec.Data["runner-token"]); got != "" {
		t.Errorf("Secret runner-token %q, want empty", got)
	}
	var mounted bool
	for _, v := range ps.Volumes {
		if v.Secret != nil && v.Secret.SecretName == sec.Name {
			for _, m := range c.VolumeMounts {
				mounted = mounted || m.Name == v.Name && m.MountPath == "/secrets"
			}
		}
	}
	if !mounted {
		t.Errorf("Secret %s not mounted at /secrets", sec.Name)
	}
	for _, d := range docs {
		if bytes.Contains(d.YAML, []byte("SEED-REG-TOKEN")) {
			t.Errorf("%s %s shows the token in clear", d.Kind, d.Name)
		}
	}
	if dep.Spec.Template.Annotations["checksum/secret"] == "" || dep.Spec.Template.Annotations["checksum/configmap"] == "" {
		t.Errorf("pod annotations %v: want checksums that roll the pod on changes", dep.Spec.Template.Annotations)
	}

	// config.toml: the global keys; listen_address always (the probes).
	cm := one[*corev1.ConfigMap](t, docs, "ConfigMap")
	var global struct {
		Concurrent    int    `toml:"concurrent"`
		CheckInterval int    `toml:"check_interval"`
		ListenAddress string `toml:"listen_address"`
	}
	if err := toml.Unmarshal([]byte(cm.Data["config.toml"]), &global); err != nil {
		t.Fatalf("config.toml: %v\n%s", err, cm.Data["config.toml"])
	}
	if global.Concurrent != 10 || global.CheckInterval != 3 || global.ListenAddress != ":9252" {
		t.Errorf("config.toml %+v", global)
	}
	if _, _, err := config.Load(writeFile(t, "config.toml", cm.Data["config.toml"])); err != nil {
		t.Errorf("podrunner rejects the chart's config.toml: %v", err)
	}
	if !strings.Contains(cm.Data["entrypoint"], "podrunner register --non-interactive") ||
		!strings.Contains(cm.Data["entrypoint"], "podrunner unregister --all-runners") {
		t.Errorf("entrypoint does not register and unregister:\n%s", cm.Data["entrypoint"])
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A values file written for the gitlab/gitlab-runner chart, with the keys
// people set, renders unchanged; its runners.config is a template podrunner
// accepts, and the template's keys win over the chart's flat values.
func TestGitLabChartValuesFile(t *testing.T) {
	values := writeFile(t, "values.yaml", `
gitlabUrl: https://gitlab.example.com/
runnerToken: glrt-abcdefghijklmnopqrst
unregisterRunners: false
concurrent: 4
checkInterval: 10
logLevel: debug
logFormat: json
certsSecretName: gitlab-certs
terminationGracePeriodSeconds: 600
replicas: 2
rbac:
  create: true
  rules:
    - apiGroups: [""]
      resources: ["pods", "secrets"]
      verbs: ["*"]
serviceAccount:
  create: true
  name: my-runner
  annotations:
    iam.example.com/role: runner
runners:
  executor: kubernetes
  name: my-runner
  tags: "aks,linux"
  runUntagged: true
  privileged: true
  config: |
    [[runners]]
      [runners.kubernetes]
        namespace = "{{.Release.Namespace}}"
        image = "alpine"
        helper_image = "example.com/podrunner:1"
resources:
  limits:
    memory: 256Mi
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: ci
    operator: Exists
affinity:
  nodeAffinity: {}
podLabels:
  team: ci
podAnnotations:
  example.com/owner: ci
metrics:
  enabled: true
  serviceMonitor:
    enabled: true
  podMonitor:
    enabled: true
image:
  registry: registry.example.com
  image: ci/podrunner
  tag: v1.2.3
imagePullPolicy: Always
`)
	docs := render(t, "--namespace", "ci", "-f", values)

	cm := one[*corev1.ConfigMap](t, docs, "ConfigMap")
	tr, _, err := config.ParseRunnerTemplate([]byte(cm.Data["config.template.toml"]), "config.template.toml")
	if err != nil || tr == nil || tr.Kubernetes == nil {
		t.Fatalf("podrunner rejects the rendered runners.config: %v\n%s", err, cm.Data["config.template.toml"])
	}
	if tr.Kubernetes.Namespace != "ci" || tr.Kubernetes.Image != "alpine" {
		t.Errorf("template kubernetes %+v: tpl not applied", tr.Kubernetes)
	}
	var global map[string]any
	if err := toml.Unmarshal([]byte(cm.Data["config.toml"]), &global); err != nil {
		t.Fatal(err)
	}
	if global["concurrent"] != int64(4) || global["check_interval"] != int64(10) || global["log_level"] != "debug" || global["log_format"] != "json" {
		t.Errorf("config.toml %v", global)
	}

	dep := one[*appsv1.Deployment](t, docs, "Deployment")
	ps := dep.Spec.Template.Spec
	c := ps.Containers[0]
	env := envOf(c)
	// The template sets these: no flat value may override them.
	for _, k := range []string{"KUBERNETES_NAMESPACE", "KUBERNETES_IMAGE", "KUBERNETES_HELPER_IMAGE"} {
		if v, ok := env[k]; ok {
			t.Errorf("env %s=%q although runners.config sets it", k, v)
		}
	}
	for k, v := range map[string]string{"RUNNER_NAME": "my-runner", "UNREGISTER_RUNNERS": "false", "KUBERNETES_PRIVILEGED": "true", "RUNNER_TAG_LIST": "aks,linux", "REGISTER_RUN_UNTAGGED": "true"} {
		if env[k] != v {
			t.Errorf("env %s=%q, want %q", k, env[k], v)
		}
	}
	if c.Image != "registry.example.com/ci/podrunner:v1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	if *dep.Spec.Replicas != 2 || *ps.TerminationGracePeriodSeconds != 600 || ps.ServiceAccountName != "my-runner" {
		t.Errorf("replicas %d grace %d sa %s", *dep.Spec.Replicas, *ps.TerminationGracePeriodSeconds, ps.ServiceAccountName)
	}
	if c.Resources.Limits.Memory().String() != "256Mi" || ps.NodeSelector["kubernetes.io/os"] != "linux" ||
		len(ps.Tolerations) != 1 || ps.Affinity == nil || dep.Spec.Template.Labels["team"] != "ci" ||
		dep.Spec.Template.Annotations["example.com/owner"] != "ci" || dep.Spec.Template.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("pod tweaks not applied: %+v", dep.Spec.Template)
	}
	var certs bool
	for _, v := range ps.Volumes {
		certs = certs || v.Secret != nil && v.Secret.SecretName == "gitlab-certs"
	}
	for _, m := range c.VolumeMounts {
		certs = certs && (m.Name != "certs" || m.MountPath == "/home/podrunner/.gitlab-runner/certs")
	}
	if !certs {
		t.Errorf("certsSecretName not mounted under the config dir: %+v", ps.Volumes)
	}

	role := one[*rbacv1.Role](t, docs, "Role")
	if len(role.Rules) != 1 || !reflect.DeepEqual(role.Rules[0].Resources, []string{"pods", "secrets"}) {
		t.Errorf("rbac.rules not used: %+v", role.Rules)
	}
	sa := one[*corev1.ServiceAccount](t, docs, "ServiceAccount")
	if sa.Name != "my-runner" || sa.Annotations["iam.example.com/role"] != "runner" {
		t.Errorf("ServiceAccount %+v", sa.ObjectMeta)
	}
	sec := one[*corev1.Secret](t, docs, "Secret")
	if string(sec.Data["runner-token"]) != "glrt-abcdefghijklmnopqrst" {
		t.Errorf("Secret runner-token %q", sec.Data["runner-token"])
	}
	svc := one[*corev1.Service](t, docs, "Service")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 9252 {
		t.Errorf("Service ports %+v", svc.Spec.Ports)
	}
	for _, kind := range []string{"ServiceMonitor", "PodMonitor"} {
		if n := len(helmchart.Find(docs, kind, "")); n != 1 {
			t.Errorf("%d %s rendered, want 1", n, kind)
		}
	}
}

func TestValueForms(t *testing.T) {
	t.Run("image as a string, existing secret", func(t *testing.T) {
		docs := render(t, "--set", "gitlabUrl=http://g", "--set", "runners.secret=my-tokens",
			"--set", "image=podrunner.local/podrunner:dev", "--set", "imagePullPolicy=Never",
			"--set", "runners.image=busybox:1", "--set", "runners.imagePullPolicy=if-not-present")
		if n := len(helmchart.Find(docs, "Secret", "")); n != 0 {
			t.Errorf("%d Secrets rendered with runners.secret", n)
		}
		for _, kind := range []string{"Role", "RoleBinding", "ServiceAccount", "Service"} {
			if n := len(helmchart.Find(docs, kind, "")); n != 0 {
				t.Errorf("%d %s rendered by default", n, kind)
			}
		}
		dep := one[*appsv1.Deployment](t, docs, "Deployment")
		ps := dep.Spec.Template.Spec
		c := ps.Containers[0]
		env := envOf(c)
		if c.Image != "podrunner.local/podrunner:dev" || c.ImagePullPolicy != corev1.PullNever ||
			env["KUBERNETES_IMAGE"] != "busybox:1" || env["KUBERNETES_PULL_POLICY"] != "if-not-present" ||
			env["KUBERNETES_NAMESPACE"] != "default" || ps.ServiceAccountName != "default" {
			t.Errorf("image %s %s env %v sa %s", c.Image, c.ImagePullPolicy, env, ps.ServiceAccountName)
		}
		var found bool
		for _, v := range ps.Volumes {
			found = found || v.Secret != nil && v.Secret.SecretName == "my-tokens"
		}
		if !found {
			t.Errorf("runners.secret not mounted: %+v", ps.Volumes)
		}
	})
	t.Run("image from a private registry", func(t *testing.T) {
		docs := render(t, "--set", "gitlabUrl=http://g", "--set", "runnerToken=glrt-x",
			"--set", "image.registry=myregistry.example.com", "--set", "image.image=podrunner/podrunner", "--set", "image.tag=0.1.0",
			"--set", "imagePullSecrets[0].name=regcred", "--set", "imagePullSecrets[1].name=other")
		ps := one[*appsv1.Deployment](t, docs, "Deployment").Spec.Template.Spec
		env := envOf(ps.Containers[0])
		want := "myregistry.example.com/podrunner/podrunner:0.1.0"
		if ps.Containers[0].Image != want || env["KUBERNETES_HELPER_IMAGE"] != want ||
			len(ps.ImagePullSecrets) != 2 || ps.ImagePullSecrets[0].Name != "regcred" || env["KUBERNETES_IMAGE_PULL_SECRETS"] != "regcred,other" {
			t.Errorf("manager %s, helper %s, pull secrets %v and %q for jobs; want %s with regcred,other for both",
				ps.Containers[0].Image, env["KUBERNETES_HELPER_IMAGE"], ps.ImagePullSecrets, env["KUBERNETES_IMAGE_PULL_SECRETS"], want)
		}
		docs = render(t, "--set", "gitlabUrl=http://g", "--set", "runnerToken=glrt-x", "--set", "imagePullSecrets[0].name=regcred",
			"--set", "runners.config=[[runners]]\n  [runners.kubernetes]\n    image_pull_secrets = [\"mine\"]\n")
		if v, ok := envOf(one[*appsv1.Deployment](t, docs, "Deployment").Spec.Template.Spec.Containers[0])["KUBERNETES_IMAGE_PULL_SECRETS"]; ok {
			t.Errorf("KUBERNETES_IMAGE_PULL_SECRETS=%q set although runners.config sets image_pull_secrets", v)
		}
	})
	t.Run("cache secret", func(t *testing.T) {
		docs := render(t, "--set", "gitlabUrl=http://g", "--set", "runnerToken=glrt-x", "--set", "runners.cache.secretName=cache-creds")
		c := one[*appsv1.Deployment](t, docs, "Deployment").Spec.Template.Spec
		// The gitlab-runner chart's Secret keys, as GitLab Runner's
		// environment variables of register; each optional, so one
		// Secret serves whichever store runners.config picks.
		want := map[string]string{
			"CACHE_S3_ACCESS_KEY": "accesskey", "CACHE_S3_SECRET_KEY": "secretkey",
			"CACHE_AZURE_ACCOUNT_NAME": "accountName", "CACHE_AZURE_ACCOUNT_KEY": "accountKey",
			"CACHE_GCS_ACCESS_ID": "gcs-access-id", "CACHE_GCS_PRIVATE_KEY": "gcs-private-key",
		}
		got := map[string]string{}
		for _, e := range c.Containers[0].Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Name == "cache-creds" &&
				r.SecretKeyRef.Optional != nil && *r.SecretKeyRef.Optional && e.Value == "" {
				got[e.Name] = r.SecretKeyRef.Key
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("cache credentials env %v, want %v", got, want)
		}
		var mounted bool
		for _, v := range c.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "cache-creds" {
				mounted = len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == "gcs-application-credentials-file"
			}
		}
		if !mounted {
			t.Errorf("the GCS key file of cache-creds is not mounted: %+v", c.Volumes)
		}
		for _, d := range render(t, "--set", "gitlabUrl=http://g", "--set", "runnerToken=glrt-x") {
			if strings.Contains(string(d.YAML), "CACHE_S3_ACCESS_KEY") {
				t.Error("cache credentials without runners.cache.secretName")
			}
		}
	})
	t.Run("cluster-wide access", func(t *testing.T) {
		docs := render(t, "--set", "gitlabUrl=http://g", "--set", "runnerToken=glrt-x", "--set", "rbac.create=true", "--set", "rbac.clusterWideAccess=true")
		if len(helmchart.Find(docs, "ClusterRole", "")) != 1 || len(helmchart.Find(docs, "ClusterRoleBinding", "")) != 1 || len(helmchart.Find(docs, "Role", "")) != 0 {
			t.Errorf("kinds: %v", kindsOf(docs))
		}
	})
	t.Run("nodes ClusterRole", func(t *testing.T) {
		docs := render(t, "--set", "gitlabUrl=http://g", "--set", "runnerToken=glrt-x", "--set", "rbac.create=true", "--set", "rbac.listNodes=true")
		data, err := os.ReadFile(filepath.Join(helmRoot, "deploy/rbac/clusterrole-nodes.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := decode[*rbacv1.ClusterRole](t, helmchart.Doc{Kind: "ClusterRole", YAML: data})
		cr := one[*rbacv1.ClusterRole](t, docs, "ClusterRole")
		if !reflect.DeepEqual(cr.Rules, want.Rules) {
			t.Errorf("chart ClusterRole rules %+v\nwant deploy/rbac/clusterrole-nodes.yaml's %+v", cr.Rules, want.Rules)
		}
		crb := one[*rbacv1.ClusterRoleBinding](t, docs, "ClusterRoleBinding")
		sa := one[*corev1.ServiceAccount](t, docs, "ServiceAccount")
		if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa.Name {
			t.Errorf("ClusterRoleBinding %+v does not bind %s to ServiceAccount %s", crb, cr.Name, sa.Name)
		}
		if len(helmchart.Find(docs, "Role", "")) != 1 {
			t.Errorf("kinds: %v, want the namespaced Role kept", kindsOf(docs))
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no URL", []string{"--set", "runnerToken=glrt-x"}, "gitlabUrl is required"},
		{"no token", []string{"--set", "gitlabUrl=http://g"}, "a token is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, append([]string{"template", "x", helmchart.ChartPath}, tc.args...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm template %v: err %v, output:\n%s\nwant an error saying %q", tc.args, err, out, tc.want)
			}
		})
	}
}

func kindsOf(docs []helmchart.Doc) []string {
	var out []string
	for _, d := range docs {
		out = append(out, d.Kind+"/"+d.Name)
	}
	return out
}

// Every key of values.yaml is documented in the chart's README.
func TestREADMEListsEveryValue(t *testing.T) {
	root, err := helmchart.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, helmchart.ChartPath, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, helmchart.ChartPath, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := helmchart.ValueKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 40 {
		t.Fatalf("only %d keys found in values.yaml: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !bytes.Contains(readme, []byte("`"+k+"`")) {
			t.Errorf("README.md does not list `%s`", k)
		}
	}
}
