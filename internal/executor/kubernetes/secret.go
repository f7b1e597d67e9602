package kubernetes

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
	"github.com/podrunner/podrunner/internal/version"
)

// PayloadKey is the Secret key holding the job payload as GitLab sent it,
// for adopting the job after a runner restart. It is not mounted.
const PayloadKey = "payload.json"

// maxSecretData is Kubernetes' limit on a Secret's data (1 MiB), less
// room for the object's metadata.
const maxSecretData = 1<<20 - 16<<10

// BuildSecret makes the job's Secret for pod: name and labels of the pod,
// job.json (the agent spec) and payload.json. BuildPod calls it; it is
// exported for callers that rebuild a pod by name.
func BuildSecret(req PodRequest, pod *corev1.Pod, port int) (*corev1.Secret, error) {
	spec := agent.Spec{
		Token:   req.AgentToken,
		Version: version.Get().Build(),
		Listen:  ":" + strconv.Itoa(port),
		Plan:    req.Plan,
		Sources: agent.SourcesFrom(req.Git, req.Variables.Get("CI_PROJECT_DIR")),
		Mask:    agent.Mask{Values: req.Mask.Values, Prefixes: req.Mask.Prefixes},
		Files:   req.Files,
	}
	if req.EnvInSpec {
		// A warm pod was started before its job: the job's public
		// variables, the build container's environment in a pod made for
		// the job, come with the spec.
		for _, v := range EnvVars(req.Variables) {
			spec.Env = append(spec.Env, v.Name+"="+strings.ReplaceAll(v.Value, "$$", "$"))
		}
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode agent spec: %w", err)
	}
	payloadJSON, err := json.Marshal(req.Payload)
	if err != nil {
		return nil, fmt.Errorf("encode job payload: %w", err)
	}
	if n := len(specJSON) + len(payloadJSON); n > maxSecretData {
		return nil, &ConfigError{Msg: fmt.Sprintf("the job's spec (%d bytes) and payload (%d bytes) do not fit in a Kubernetes Secret (1 MiB): reduce the job's variables or script size", len(specJSON), len(payloadJSON))}
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      pod.Name,
			Namespace: pod.Namespace,
			Labels:    maps.Clone(pod.Labels),
		},
		Type: corev1.SecretTypeOpaque,
		// Data never changes; immutable Secrets are not watched by the
		// kubelet.
		Immutable: ptrTo(true),
		Data: map[string][]byte{
			agent.SpecKey: specJSON,
			PayloadKey:    payloadJSON,
		},
	}, nil
}

// OwnerReference makes pod the owner of the job's Secret, so the garbage
// collector deletes the Secret after the pod (background deletion).
// Controller is false: a Pod does not manage the Secret. BlockOwnerDeletion
// is false: deleting the pod must never wait for the Secret (pain point 8),
// and true would need update on pods/finalizers.
func OwnerReference(pod *corev1.Pod) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         "v1",
		Kind:               "Pod",
		Name:               pod.Name,
		UID:                pod.UID,
		Controller:         ptrTo(false),
		BlockOwnerDeletion: ptrTo(false),
	}
}

// maskedPrefix masks the trace prefix for the pod's annotation, which is
// readable by anyone who may get pods.
func maskedPrefix(prefix []byte, m job.Mask) ([]byte, error) {
	if len(prefix) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	w := trace.NewMasker(&buf, m.Values, m.Prefixes)
	if _, err := w.Write(prefix); err != nil {
		return nil, fmt.Errorf("mask trace prefix: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("mask trace prefix: %w", err)
	}
	if buf.Len() > maxTracePrefix {
		return nil, fmt.Errorf("trace prefix of %d bytes is too large for a pod annotation (max %d)", buf.Len(), maxTracePrefix)
	}
	return buf.Bytes(), nil
}

// RegistrySecretSuffix names the job's image pull Secret: <pod name> plus it.
const RegistrySecretSuffix = "-registry"

// BuildRegistrySecret turns the job's registry credentials (GitLab sends
// one for its container registry, with the job token as password) into a
// kubernetes.io/dockerconfigjson Secret for the pod's imagePullSecrets, so
// images of private GitLab projects pull without configuration. nil when
// the job has no registry credentials.
func BuildRegistrySecret(pod *corev1.Pod, creds []job.Credential) (*corev1.Secret, error) {
	type auth struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	auths := map[string]auth{}
	for _, c := range creds {
		if c.Type != "registry" || c.URL == "" {
			continue
		}
		auths[c.URL] = auth{Username: c.Username, Password: c.Password,
			Auth: base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))}
	}
	if len(auths) == 0 {
		return nil, nil
	}
	data, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return nil, fmt.Errorf("encode registry credentials: %w", err)
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      pod.Name + RegistrySecretSuffix,
			Namespace: pod.Namespace,
			Labels:    maps.Clone(pod.Labels),
		},
		Type:      corev1.SecretTypeDockerConfigJson,
		Immutable: ptrTo(true),
		Data:      map[string][]byte{corev1.DockerConfigJsonKey: data},
	}, nil
}
