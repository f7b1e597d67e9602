package kubernetes

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

// Container and volume names of a job's pod.
const (
	// ContainerHelper installs the agent from helper_image into the
	// shared volume and exits; it runs beside the build container (not
	// before it, as an init container would: the kubelet notices an ended
	// init container only at its next relist, up to a second later).
	ContainerHelper = "helper"
	ContainerBuild  = "build"
	// Service containers are ServiceContainerPrefix + index (svc-0, svc-1…).
	ServiceContainerPrefix = "svc-"

	volumeAgent  = "podrunner"
	volumeBuilds = "builds"
	// volumeHelper is the helper image as an image volume
	// (helper_image_volume), instead of the helper container.
	volumeHelper = "podrunner-helper"

	defaultBuildsDir = "/builds"
	defaultNamespace = "default"
	// deadlineSlack is added to the job and after_script timeouts for
	// activeDeadlineSeconds: the agent enforces the timeouts itself, the
	// deadline only catches a pod the agent could not stop.
	deadlineSlack = 60 * time.Second
)

// PodRequest is everything BuildPod needs for one job.
type PodRequest struct {
	Config *config.Kubernetes
	// Payload is the job as GitLab sent it.
	Payload *job.Payload
	// Prepared is the job as job.Prepare made it for every executor:
	// variables, plan, sources settings, mask and file variables.
	*job.Prepared

	RunnerShortToken string
	RunnerName       string
	// SystemID is the manager's system_id, the pod's owner.
	SystemID string
	Slot     int
	// Namespace is where the runner puts pods; "" means Config.Namespace.
	// An allowed KUBERNETES_NAMESPACE_OVERWRITE wins over both.
	Namespace string

	// AgentImage is the podrunner image (helper_image); "" means
	// Config.HelperImage.
	AgentImage string
	// AgentPort is the agent API's port; 0 means agent.DefaultPort.
	AgentPort int
	// AgentToken authenticates the runner to the agent (random, per job).
	AgentToken string
	// TracePrefix is what the runner wrote to the trace before the agent's
	// log; it is masked with Mask and stored in an annotation.
	TracePrefix []byte

	// Name, when set, is used as the pod's name instead of a new one.
	Name string
	// EnvInSpec puts the build container's environment into the agent
	// spec (a warm pod's environment was fixed before its job).
	EnvInSpec bool
	// Rand is the source of the name's random suffix; nil means
	// crypto/rand. Tests inject a fixed reader.
	Rand io.Reader
}

// BuildPod makes the pod and the Secret of a job, as described in
// docs/kubernetes-executor.md. Nothing is sent to the API server. Errors
// caused by the job or the config are *ConfigError (failure reason
// runner_configuration_error); others mean a bad request.
//
// Secrets (masked or non-public variables, the job token, file variables)
// are only in the Secret, never in the pod.
func BuildPod(req PodRequest) (*corev1.Pod, *corev1.Secret, error) {
	if req.Payload == nil || req.Prepared == nil || req.Plan == nil || req.Git == nil {
		return nil, nil, errors.New("build pod: the payload and the prepared job (job.Prepare) are required")
	}
	if req.AgentToken == "" {
		return nil, nil, errors.New("build pod: agent token is empty")
	}
	cfg := req.Config
	if cfg == nil {
		cfg = &config.Kubernetes{}
	}
	agentImage := req.AgentImage
	if agentImage == "" {
		agentImage = cfg.HelperImage
	}
	if agentImage == "" {
		return nil, nil, &ConfigError{Key: "helper_image", Msg: "no podrunner image for the agent: set helper_image in " + configSection}
	}
	port := req.AgentPort
	if port == 0 {
		port = agent.DefaultPort
	}
	if port < 1 || port > 65535 {
		return nil, nil, fmt.Errorf("build pod: agent port %d out of range", port)
	}

	settings, err := ResolveSettings(cfg, req.Variables)
	if err != nil {
		return nil, nil, err
	}
	name := req.Name
	if name == "" {
		r := req.Rand
		if r == nil {
			r = rand.Reader
		}
		if name, err = podName(r, req.RunnerShortToken, req.Payload.JobInfo.ProjectID, req.Slot); err != nil {
			return nil, nil, err
		}
	}
	namespace := req.Namespace
	if namespace == "" || settings.Namespace != cfg.Namespace {
		namespace = settings.Namespace
	}
	if namespace == "" {
		namespace = defaultNamespace
	}

	b := &podBuilder{req: req, cfg: cfg, settings: settings, public: plainVars(req.Variables)}
	pod, err := b.pod(name, namespace, agentImage, port)
	if err != nil {
		return nil, nil, err
	}
	secret, err := BuildSecret(req, pod, port)
	if err != nil {
		return nil, nil, err
	}
	return pod, secret, nil
}

type podBuilder struct {
	req      PodRequest
	cfg      *config.Kubernetes
	settings *Settings
	public   job.Variables
	errs     []error
}

func (b *podBuilder) fail(err error) {
	if err != nil {
		b.errs = append(b.errs, err)
	}
}

func (b *podBuilder) pod(name, namespace, agentImage string, port int) (*corev1.Pod, error) {
	req, cfg := b.req, b.cfg
	meta := MetaInput{PodName: name, ShortToken: req.RunnerShortToken, RunnerName: req.RunnerName, SystemID: req.SystemID, Slot: req.Slot, Payload: req.Payload, Variables: req.Variables}

	prefix, err := maskedPrefix(req.TracePrefix, req.Mask)
	if err != nil {
		return nil, err
	}
	labels := b.userMap(cfg.PodLabels, "pod_labels", true)
	maps.Copy(labels, b.settings.PodLabels)
	maps.Copy(labels, Labels(meta)) // ours win: the runner finds its pods by them
	annotations := b.userMap(cfg.PodAnnotations, "pod_annotations", false)
	maps.Copy(annotations, b.settings.PodAnnotations)
	maps.Copy(annotations, Annotations(meta, prefix, port))

	buildsDir := path.Clean(req.Variables.Get("CI_BUILDS_DIR"))
	if buildsDir == "." || !path.IsAbs(buildsDir) {
		buildsDir = defaultBuildsDir
	}
	volumes, mounts := b.volumes(buildsDir)
	agentArgs := []string{"--token-sha256", agent.TokenSHA256(req.AgentToken), "--listen", fmt.Sprintf(":%d", port)}
	agentMounts := []corev1.VolumeMount{{Name: volumeAgent, MountPath: agent.BinDir}}
	command := agent.BootstrapCommand(agentArgs...)
	if cfg.HelperImageVolume {
		// One container less: the kubelet reports the build container
		// running only once it has started every container of the pod.
		volumes = append(volumes, corev1.Volume{Name: volumeHelper, VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: agentImage, PullPolicy: corev1.PullIfNotPresent}}})
		agentMounts = append(agentMounts, corev1.VolumeMount{Name: volumeHelper, MountPath: agent.HelperImageDir, ReadOnly: true})
		command = agent.ImageVolumeCommand(agentArgs...)
	}

	caps := func(c *config.ContainerSecurityContext) *corev1.SecurityContext {
		return securityContext(c, nil, nil, cfg.CapAdd, cfg.CapDrop)
	}
	helperC := corev1.Container{
		Name:            ContainerHelper,
		Image:           agentImage,
		ImagePullPolicy: corev1.PullIfNotPresent, // a locally loaded podrunner image must not be pulled
		Command:         []string{agent.InstalledBinary, "agent", "install", agent.BinDir},
		VolumeMounts:    []corev1.VolumeMount{{Name: volumeAgent, MountPath: agent.BinDir}},
		Resources:       b.settings.Helper,
		SecurityContext: caps(cfg.HelperContainerSecurityContext),
	}
	b.checkResources(ContainerHelper, "helper_", helperC.Resources)

	image := req.Payload.Image.Name
	if image != "" {
		image = b.public.ExpandValue(image)
	}
	if image == "" {
		image = cfg.Image
	}
	if image == "" {
		b.fail(&ConfigError{Key: "image", Msg: "the job has no image and " + configSection + " image is not set: add image: to the job or set image in the runner's config"})
	}
	policy, err := PullPolicy(cfg, req.Payload.Image.PullPolicy, image)
	b.fail(err)
	build := corev1.Container{
		Name:            ContainerBuild,
		Image:           image,
		ImagePullPolicy: policy,
		// The agent waits for its spec over TLS (BuildSecret's job.json,
		// sent by the runner); the pod spec holds only the token's hash.
		Command:         command,
		WorkingDir:      buildsDir,
		Env:             EnvVars(req.Variables),
		Ports:           []corev1.ContainerPort{{Name: "agent", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
		VolumeMounts:    append(agentMounts, mounts...),
		Resources:       b.settings.Build,
		SecurityContext: securityContext(cfg.BuildContainerSecurityContext, cfg.Privileged, cfg.AllowPrivilegeEscalation, cfg.CapAdd, cfg.CapDrop),
	}
	b.checkResources(ContainerBuild, "", build.Resources)

	services, aliases := b.services(mounts)
	// The helper is second: the kubelet starts containers in order, so
	// the build container starts as early as in a bare pod, and the agent
	// before any service.
	containers := []corev1.Container{build}
	if !cfg.HelperImageVolume {
		containers = append(containers, helperC)
	}

	spec := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		ActiveDeadlineSeconds:         ptrTo(activeDeadline(req.Payload, req.Plan)),
		TerminationGracePeriodSeconds: terminationGrace(cfg),
		ServiceAccountName:            b.settings.ServiceAccount,
		AutomountServiceAccountToken:  ptrTo(cfg.AutomountServiceAccountToken != nil && *cfg.AutomountServiceAccountToken),
		// Service links would add variables for every Service of the
		// namespace to the job's environment, overriding job variables.
		EnableServiceLinks: ptrTo(false),
		Containers:         append(containers, services...),
		Volumes:            volumes,
		Tolerations:        b.settings.NodeTolerations,
		Affinity:           affinity(cfg.Affinity),
		SecurityContext:    podSecurityContext(cfg.PodSecurityContext),
		PriorityClassName:  cfg.PriorityClassName,
		SchedulerName:      cfg.SchedulerName,
		DNSConfig:          dnsConfig(cfg.DNSConfig),
	}
	if len(b.settings.NodeSelector) > 0 {
		spec.NodeSelector = b.settings.NodeSelector
	}
	if cfg.RuntimeClassName != "" {
		spec.RuntimeClassName = ptrTo(cfg.RuntimeClassName)
	}
	spec.DNSPolicy, err = dnsPolicy(cfg.DNSPolicy)
	b.fail(err)
	for _, s := range cfg.ImagePullSecrets {
		if s = strings.TrimSpace(s); s != "" {
			spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
		}
	}
	if len(aliases) > 0 {
		spec.HostAliases = append(spec.HostAliases, corev1.HostAlias{IP: "127.0.0.1", Hostnames: aliases})
	}
	for _, h := range cfg.HostAliases {
		spec.HostAliases = append(spec.HostAliases, corev1.HostAlias{IP: h.IP, Hostnames: slices.Clone(h.Hostnames)})
	}
	if len(b.settings.Pod.Limits) > 0 || len(b.settings.Pod.Requests) > 0 {
		spec.Resources = &b.settings.Pod
		b.checkResources("pod", "pod_", b.settings.Pod)
	}
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: spec,
	}, nil
}

// agentBinary is where the build container finds podrunner-helper, which
// the stage scripts call for artifacts and caches.
func agentBinary(cfg *config.Kubernetes) string {
	if cfg != nil && cfg.HelperImageVolume {
		return agent.ImageVolumeBinary
	}
	return agent.Binary
}

// userMap is pod_labels or pod_annotations: values expanded with the
// job's public variables (a secret never lands in pod metadata), keys
// checked, the runner's own domains left out (its keys win anyway).
func (b *podBuilder) userMap(m map[string]string, key string, isLabel bool) map[string]string {
	out := map[string]string{}
	for _, k := range sortedKeys(m) {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			b.fail(&ConfigError{Key: key, Msg: fmt.Sprintf("%s key %q in %s is not a valid Kubernetes key (%s): fix the runner's config", key, k, configSection, strings.Join(msgs, "; "))})
			continue
		}
		if isReserved(k) {
			continue
		}
		v := b.public.ExpandValue(m[k])
		if isLabel {
			v = LabelValue(v)
		}
		out[k] = v
	}
	return out
}

// checkResources refuses a request above its limit, which the API server
// would reject with a less helpful message.
func (b *podBuilder) checkResources(container, keyPrefix string, rr corev1.ResourceRequirements) {
	for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		req, okR := rr.Requests[n]
		lim, okL := rr.Limits[n]
		if okR && okL && req.Cmp(lim) > 0 {
			k := keyPrefix + strings.ReplaceAll(string(n), "-", "_")
			b.fail(&ConfigError{Key: k + "_request", Msg: fmt.Sprintf("container %s: %s request %s is above its limit %s: lower %s_request or raise %s_limit (or their KUBERNETES_* overwrites)", container, n, req.String(), lim.String(), k, k)})
		}
	}
}

// volumes returns the pod's volumes and the mounts of the build and
// service containers besides the agent's own.
func (b *podBuilder) volumes(buildsDir string) ([]corev1.Volume, []corev1.VolumeMount) {
	vols := []corev1.Volume{
		{Name: volumeAgent, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	var mounts []corev1.VolumeMount
	names := map[string]bool{volumeAgent: true, volumeBuilds: true, volumeHelper: true}
	buildsMounted := false
	add := func(m config.VolumeMount, kind string, src corev1.VolumeSource) {
		if m.Name == "" || m.MountPath == "" {
			b.fail(&ConfigError{Key: "volumes." + kind, Msg: fmt.Sprintf("a %s volume in %s needs name and mount_path", kind, configSection)})
			return
		}
		if names[m.Name] {
			b.fail(&ConfigError{Key: "volumes." + kind, Msg: fmt.Sprintf("volume name %q in %s is used twice or is reserved (podrunner, podrunner-helper, builds): rename it", m.Name, configSection)})
			return
		}
		if msgs := validation.IsDNS1123Label(m.Name); len(msgs) > 0 {
			b.fail(&ConfigError{Key: "volumes." + kind, Msg: fmt.Sprintf("volume name %q in %s is not a valid name (%s)", m.Name, configSection, strings.Join(msgs, "; "))})
			return
		}
		names[m.Name] = true
		if path.Clean(m.MountPath) == buildsDir {
			buildsMounted = true
		}
		vols = append(vols, corev1.Volume{Name: m.Name, VolumeSource: src})
		mounts = append(mounts, corev1.VolumeMount{Name: m.Name, MountPath: m.MountPath, SubPath: m.SubPath, ReadOnly: m.ReadOnly})
	}
	if v := b.cfg.Volumes; v != nil {
		for _, h := range v.HostPaths {
			p := h.HostPath
			if p == "" {
				p = h.MountPath // GitLab Runner's default
			}
			add(h.VolumeMount, "host_path", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p}})
		}
		for _, p := range v.PVCs {
			m := p.VolumeMount
			// name is the claim's, and may use job variables (e.g.
			// $CI_CONCURRENT_ID), as in GitLab Runner.
			m.Name = b.public.ExpandValue(m.Name)
			add(m, "pvc", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: m.Name, ReadOnly: m.ReadOnly}})
		}
		for _, c := range v.ConfigMaps {
			add(c.VolumeMount, "config_map", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: c.Name}, Items: keyToPaths(c.Items)}})
		}
		for _, s := range v.Secrets {
			add(s.VolumeMount, "secret", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: s.Name, Items: keyToPaths(s.Items)}})
		}
		for _, e := range v.EmptyDirs {
			src := &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMedium(e.Medium)}
			if e.SizeLimit != "" {
				qty, err := resource.ParseQuantity(string(e.SizeLimit))
				if err != nil {
					b.fail(&ConfigError{Key: "volumes.empty_dir.size_limit", Msg: fmt.Sprintf("empty_dir %q: size_limit %q is not a quantity", e.Name, e.SizeLimit)})
					continue
				}
				src.SizeLimit = &qty
			}
			add(e.VolumeMount, "empty_dir", corev1.VolumeSource{EmptyDir: src})
		}
		for _, c := range v.CSIs {
			src := &corev1.CSIVolumeSource{Driver: c.Driver, ReadOnly: ptrTo(c.ReadOnly), VolumeAttributes: maps.Clone(c.VolumeAttributes)}
			if c.FSType != "" {
				src.FSType = ptrTo(c.FSType)
			}
			add(c.VolumeMount, "csi", corev1.VolumeSource{CSI: src})
		}
		for _, n := range v.NFSs {
			add(n.VolumeMount, "nfs", corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: n.Server, Path: n.Path, ReadOnly: n.ReadOnly}})
		}
	}
	if !buildsMounted {
		// A configured volume mounted exactly at the builds dir replaces
		// the emptyDir, as in GitLab Runner.
		vols = append(vols, corev1.Volume{Name: volumeBuilds, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		mounts = append([]corev1.VolumeMount{{Name: volumeBuilds, MountPath: buildsDir}}, mounts...)
	}
	return vols, mounts
}

func keyToPaths(items map[string]string) []corev1.KeyToPath {
	var out []corev1.KeyToPath
	for _, k := range sortedKeys(items) {
		out = append(out, corev1.KeyToPath{Key: k, Path: items[k]})
	}
	return out
}

// serviceDef is a service from the config or the job.
type serviceDef struct {
	image      job.Image
	fromConfig bool
}

// services builds the service containers (config services first, as in
// GitLab Runner) and the host aliases that resolve them.
func (b *podBuilder) services(mounts []corev1.VolumeMount) ([]corev1.Container, []string) {
	var defs []serviceDef
	for _, s := range b.cfg.Services {
		img := job.Image{Name: s.Name, Alias: s.Alias, Command: s.Command, Entrypoint: s.Entrypoint}
		for _, e := range s.Environment {
			k, v, _ := strings.Cut(e, "=")
			img.Variables = append(img.Variables, job.Variable{Key: k, Value: v, Public: true})
		}
		defs = append(defs, serviceDef{image: img, fromConfig: true})
	}
	for _, s := range b.req.Payload.Services {
		defs = append(defs, serviceDef{image: s})
	}
	var containers []corev1.Container
	var aliases []string
	seen := map[string]bool{}
	for i, d := range defs {
		s := d.image
		name := fmt.Sprintf("%s%d", ServiceContainerPrefix, i)
		image := b.public.ExpandValue(s.Name)
		if image == "" {
			b.fail(&ConfigError{Msg: fmt.Sprintf("service %d has no image name: fix the job's services", i)})
			continue
		}
		policy, err := PullPolicy(b.cfg, s.PullPolicy, image)
		b.fail(err)
		// Service variables are expanded against the job's public ones.
		svcVars := make(job.Variables, 0, len(s.Variables))
		for _, v := range s.Variables {
			if !v.Raw {
				v.Value = b.public.ExpandValue(v.Value)
			}
			svcVars = append(svcVars, v)
		}
		rr, err := b.settings.ServiceResources(svcVars)
		b.fail(err)
		env := EnvVars(append(slices.Clone(b.req.Variables), svcVars...))
		c := corev1.Container{
			Name:            name,
			Image:           image,
			ImagePullPolicy: policy,
			// As GitLab Runner's Kubernetes executor: entrypoint replaces
			// the image's ENTRYPOINT, command its CMD.
			Command:         slices.Clone(s.Entrypoint),
			Args:            slices.Clone(s.Command),
			Env:             env,
			VolumeMounts:    slices.Clone(mounts),
			Resources:       rr,
			SecurityContext: securityContext(b.cfg.ServiceContainerSecurityContext, b.cfg.Privileged, b.cfg.AllowPrivilegeEscalation, b.cfg.CapAdd, b.cfg.CapDrop),
		}
		for _, p := range s.Ports {
			proto := corev1.Protocol(strings.ToUpper(p.Protocol))
			if proto == "" || proto == "HTTP" || proto == "HTTPS" {
				proto = corev1.ProtocolTCP
			}
			if p.Number < 1 || p.Number > 65535 {
				b.fail(&ConfigError{Msg: fmt.Sprintf("service %s: port %d out of range", s.Name, p.Number)})
				continue
			}
			c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: int32(p.Number), Protocol: proto})
		}
		b.checkResources(name, "service_", rr)
		containers = append(containers, c)
		al, err := ServiceAliases(image, s.Alias)
		b.fail(err)
		for _, a := range al {
			if !seen[a] {
				seen[a] = true
				aliases = append(aliases, a)
			}
		}
	}
	return containers, aliases
}

// ServiceAliases are the host names of a service: the aliases of its
// alias field (several may be separated by commas or spaces; each must be
// a DNS-1123 subdomain) and the names derived from the image as GitLab
// Runner does ("registry/group/img:tag" → "registry__group__img" and
// "registry-group-img"; derived names that are not valid host names, e.g.
// with a registry port, are left out).
func ServiceAliases(image, alias string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	addName := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	var errs []error
	for _, a := range strings.FieldsFunc(alias, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if msgs := validation.IsDNS1123Subdomain(a); len(msgs) > 0 {
			errs = append(errs, &ConfigError{Msg: fmt.Sprintf("service %s: alias %q is not a valid host name (%s): use lowercase letters, digits, '-' and '.'", image, a, strings.Join(msgs, "; "))})
			continue
		}
		addName(a)
	}
	name := image
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	for _, a := range []string{strings.ReplaceAll(name, "/", "__"), strings.ReplaceAll(name, "/", "-")} {
		if a != "" && len(validation.IsDNS1123Subdomain(a)) == 0 {
			addName(a)
		}
	}
	return out, errors.Join(errs...)
}

// EnvVars are the container environment of vars: public variables only
// (never masked, protected or file contents), the last definition of each
// name, "$" doubled so Kubernetes does not expand $(NAME) references.
// Names Kubernetes refuses are left out (the job's scripts still export
// them).
func EnvVars(vars job.Variables) []corev1.EnvVar {
	last := map[string]int{}
	for i, v := range vars {
		last[v.Key] = i
	}
	var env []corev1.EnvVar
	for i, v := range vars {
		if last[v.Key] != i || !v.Public || v.Masked || len(validation.IsEnvVarName(v.Key)) > 0 {
			continue
		}
		val := v.Value
		if v.File {
			val = vars.FilePath(v.Key)
		}
		env = append(env, corev1.EnvVar{Name: v.Key, Value: strings.ReplaceAll(val, "$", "$$")})
	}
	return env
}

// Pull policies as GitLab spells them.
const (
	PullAlways       = "always"
	PullIfNotPresent = "if-not-present"
	PullNever        = "never"
)

// PullPolicy picks the pull policy of image: the first of the job's
// policies (requested) that the runner allows (allowed_pull_policies, else
// pull_policy, else if-not-present), else the config's first pull_policy,
// else IfNotPresent. GitLab Runner retries a failed pull with the next
// pull_policy entry; podrunner uses the first one.
func PullPolicy(cfg *config.Kubernetes, requested []string, image string) (corev1.PullPolicy, error) {
	var configured, allowed []string
	for _, p := range cfg.PullPolicy {
		n, err := normPull(p)
		if err != nil {
			return "", &ConfigError{Key: "pull_policy", Msg: fmt.Sprintf("pull_policy %q in %s: %v", p, configSection, err)}
		}
		configured = append(configured, n)
	}
	for _, p := range cfg.AllowedPullPolicies {
		n, err := normPull(p)
		if err != nil {
			return "", &ConfigError{Key: "allowed_pull_policies", Msg: fmt.Sprintf("allowed_pull_policies entry %q in %s: %v", p, configSection, err)}
		}
		allowed = append(allowed, n)
	}
	if len(allowed) == 0 {
		allowed = configured
	}
	if len(allowed) == 0 {
		allowed = []string{PullIfNotPresent}
	}
	if len(requested) > 0 {
		var asked []string
		for _, p := range requested {
			n, err := normPull(p)
			if err != nil {
				return "", &ConfigError{Msg: fmt.Sprintf("image %s: pull_policy %q: %v", image, p, err)}
			}
			if slices.Contains(allowed, n) {
				return k8sPull(n), nil
			}
			asked = append(asked, n)
		}
		return "", &ConfigError{Key: "allowed_pull_policies", Msg: fmt.Sprintf("image %s: pull_policy %v of the job is not allowed by the runner (allowed: %v): change the job's pull_policy or add it to allowed_pull_policies in %s", image, asked, allowed, configSection)}
	}
	if len(configured) > 0 {
		return k8sPull(configured[0]), nil
	}
	return corev1.PullIfNotPresent, nil
}

func normPull(p string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(p)) {
	case "always":
		return PullAlways, nil
	case "if-not-present", "ifnotpresent":
		return PullIfNotPresent, nil
	case "never":
		return PullNever, nil
	}
	return "", fmt.Errorf("not one of always, if-not-present, never")
}

func k8sPull(p string) corev1.PullPolicy {
	switch p {
	case PullAlways:
		return corev1.PullAlways
	case PullNever:
		return corev1.PullNever
	}
	return corev1.PullIfNotPresent
}

// activeDeadline is the job timeout + the after_script timeout (when
// there is one) + 60 s.
func activeDeadline(p *job.Payload, plan *job.Plan) int64 {
	timeout := plan.Timeout
	if timeout <= 0 {
		timeout = time.Duration(p.RunnerInfo.Timeout) * time.Second
	}
	if timeout <= 0 {
		timeout = job.DefaultTimeoutSeconds * time.Second
	}
	// Room for after_script only when there is one.
	var after time.Duration
	for _, s := range plan.Stages {
		if s.Kind == job.KindAfterScript {
			after = s.Timeout
			if after <= 0 {
				after = job.DefaultAfterScriptTimeout
			}
		}
	}
	return int64((timeout + after + deadlineSlack) / time.Second)
}

func terminationGrace(cfg *config.Kubernetes) *int64 {
	if cfg.PodTerminationGracePeriodSeconds != nil {
		return ptrTo(*cfg.PodTerminationGracePeriodSeconds)
	}
	if cfg.TerminationGracePeriodSeconds != nil {
		return ptrTo(*cfg.TerminationGracePeriodSeconds)
	}
	return nil
}

func dnsPolicy(p string) (corev1.DNSPolicy, error) {
	switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(p), "-", "")) {
	case "":
		return "", nil
	case "none":
		return corev1.DNSNone, nil
	case "default":
		return corev1.DNSDefault, nil
	case "clusterfirst":
		return corev1.DNSClusterFirst, nil
	case "clusterfirstwithhostnet":
		return corev1.DNSClusterFirstWithHostNet, nil
	}
	return "", &ConfigError{Key: "dns_policy", Msg: fmt.Sprintf("dns_policy %q in %s is not one of none, default, cluster-first, cluster-first-with-host-net", p, configSection)}
}

func dnsConfig(c *config.DNSConfig) *corev1.PodDNSConfig {
	if c == nil {
		return nil
	}
	out := &corev1.PodDNSConfig{Nameservers: slices.Clone(c.Nameservers), Searches: slices.Clone(c.Searches)}
	for _, o := range c.Options {
		opt := corev1.PodDNSConfigOption{Name: o.Name}
		if o.Value != nil {
			opt.Value = ptrTo(*o.Value)
		}
		out.Options = append(out.Options, opt)
	}
	return out
}

// securityContext merges a *_container_security_context with the global
// privileged / allow_privilege_escalation / cap_add / cap_drop keys (the
// container's own settings win). NET_RAW is dropped unless added, as in
// GitLab Runner.
func securityContext(c *config.ContainerSecurityContext, privileged, allowPE *bool, capAdd, capDrop []string) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{Privileged: clonePtr(privileged), AllowPrivilegeEscalation: clonePtr(allowPE)}
	add := slices.Clone(capAdd)
	drop := append([]string{"NET_RAW"}, capDrop...)
	if c != nil {
		if c.Privileged != nil {
			sc.Privileged = clonePtr(c.Privileged)
		}
		if c.AllowPrivilegeEscalation != nil {
			sc.AllowPrivilegeEscalation = clonePtr(c.AllowPrivilegeEscalation)
		}
		sc.RunAsUser = clonePtr(c.RunAsUser)
		sc.RunAsGroup = clonePtr(c.RunAsGroup)
		sc.RunAsNonRoot = clonePtr(c.RunAsNonRoot)
		sc.ReadOnlyRootFilesystem = clonePtr(c.ReadOnlyRootFilesystem)
		if c.SELinuxType != "" {
			sc.SELinuxOptions = &corev1.SELinuxOptions{Type: c.SELinuxType}
		}
		if c.ProcMount != "" {
			sc.ProcMount = ptrTo(corev1.ProcMountType(c.ProcMount))
		}
		if c.Capabilities != nil {
			add = append(add, c.Capabilities.Add...)
			drop = append(drop, c.Capabilities.Drop...)
		}
	}
	caps := &corev1.Capabilities{}
	for _, a := range dedupe(add) {
		caps.Add = append(caps.Add, corev1.Capability(a))
	}
	for _, d := range dedupe(drop) {
		if !slices.Contains(add, d) {
			caps.Drop = append(caps.Drop, corev1.Capability(d))
		}
	}
	if len(caps.Add) > 0 || len(caps.Drop) > 0 {
		sc.Capabilities = caps
	}
	return sc
}

func podSecurityContext(c *config.PodSecurityContext) *corev1.PodSecurityContext {
	if c == nil {
		return nil
	}
	sc := &corev1.PodSecurityContext{
		FSGroup:            clonePtr(c.FSGroup),
		RunAsGroup:         clonePtr(c.RunAsGroup),
		RunAsNonRoot:       clonePtr(c.RunAsNonRoot),
		RunAsUser:          clonePtr(c.RunAsUser),
		SupplementalGroups: slices.Clone(c.SupplementalGroups),
	}
	if c.SELinuxType != "" {
		sc.SELinuxOptions = &corev1.SELinuxOptions{Type: c.SELinuxType}
	}
	if c.FSGroupChangePolicy != "" {
		sc.FSGroupChangePolicy = ptrTo(corev1.PodFSGroupChangePolicy(c.FSGroupChangePolicy))
	}
	if equality.Semantic.DeepEqual(*sc, corev1.PodSecurityContext{}) {
		return nil
	}
	return sc
}

func affinity(a *config.Affinity) *corev1.Affinity {
	if a == nil {
		return nil
	}
	out := &corev1.Affinity{}
	if n := a.NodeAffinity; n != nil {
		out.NodeAffinity = &corev1.NodeAffinity{}
		if r := n.RequiredDuringSchedulingIgnoredDuringExecution; r != nil {
			ns := &corev1.NodeSelector{}
			for _, t := range r.NodeSelectorTerms {
				ns.NodeSelectorTerms = append(ns.NodeSelectorTerms, nodeTerm(t))
			}
			out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = ns
		}
		for _, p := range n.PreferredDuringSchedulingIgnoredDuringExecution {
			out.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(out.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution,
				corev1.PreferredSchedulingTerm{Weight: p.Weight, Preference: nodeTerm(p.Preference)})
		}
	}
	if p := a.PodAffinity; p != nil {
		out.PodAffinity = &corev1.PodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution:  podTerms(p.RequiredDuringSchedulingIgnoredDuringExecution),
			PreferredDuringSchedulingIgnoredDuringExecution: weightedTerms(p.PreferredDuringSchedulingIgnoredDuringExecution),
		}
	}
	if p := a.PodAntiAffinity; p != nil {
		out.PodAntiAffinity = &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution:  podTerms(p.RequiredDuringSchedulingIgnoredDuringExecution),
			PreferredDuringSchedulingIgnoredDuringExecution: weightedTerms(p.PreferredDuringSchedulingIgnoredDuringExecution),
		}
	}
	return out
}

func nodeTerm(t config.NodeSelectorTerm) corev1.NodeSelectorTerm {
	var out corev1.NodeSelectorTerm
	for _, r := range t.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, corev1.NodeSelectorRequirement{Key: r.Key, Operator: corev1.NodeSelectorOperator(r.Operator), Values: slices.Clone(r.Values)})
	}
	for _, r := range t.MatchFields {
		out.MatchFields = append(out.MatchFields, corev1.NodeSelectorRequirement{Key: r.Key, Operator: corev1.NodeSelectorOperator(r.Operator), Values: slices.Clone(r.Values)})
	}
	return out
}

func podTerms(ts []config.PodAffinityTerm) []corev1.PodAffinityTerm {
	var out []corev1.PodAffinityTerm
	for _, t := range ts {
		out = append(out, podTerm(t))
	}
	return out
}

func weightedTerms(ts []config.WeightedPodAffinityTerm) []corev1.WeightedPodAffinityTerm {
	var out []corev1.WeightedPodAffinityTerm
	for _, t := range ts {
		out = append(out, corev1.WeightedPodAffinityTerm{Weight: t.Weight, PodAffinityTerm: podTerm(t.PodAffinityTerm)})
	}
	return out
}

func podTerm(t config.PodAffinityTerm) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{
		LabelSelector:     labelSelector(t.LabelSelector),
		Namespaces:        slices.Clone(t.Namespaces),
		TopologyKey:       t.TopologyKey,
		NamespaceSelector: labelSelector(t.NamespaceSelector),
	}
}

func labelSelector(s *config.LabelSelector) *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{MatchLabels: maps.Clone(s.MatchLabels)}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator), Values: slices.Clone(r.Values)})
	}
	return out
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// plainVars are the variables whose values may appear in the pod spec:
// public and not masked (GitLab can send a masked variable as public).
func plainVars(vars job.Variables) job.Variables {
	var out job.Variables
	for _, v := range vars {
		if v.Public && !v.Masked {
			out = append(out, v)
		}
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
