package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Secrets of the test job: none may appear in the pod.
const (
	secretMasked    = "s3cr3t-masked-value"
	secretProtected = "protected-not-public-value"
	secretFile      = "-----BEGIN KEY----- file-secret-content"
	secretJobToken  = "glcbt-64_jobtokenvalue123"
	secretRepoPass  = "repo-password-value"
)

// zeroReader yields zero bytes: name suffix "aaaaaaaa".
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func podTestPayload() *job.Payload {
	return &job.Payload{
		ID:    4242,
		Token: secretJobToken,
		JobInfo: job.JobInfo{
			Name: "test job", Stage: "test", PipelineID: 77, ProjectID: 12,
			ProjectName: "Demo Project", ProjectFullPath: "group/demo",
			NamespaceID: 5, RootNamespaceID: 5,
		},
		GitInfo: job.GitInfo{
			RepoURL: "https://gitlab-ci-token:" + secretRepoPass + "@gitlab.example.com/group/demo.git",
			Ref:     "feature/x", Sha: "0123456789abcdef0123456789abcdef01234567",
			BeforeSha: "fedcba9876543210fedcba9876543210fedcba98", RefType: "branch", Depth: 20,
			Refspecs: []string{"+refs/heads/feature/x:refs/remotes/origin/feature/x"},
		},
		RunnerInfo: job.RunnerInfo{Timeout: 3600},
		Variables: job.Variables{
			{Key: "CI_JOB_TOKEN", Value: secretJobToken, Masked: true},
			{Key: "CI_PROJECT_URL", Value: "https://gitlab.example.com/group/demo", Public: true},
			{Key: "CI_PROJECT_NAMESPACE", Value: "group", Public: true},
			{Key: "CI_PROJECT_ROOT_NAMESPACE", Value: "group", Public: true},
			{Key: "GREETING", Value: "hello $USER", Public: true},
			{Key: "GREETING", Value: "hi $$HOME (last wins)", Public: true},
			{Key: "MASKED_PUBLIC", Value: secretMasked, Public: true, Masked: true},
			{Key: "PROTECTED", Value: secretProtected},
			{Key: "KEY_FILE", Value: secretFile, File: true},
			{Key: "GIT_DEPTH", Value: "5", Public: true},
			{Key: "KUBERNETES_MEMORY_LIMIT", Value: "512Mi", Public: true},
			{Key: "KUBERNETES_POD_LABELS_TEAM", Value: "team=platform", Public: true},
			{Key: "POSTGRES_DB", Value: "app", Public: true},
		},
		Steps: []job.Step{
			{Name: job.StepScript, Script: []string{"echo hello", "make test"}, Timeout: 3600, When: job.WhenOnSuccess},
			{Name: job.StepAfterScript, Script: []string{"echo bye"}, Timeout: 3600, When: job.WhenAlways},
		},
		Image: job.Image{Name: "golang:1.26"},
		Services: []job.Image{
			{Name: "redis:7", Alias: "cache, kv"},
			{Name: "registry.example.com/group/img:1.0", Entrypoint: []string{"/bin/server"}, Command: []string{"--port", "5432"},
				Variables: job.Variables{{Key: "MODE", Value: "db for $POSTGRES_DB", Public: true}},
				Ports:     []job.Port{{Number: 5432}}},
		},
		Features: job.Features{TokenMaskPrefixes: []string{"glpat-"}},
	}
}

func podTestConfig() *config.Kubernetes {
	return &config.Kubernetes{
		Namespace:                        "ci",
		Image:                            "alpine:3.20",
		HelperImage:                      "podrunner.local/podrunner:dev",
		CPURequest:                       "100m",
		CPULimit:                         "2",
		MemoryRequest:                    "128Mi",
		MemoryLimit:                      "1Gi",
		MemoryLimitOverwriteMaxAllowed:   "2Gi",
		HelperCPURequest:                 "10m",
		HelperMemoryLimit:                "64Mi",
		ServiceMemoryLimit:               "256Mi",
		PodLabelsOverwriteAllowed:        "^team=",
		NodeSelector:                     map[string]string{"kubernetes.io/os": "linux"},
		NodeTolerations:                  map[string]string{"ci=true": "NoSchedule", "spot": ""},
		PodLabels:                        map[string]string{"app": "ci-$CI_PROJECT_NAMESPACE", "secret": "$PROTECTED$MASKED_PUBLIC"},
		PodAnnotations:                   map[string]string{"example.com/ref": "$CI_PROJECT_URL"},
		ServiceAccount:                   "ci-jobs",
		ImagePullSecrets:                 []string{"regcred"},
		PullPolicy:                       config.StringOrList{"if-not-present"},
		AllowedPullPolicies:              []string{"always", "if-not-present"},
		PodSecurityContext:               &config.PodSecurityContext{FSGroup: ptrTo(int64(1000))},
		PodTerminationGracePeriodSeconds: ptrTo(int64(5)),
		PriorityClassName:                "ci",
		DNSPolicy:                        "cluster-first",
		HostAliases:                      []config.HostAlias{{IP: "10.0.0.1", Hostnames: []string{"gitlab.internal"}}},
		Volumes: &config.Volumes{
			EmptyDirs:  []config.EmptyDirVolume{{VolumeMount: config.VolumeMount{Name: "cache", MountPath: "/cache"}, Medium: "Memory", SizeLimit: "1Gi"}},
			ConfigMaps: []config.ConfigMapVolume{{VolumeMount: config.VolumeMount{Name: "ca", MountPath: "/etc/ca", ReadOnly: true}, Items: map[string]string{"ca.crt": "ca.crt"}}},
			PVCs:       []config.PVCVolume{{VolumeMount: config.VolumeMount{Name: "pvc-$CI_CONCURRENT_ID", MountPath: "/data"}}},
		},
	}
}

func podTestRequest(t *testing.T) PodRequest {
	t.Helper()
	p := podTestPayload()
	prep, err := job.Prepare(t.Context(), p, job.RunnerEnv{
		BuildsDir: "/builds", ProjectDir: "/builds/group/demo", ConcurrentID: 3,
		RunnerToken: "glrt-abcdefghijklmnop", RunnerVersion: "dev", RunnerRevision: "000000",
		ExecutableArch: "linux/amd64",
	}, job.ScriptOptions{Shell: "sh"})
	if err != nil {
		t.Fatal(err)
	}
	return PodRequest{
		Config: podTestConfig(), Payload: p, Prepared: prep,
		RunnerShortToken: "abcdefghi", RunnerName: "runner one", Slot: 3,
		AgentImage: "podrunner.local/podrunner:dev", AgentToken: "agent-token-0123",
		TracePrefix: []byte("Running with podrunner\nrepo https://x:" + secretRepoPass + "@host\n"),
		Rand:        zeroReader{},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update after checking the change):\n--- got\n%s", name, got)
	}
}

// goldenPod builds the request's pod and compares it with a golden file.
func goldenPod(t *testing.T, req PodRequest, name string) (*corev1.Pod, *corev1.Secret) {
	t.Helper()
	pod, secret, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	podYAML, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, name, podYAML)
	return pod, secret
}

func TestBuildPodGolden(t *testing.T) {
	_, secret := goldenPod(t, podTestRequest(t), "pod.yaml")

	// The spec is shown decoded so reviews can read it.
	spec := secret.Data[agent.SpecKey]
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, spec, "", "  "); err != nil {
		t.Fatal(err)
	}
	golden(t, "job.json", append(pretty.Bytes(), '\n'))
	meta := secret.DeepCopy()
	meta.Data = map[string][]byte{}
	for k := range secret.Data {
		meta.Data[k] = []byte("<see test>")
	}
	secretYAML, err := yaml.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "secret.yaml", secretYAML)

	var back job.Payload
	if err := json.Unmarshal(secret.Data[PayloadKey], &back); err != nil || back.ID != 4242 || back.Token != secretJobToken {
		t.Errorf("payload.json does not round-trip: id %d, err %v", back.ID, err)
	}
	var s agent.Spec
	if err := json.Unmarshal(spec, &s); err != nil {
		t.Fatal(err)
	}
	if s.Token != "agent-token-0123" || s.Listen != ":8765" || s.Sources.Depth != 5 || s.Files == nil || s.Plan == nil {
		t.Errorf("spec = %+v", s)
	}
}

// No masked or non-public value, nor the job token, may be in the pod.
func TestBuildPodKeepsSecretsOut(t *testing.T) {
	req := podTestRequest(t)
	pod, secret, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secretMasked, secretProtected, secretFile, secretJobToken, secretRepoPass, "agent-token-0123"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("pod contains secret %q", s)
		}
		// The Secret must carry them, or the job could not run.
		if s != secretRepoPass && !bytes.Contains(secret.Data[agent.SpecKey], []byte(s)) {
			t.Errorf("job.json lacks %q", s)
		}
	}
	// Every non-public variable of the job, whatever it is.
	for _, v := range req.Variables {
		if (!v.Public || v.Masked) && len(v.Value) > 3 && bytes.Contains(raw, []byte(v.Value)) {
			t.Errorf("pod contains the value of non-public variable %s", v.Key)
		}
	}
	if strings.Contains(pod.Annotations[AnnotationTracePrefix], secretRepoPass) {
		t.Error("trace prefix annotation holds a secret")
	}
}

func TestBuildPodShape(t *testing.T) {
	pod, secret, err := BuildPod(podTestRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "runner-abcdefghi-project-12-concurrent-3-aaaaaaaa" || secret.Name != pod.Name {
		t.Errorf("names %q %q", pod.Name, secret.Name)
	}
	if pod.Namespace != "ci" {
		t.Errorf("namespace %q", pod.Namespace)
	}
	if got := *pod.Spec.ActiveDeadlineSeconds; got != 3600+300+60 {
		t.Errorf("activeDeadlineSeconds = %d", got)
	}
	// Without after_script no room is kept for it.
	req := podTestRequest(t)
	var stages []job.Stage
	for _, st := range req.Plan.Stages {
		if st.Kind != job.KindAfterScript {
			stages = append(stages, st)
		}
	}
	if len(stages) == len(req.Plan.Stages) {
		t.Fatal("the test request has no after_script stage")
	}
	req.Plan.Stages = stages
	p, _, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := *p.Spec.ActiveDeadlineSeconds; got != 3600+60 {
		t.Errorf("without after_script: activeDeadlineSeconds = %d, want %d", got, 3600+60)
	}
	build := pod.Spec.Containers[0]
	if build.Name != "build" || build.Image != "golang:1.26" || build.WorkingDir != "/builds" {
		t.Errorf("build container %s %s %s", build.Name, build.Image, build.WorkingDir)
	}
	env := map[string]string{}
	count := map[string]int{}
	for _, e := range build.Env {
		env[e.Name] = e.Value
		count[e.Name]++
	}
	if env["GREETING"] != "hi $$HOME (last wins)" || count["GREETING"] != 1 {
		t.Errorf("GREETING = %q ×%d", env["GREETING"], count["GREETING"])
	}
	if got := build.Resources.Limits.Memory().String(); got != "512Mi" {
		t.Errorf("memory limit = %s (KUBERNETES_MEMORY_LIMIT=512Mi)", got)
	}
	if pod.Labels["team"] != "platform" || pod.Labels["app"] != "ci-group" || pod.Labels["secret"] != "" {
		t.Errorf("labels team=%q app=%q secret=%q", pod.Labels["team"], pod.Labels["app"], pod.Labels["secret"])
	}
	svc := pod.Spec.Containers[3]
	if svc.Name != "svc-1" || svc.Command[0] != "/bin/server" || svc.Args[1] != "5432" {
		t.Errorf("service container %+v", svc)
	}
	var mode string
	for _, e := range svc.Env {
		if e.Name == "MODE" {
			mode = e.Value
		}
	}
	if mode != "db for app" {
		t.Errorf("service variable MODE = %q", mode)
	}
	want := []string{"cache", "kv", "redis", "registry.example.com-group-img"}
	if got := pod.Spec.HostAliases[0].Hostnames; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("host aliases %v, want %v", got, want)
	}
	if *pod.Spec.AutomountServiceAccountToken {
		t.Error("service account token mounted")
	}
	found := false
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			found = v.Name == "pvc-3" && v.PersistentVolumeClaim.ClaimName == "pvc-3"
		}
	}
	if !found {
		t.Errorf("no volume for claim pvc-$CI_CONCURRENT_ID expanded to pvc-3: %+v", pod.Spec.Volumes)
	}
}

// The built objects are accepted by a (fake) API server and read back equal.
func TestBuildPodFakeClientset(t *testing.T) {
	pod, secret, err := BuildPod(podTestRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset()
	ctx := context.Background()
	if _, err := cs.CoreV1().Secrets(secret.Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Pods("ci").List(ctx, metav1.ListOptions{LabelSelector: LabelManaged + "=true," + LabelRunner + "=abcdefghi"})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list by the runner's selector: %v, %d pods", err, len(list.Items))
	}
}

func TestBuildPodErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*PodRequest)
		want string
	}{
		{"over cap", func(r *PodRequest) {
			r.Variables = append(r.Variables, job.Variable{Key: "KUBERNETES_MEMORY_LIMIT", Value: "4Gi", Public: true})
		}, "KUBERNETES_MEMORY_LIMIT=4Gi is above memory_limit_overwrite_max_allowed (2Gi) in [runners.kubernetes]: lower the variable or raise the cap"},
		{"request above limit", func(r *PodRequest) { r.Config.MemoryRequest = "2Gi" },
			"container build: memory request 2Gi is above its limit 512Mi: lower memory_request or raise memory_limit (or their KUBERNETES_* overwrites)"},
		{"no image", func(r *PodRequest) { r.Payload.Image.Name = ""; r.Config.Image = "" },
			"the job has no image and [runners.kubernetes] image is not set: add image: to the job or set image in the runner's config"},
		{"pull policy refused", func(r *PodRequest) { r.Payload.Image.PullPolicy = []string{"never"} },
			"image golang:1.26: pull_policy [never] of the job is not allowed by the runner (allowed: [always if-not-present]): change the job's pull_policy or add it to allowed_pull_policies in [runners.kubernetes]"},
		{"bad alias", func(r *PodRequest) { r.Payload.Services[0].Alias = "Bad_Alias" },
			`service redis:7: alias "Bad_Alias" is not a valid host name`},
		{"reserved volume", func(r *PodRequest) {
			r.Config.Volumes.EmptyDirs = append(r.Config.Volumes.EmptyDirs, config.EmptyDirVolume{VolumeMount: config.VolumeMount{Name: "builds", MountPath: "/x"}})
		}, `volume name "builds" in [runners.kubernetes] is used twice or is reserved`},
		{"no agent image", func(r *PodRequest) { r.AgentImage = ""; r.Config.HelperImage = "" },
			"no podrunner image for the agent: set helper_image in [runners.kubernetes]"},
		{"bad pod label key", func(r *PodRequest) { r.Config.PodLabels = map[string]string{"-bad": "x"} },
			`pod_labels key "-bad" in [runners.kubernetes] is not a valid Kubernetes key`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := podTestRequest(t)
			c.edit(&req)
			_, _, err := BuildPod(req)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v\nwant %q", err, c.want)
			}
			if !IsConfigError(err) {
				t.Errorf("%v is not a ConfigError", err)
			}
		})
	}
}

func TestServiceAliases(t *testing.T) {
	cases := []struct {
		image, alias string
		want         string
		err          bool
	}{
		{"redis:7", "", "redis", false},
		{"redis", "cache", "cache redis", false},
		{"postgres:16@sha256:abc", "db,pg  sql", "db pg sql postgres", false},
		// "__" is not allowed in a host name: only the "-" form is kept.
		{"registry.example.com/group/img:tag", "", "registry.example.com-group-img", false},
		{"group/img", "", "group-img", false},
		{"localhost:5000/img:1", "", "", false}, // derived names with a port are not host names
		{"docker:dind", "docker", "docker", false},
		{"redis:7", "UPPER", "redis", true},
		{"redis:7", "a_b", "redis", true},
	}
	for _, c := range cases {
		got, err := ServiceAliases(c.image, c.alias)
		if strings.Join(got, " ") != c.want || (err != nil) != c.err {
			t.Errorf("ServiceAliases(%q, %q) = %v, %v; want %q, err %v", c.image, c.alias, got, err, c.want, c.err)
		}
	}
}

func TestPullPolicy(t *testing.T) {
	cases := []struct {
		name      string
		pull      []string
		allowed   []string
		requested []string
		want      corev1.PullPolicy
		err       string
	}{
		{"default", nil, nil, nil, corev1.PullIfNotPresent, ""},
		{"config always", []string{"always"}, nil, nil, corev1.PullAlways, ""},
		{"config list first", []string{"never", "always"}, nil, nil, corev1.PullNever, ""},
		{"job allowed by pull_policy", []string{"always", "if-not-present"}, nil, []string{"if-not-present"}, corev1.PullIfNotPresent, ""},
		{"job allowed by allowed list", []string{"always"}, []string{"never", "always"}, []string{"never"}, corev1.PullNever, ""},
		{"job first allowed wins", nil, nil, []string{"always", "if-not-present"}, corev1.PullIfNotPresent, ""},
		{"job refused by default", nil, nil, []string{"always"}, "", "pull_policy [always] of the job is not allowed by the runner (allowed: [if-not-present])"},
		{"job unknown", nil, nil, []string{"sometimes"}, "", `pull_policy "sometimes": not one of always, if-not-present, never`},
		{"config unknown", []string{"often"}, nil, nil, "", `pull_policy "often" in [runners.kubernetes]`},
		{"k8s spelling", []string{"IfNotPresent"}, nil, nil, corev1.PullIfNotPresent, ""},
	}
	for _, c := range cases {
		cfg := &config.Kubernetes{PullPolicy: c.pull, AllowedPullPolicies: c.allowed}
		got, err := PullPolicy(cfg, c.requested, "img:1")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestEnvVars(t *testing.T) {
	vars := job.Variables{
		{Key: "A", Value: "1", Public: true},
		{Key: "B", Value: "$(A) and $$", Public: true},
		{Key: "A", Value: "2", Public: true},
		{Key: "M", Value: "masked", Public: true, Masked: true},
		{Key: "P", Value: "protected"},
		{Key: "1BAD", Value: "x", Public: true},
		{Key: "F", Value: "content", Public: true, File: true},
		{Key: "RUNNER_TEMP_PROJECT_DIR", Value: "/builds/p.tmp", Public: true},
	}
	got := EnvVars(vars)
	var s []string
	for _, e := range got {
		s = append(s, e.Name+"="+e.Value)
	}
	want := "B=$$(A) and $$$$ A=2 F=/builds/p.tmp/F RUNNER_TEMP_PROJECT_DIR=/builds/p.tmp"
	if strings.Join(s, " ") != want {
		t.Errorf("EnvVars = %q\nwant     %q", strings.Join(s, " "), want)
	}
}

func TestSecurityContext(t *testing.T) {
	sc := securityContext(&config.ContainerSecurityContext{Privileged: ptrTo(false), Capabilities: &config.Capabilities{Drop: []string{"ALL"}}},
		ptrTo(true), nil, []string{"NET_RAW", "SYS_PTRACE"}, []string{"MKNOD"})
	if *sc.Privileged {
		t.Error("container setting must win over privileged")
	}
	if got := len(sc.Capabilities.Add); got != 2 {
		t.Errorf("add %v", sc.Capabilities.Add)
	}
	for _, d := range sc.Capabilities.Drop {
		if d == "NET_RAW" {
			t.Error("NET_RAW dropped although added")
		}
	}
	if len(sc.Capabilities.Drop) != 2 { // MKNOD, ALL
		t.Errorf("drop %v", sc.Capabilities.Drop)
	}
	def := securityContext(nil, nil, nil, nil, nil)
	if len(def.Capabilities.Drop) != 1 || def.Capabilities.Drop[0] != "NET_RAW" {
		t.Errorf("default drop %v", def.Capabilities)
	}
}

func TestNamespaceOverwrite(t *testing.T) {
	req := podTestRequest(t)
	req.Namespace = "runner-ns"
	pod, _, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Namespace != "runner-ns" {
		t.Fatalf("namespace %q", pod.Namespace)
	}
	req.Config.NamespaceOverwriteAllowed = "^ci-"
	req.Variables = append(req.Variables, job.Variable{Key: "KUBERNETES_NAMESPACE_OVERWRITE", Value: "ci-x", Public: true})
	pod, secret, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Namespace != "ci-x" || secret.Namespace != "ci-x" {
		t.Fatalf("namespace %q / %q", pod.Namespace, secret.Namespace)
	}
}

// helper_image_volume: one container for the agent and the job, the
// agent run from the helper image mounted read-only; the state stays on
// the emptyDir.
func TestBuildPodHelperImageVolume(t *testing.T) {
	req := podTestRequest(t)
	req.Config.HelperImageVolume = true
	pod, _ := goldenPod(t, req, "pod-image-volume.yaml")

	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, " "); got != "build svc-0 svc-1" {
		t.Errorf("containers %q, want build and the services only", got)
	}
	build := pod.Spec.Containers[0]
	wantCmd := []string{agent.HelperImageDir + agent.InstalledBinary, "agent", "run", "--token-sha256", agent.TokenSHA256(req.AgentToken), "--listen", ":8765"}
	if !slices.Equal(build.Command, wantCmd) {
		t.Errorf("build command %q, want %q", build.Command, wantCmd)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range build.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts[volumeHelper]; m.MountPath != agent.HelperImageDir || !m.ReadOnly {
		t.Errorf("helper image mount %+v", m)
	}
	if m := mounts[volumeAgent]; m.MountPath != agent.BinDir {
		t.Errorf("agent state mount %+v", m)
	}
	var src *corev1.ImageVolumeSource
	for _, v := range pod.Spec.Volumes {
		if v.Name == volumeHelper {
			src = v.Image
		}
	}
	if src == nil || src.Reference != req.AgentImage || src.PullPolicy != corev1.PullIfNotPresent {
		t.Errorf("helper image volume %+v, want %s if-not-present", src, req.AgentImage)
	}

	// The name stays reserved whichever way the agent comes.
	for _, on := range []bool{false, true} {
		req := podTestRequest(t)
		req.Config.HelperImageVolume = on
		req.Config.Volumes.EmptyDirs = append(req.Config.Volumes.EmptyDirs, config.EmptyDirVolume{VolumeMount: config.VolumeMount{Name: volumeHelper, MountPath: "/x"}})
		if _, _, err := BuildPod(req); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("helper_image_volume=%v: volume named %s: err %v, want reserved", on, volumeHelper, err)
		}
	}
}
