package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/helmchart"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// ociRelease is podrunner as a user ships it to their cluster (issue 11):
// the image index built by hack/images and pushed to the cluster's
// registry, and the chart packaged and pushed there with `helm push`.
type ociRelease struct {
	Registry     string // host:port
	ImageRepo    string // repository of the image in Registry
	ImageTag     string
	ChartRef     string // oci://Registry/charts/podrunner
	ChartVersion string
}

var (
	ociOnce sync.Once
	ociRel  ociRelease
	ociErr  error
)

// releaseToRegistry builds and pushes the image index (linux/amd64 and
// linux/arm64) and the chart once per run.
func releaseToRegistry(t *testing.T) ociRelease {
	t.Helper()
	c := testcluster.Get(t)
	bin, root := helmBinary(t)
	ociOnce.Do(func() { ociRel, ociErr = pushRelease(c, bin, root) })
	if ociErr != nil {
		t.Fatal(ociErr)
	}
	return ociRel
}

func pushRelease(c *testcluster.Cluster, helm, root string) (ociRelease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rel := ociRelease{Registry: c.Registry, ImageRepo: "podrunner/podrunner", ImageTag: "e2e"}
	run := func(dir string, env []string, stdin string, name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}

	// The image, as the README tells users to build it (the arm64 busybox
	// from Debian's archive).
	images := filepath.Join(root, "hack", "images")
	bb, err := run(images, nil, "", "./fetch-busybox", "arm64")
	if err != nil {
		return rel, err
	}
	bbPath := strings.TrimSpace(bb[strings.LastIndex(strings.TrimSpace(bb), "\n")+1:])
	if _, err := run(images, nil, "", "go", "run", ".", "--busybox", "linux/arm64="+bbPath,
		"--ca", c.RegistryCA, "--push", c.Registry+"/"+rel.ImageRepo+":"+rel.ImageTag); err != nil {
		return rel, err
	}

	// The chart: packaged with its version, pushed with helm push.
	dir, err := os.MkdirTemp("", "podrunner-chart-")
	if err != nil {
		return rel, err
	}
	defer os.RemoveAll(dir)
	helmEnv := helmHome(dir)
	if _, err := run(root, helmEnv, c.RegistryPassword+"\n", helm, "registry", "login", c.Registry,
		"--username", c.RegistryUser, "--password-stdin", "--ca-file", c.RegistryCA); err != nil {
		return rel, err
	}
	out, err := run(root, helmEnv, "", helm, "package", helmchart.ChartPath, "--destination", dir)
	if err != nil {
		return rel, err
	}
	m := regexp.MustCompile(`podrunner-([^/\s]+)\.tgz`).FindStringSubmatch(out)
	if m == nil {
		return rel, fmt.Errorf("helm package printed no chart file: %s", out)
	}
	rel.ChartVersion = m[1]
	if _, err := run(root, helmEnv, "", helm, "push", filepath.Join(dir, m[0]), "oci://"+c.Registry+"/charts", "--ca-file", c.RegistryCA); err != nil {
		return rel, err
	}
	rel.ChartRef = "oci://" + c.Registry + "/charts/podrunner"
	return rel, nil
}

// helmHome keeps helm's caches, config and registry login under dir.
func helmHome(dir string) []string {
	return []string{
		"HELM_CACHE_HOME=" + filepath.Join(dir, "helm-cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "helm-config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "helm-data"),
	}
}

// registryLogin logs the env's helm into the cluster's registry.
func (e *helmEnv) registryLogin() {
	e.t.Helper()
	cmd := exec.Command(e.helm, "registry", "login", e.c.Registry, "--username", e.c.RegistryUser, "--password-stdin", "--ca-file", e.c.RegistryCA)
	cmd.Env = e.helmEnv
	cmd.Stdin = strings.NewReader(e.c.RegistryPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("helm registry login: %v\n%s", err, out)
	}
}

// TestReleaseInRegistry: the pushed image is one OCI index for
// linux/amd64 and linux/arm64 (read from the registry, not run), and the
// chart installed from the registry renders exactly what the repository's
// chart renders.
func TestReleaseInRegistry(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	rel := releaseToRegistry(t)

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(c.RegistryCA)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequest("GET", fmt.Sprintf("https://%s/v2/%s/manifests/%s", rel.Registry, rel.ImageRepo, rel.ImageTag), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(c.RegistryUser, c.RegistryPassword)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			MediaType string `json:"mediaType"`
			Platform  struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the image index: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, m := range idx.Manifests {
		plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	sort.Strings(plats)
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.oci.image.index.v1+json" || strings.Join(plats, ",") != "linux/amd64,linux/arm64" {
		t.Fatalf("image %s:%s is %s with platforms %v, want an OCI index of linux/amd64 and linux/arm64", rel.ImageRepo, rel.ImageTag, ct, plats)
	}

	bin, root := helmBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), helmHome(dir)...)
	login := exec.Command(bin, "registry", "login", c.Registry, "--username", c.RegistryUser, "--password-stdin", "--ca-file", c.RegistryCA)
	login.Env, login.Stdin = env, strings.NewReader(c.RegistryPassword+"\n")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("helm registry login: %v\n%s", err, out)
	}
	values := []string{"--namespace", "ci", "--set", "gitlabUrl=https://gitlab.example.com/", "--set", "runnerToken=glrt-x",
		"--set", "rbac.create=true", "--set", "image.registry=" + rel.Registry, "--set", "image.image=" + rel.ImageRepo, "--set", "image.tag=" + rel.ImageTag}
	render := func(chart string, extra ...string) string {
		cmd := exec.Command(bin, append(append([]string{"template", "gitlab-runner", chart}, extra...), values...)...)
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helm template %s: %v", chart, err)
		}
		return string(out)
	}
	fromRepo := render(helmchart.ChartPath)
	fromRegistry := render(rel.ChartRef, "--version", rel.ChartVersion, "--ca-file", c.RegistryCA)
	if fromRepo != fromRegistry {
		t.Fatalf("helm template of %s --version %s differs from the repository's chart:\n--- repository\n%s\n--- registry\n%s", rel.ChartRef, rel.ChartVersion, fromRepo, fromRegistry)
	}
	if !strings.Contains(fromRegistry, "image: "+rel.Registry+"/"+rel.ImageRepo+":"+rel.ImageTag) {
		t.Errorf("the manager is not the registry's image:\n%s", fromRegistry)
	}
}

// createSecret creates s in the env's namespace.
func (e *helmEnv) createSecret(s *corev1.Secret) {
	e.t.Helper()
	if _, err := e.c.Clientset.CoreV1().Secrets(e.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create secret %s: %v", s.Name, err)
	}
}

// coordHost is the coordinator's host name as the runner sees it (the
// name of its certificate file in certs/).
func (e *helmEnv) coordHost() string {
	e.t.Helper()
	u, err := url.Parse(e.coord.URL())
	if err != nil {
		e.t.Fatal(err)
	}
	return u.Hostname()
}

// dockerConfigJSON is a .dockerconfigjson with one login.
func dockerConfigJSON(registry, user, password string) []byte {
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{registry: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
	}}})
	return b
}
