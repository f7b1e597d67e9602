// Package testcluster gives end-to-end tests a client for the local
// single-node Kubernetes cluster that hack/cluster/up starts.
//
// Tests call Get, which skips the test unless PODRUNNER_E2E=1; run them with
//
//	hack/cluster/with-cluster go test -count=1 ./test/e2e/...
//
// which builds and starts the cluster, exports KUBECONFIG, PODRUNNER_NODE_IP
// and PODRUNNER_E2E=1, and tears the cluster down afterwards.
package testcluster

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Environment variables that hack/cluster/with-cluster sets.
const (
	EnvE2E        = "PODRUNNER_E2E"
	EnvKubeconfig = "KUBECONFIG"
	EnvNodeIP     = "PODRUNNER_NODE_IP"
	// The cluster's registry (host:port), its CA file, and a user allowed
	// to push (hack/cluster/up makes them; DOCKER_CONFIG holds the same).
	EnvRegistry         = "PODRUNNER_REGISTRY"
	EnvRegistryCA       = "PODRUNNER_REGISTRY_CA"
	EnvRegistryUser     = "PODRUNNER_REGISTRY_USER"
	EnvRegistryPassword = "PODRUNNER_REGISTRY_PASSWORD"
)

// Image names that hack/cluster/images imports into the node's containerd.
// They exist only locally: pods must use PullIfNotPresent or PullNever.
const (
	BusyboxImage   = "podrunner.local/busybox:1"
	PodrunnerImage = "podrunner.local/podrunner:dev" // after `hack/cluster/images podrunner BIN`
	// HelperImage is podrunner-helper alone (one layer), what job pods
	// run; imported with PodrunnerImage.
	HelperImage = "podrunner.local/podrunner-helper:dev"
	// PrivateImage is the busybox image in a repository of Cluster.Registry
	// that needs a login; the node itself has no image of that name.
	PrivateImage = "group/demo/private:1"
	PauseImage   = "podrunner.local/pause:3.10"
)

// DefaultTimeout bounds each wait of the helpers; pods on the local node start
// in about a second, so this only matters when something is broken.
const DefaultTimeout = 90 * time.Second

const skipMessage = "end-to-end test against a real cluster: set PODRUNNER_E2E=1 and run " +
	"hack/cluster/with-cluster go test -count=1 ./test/e2e/... (it builds, starts and stops the local cluster)"

// Cluster is the running local cluster.
type Cluster struct {
	// Clientset is authenticated as cluster admin (system:masters).
	Clientset *kubernetes.Clientset
	// RESTConfig is the admin configuration Clientset was built from.
	RESTConfig *rest.Config
	// NodeIP is the address on which pods reach a server listening on the
	// host (bind to it or to 0.0.0.0).
	NodeIP string
	// Registry is the cluster's registry (host:port, TLS with RegistryCA,
	// basic auth). containerd uses it as docker.io's mirror, so alpine:latest
	// and busybox resolve to the stand-ins hack/cluster/images pushed.
	Registry, RegistryCA string
	// RegistryUser and RegistryPassword may push and pull anything.
	RegistryUser, RegistryPassword string
}

var (
	mu      sync.Mutex
	shared  *Cluster
	initErr error
)

// Get returns the cluster, or skips the test when PODRUNNER_E2E is not 1.
// A configured but unreachable cluster fails the test.
func Get(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvE2E) != "1" {
		t.Skip(skipMessage)
	}
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && initErr == nil {
		shared, initErr = connect()
	}
	if initErr != nil {
		t.Fatalf("local cluster: %v", initErr)
	}
	return shared
}

func connect() (*Cluster, error) {
	path := os.Getenv(EnvKubeconfig)
	if path == "" {
		return nil, fmt.Errorf("%s is empty: run the tests through hack/cluster/with-cluster, or export the KUBECONFIG=... line hack/cluster/up prints", EnvKubeconfig)
	}
	nodeIP := os.Getenv(EnvNodeIP)
	if nodeIP == "" {
		return nil, fmt.Errorf("%s is empty: export the PODRUNNER_NODE_IP=... line hack/cluster/up prints", EnvNodeIP)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return nil, fmt.Errorf("API server %s not ready (is hack/cluster/up running?): %w", cfg.Host, err)
	}
	c := &Cluster{Clientset: cs, RESTConfig: cfg, NodeIP: nodeIP,
		Registry: os.Getenv(EnvRegistry), RegistryCA: os.Getenv(EnvRegistryCA),
		RegistryUser: os.Getenv(EnvRegistryUser), RegistryPassword: os.Getenv(EnvRegistryPassword)}
	if c.Registry == "" || c.RegistryUser == "" || c.RegistryPassword == "" {
		return nil, fmt.Errorf("%s/%s/%s are empty: run the tests through hack/cluster/with-cluster", EnvRegistry, EnvRegistryUser, EnvRegistryPassword)
	}
	return c, nil
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a fresh namespace named after the test and deletes it
// when the test ends. It returns once the namespace's default ServiceAccount
// exists, so pods can be created in it right away.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	prefix := nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	prefix = "e2e-" + strings.Trim(prefix, "-") + "-"
	ctx := Context(t)
	ns, err := c.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix, Labels: map[string]string{"podrunner.e2e": "true"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s*: %v", prefix, err)
	}
	name := ns.Name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Background propagation: the test does not wait for pods to stop.
		policy := metav1.DeletePropagationBackground
		err := c.Clientset.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	c.waitServiceAccount(t, name, "default")
	return name
}

func (c *Cluster) waitServiceAccount(t testing.TB, ns, sa string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(Context(t), DefaultTimeout)
	defer cancel()
	// The ServiceAccount controller creates it within milliseconds; a short
	// poll is simpler than a watch here.
	var getErr error
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := c.Clientset.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			getErr = err
			return false, err
		}
		return err == nil, nil
	})
	switch {
	case getErr != nil:
		t.Fatalf("get serviceaccount %s/%s: %v", ns, sa, getErr)
	case err != nil:
		t.Fatalf("serviceaccount %s/%s did not appear: %v", ns, sa, err)
	}
}

// ServiceAccountConfig returns a rest.Config authenticated as the
// ServiceAccount ns/sa (created if missing) through a token from the
// TokenRequest API, valid for an hour. Use it to run code with exactly the
// permissions of the Roles bound to that ServiceAccount.
func (c *Cluster) ServiceAccountConfig(t testing.TB, ns, sa string) *rest.Config {
	t.Helper()
	ctx := Context(t)
	_, err := c.Clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create serviceaccount %s/%s: %v", ns, sa, err)
	}
	expiry := int64(3600)
	tr, err := c.Clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request token for serviceaccount %s/%s: %v", ns, sa, err)
	}
	cfg := rest.AnonymousClientConfig(c.RESTConfig)
	cfg.BearerToken = tr.Status.Token
	return cfg
}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
