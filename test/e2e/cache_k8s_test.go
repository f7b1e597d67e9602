package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/podrunner/podrunner/internal/cache/azuretest"
	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// Cache round trip (issue 8) with the Kubernetes executor: the helper
// commands run in the job pod (the agent's podrunner binary) against an
// S3 server on the node address, and against a cache_dir that is a
// hostPath volume.

const k8sCachePipeline = `
stages: [build, test]

build:
  stage: build
  script:
    - mkdir -p deps
    - if [ -f deps/stamp ]; then echo "restored=$(cat deps/stamp)"; else echo "restored=none"; fi
    - echo "pipeline-$CI_PIPELINE_ID" > deps/stamp
  cache:
    key: deps
    paths: [deps/]

check:
  stage: test
  script:
    - echo "check-saw=$(cat deps/stamp)"
    - echo "changed-by-pull-job" > deps/stamp
  cache:
    key: deps
    paths: [deps/]
    policy: pull
`

// k8sCacheEnv starts the runner binary with extra cache settings: runnerKeys
// go into [[runners]], tables are appended after [runners.kubernetes].
func k8sCacheEnv(t *testing.T, name, runnerKeys, tables string) *k8sEnv {
	t.Helper()
	e := newK8sEnv(t, k8sCachePipeline, k8sOptions{external: true})
	bin, cfg := e.runnerProcessConfig(name, 1, 0)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "  [runners.kubernetes]\n", runnerKeys+"  [runners.kubernetes]\n", 1) + tables
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	e.startRunnerProcess(bin, cfg)
	return e
}

// k8sCacheRoundTrip runs k8sCachePipeline twice (the second restores what
// the first pushed; policy: pull never uploads), then a pipeline that
// restores through fallback_keys.
func k8sCacheRoundTrip(t *testing.T, e *k8sEnv) {
	t.Helper()
	trace := func(v coordinator.PipelineView, job string) string {
		for _, j := range v.Jobs {
			if j.Name == job {
				return string(e.coord.Trace(j.ID))
			}
		}
		t.Fatalf("no job %s in pipeline %d", job, v.ID)
		return ""
	}
	want := func(tr string, s ...string) {
		t.Helper()
		for _, w := range s {
			if !strings.Contains(tr, w) {
				t.Fatalf("trace lacks %q:\n%s", w, tr)
			}
		}
	}
	first := e.pipeline(coordinator.PipelineOptions{}, 4*time.Minute)
	if first.Status != coordinator.StatusSuccess {
		t.Fatalf("first pipeline %s:\n%s\n%s", first.Status, trace(first, "build"), trace(first, "check"))
	}
	want(trace(first, "build"), "restored=none", "Creating cache deps", "Created cache")
	want(trace(first, "check"), "Successfully extracted cache", fmt.Sprintf("check-saw=pipeline-%d", first.ID), "Not uploading cache deps")
	second := e.pipeline(coordinator.PipelineOptions{}, 4*time.Minute)
	if second.Status != coordinator.StatusSuccess {
		t.Fatalf("second pipeline %s", second.Status)
	}
	want(trace(second, "build"), fmt.Sprintf("restored=pipeline-%d", first.ID))
	// A key nothing pushed falls back (cache:fallback_keys) to what the
	// second pipeline's build pushed.
	fb := e.pipeline(coordinator.PipelineOptions{CIConfig: []byte(k8sFallbackPipeline)}, 4*time.Minute)
	if fb.Status != coordinator.StatusSuccess {
		t.Fatalf("fallback pipeline %s:\n%s", fb.Status, trace(fb, "build"))
	}
	want(trace(fb, "build"), fmt.Sprintf("restored=pipeline-%d", second.ID))
}

// k8sFallbackPipeline restores through cache:fallback_keys only.
const k8sFallbackPipeline = `
build:
  script:
    - echo "restored=$(cat deps/stamp 2>/dev/null || echo none)"
  cache:
    key: deps-nothing-pushed
    fallback_keys: [deps]
    paths: [deps/]
    policy: pull
`

// k8sS3Cache is a shared [runners.cache] of bucket on srv; auth holds the
// credential keys of [runners.cache.s3].
func k8sS3Cache(srv *s3test.Server, bucket, auth string) string {
	return fmt.Sprintf(`  [runners.cache]
    Type = "s3"
    Shared = true
    [runners.cache.s3]
      ServerAddress = %q
      BucketName = %q
      BucketLocation = "us-east-1"
      Insecure = true
`, srv.Address, bucket) + auth
}

// k8sS3HoldsOneCache checks that the round trip left one shared object.
func k8sS3HoldsOneCache(t *testing.T, srv *s3test.Server, bucket string) {
	t.Helper()
	objs := srv.Objects(t, bucket)
	if len(objs) != 1 || !strings.HasPrefix(objs[0], "project/") || !strings.Contains(objs[0], "/deps") {
		t.Errorf("bucket %s holds %q, want one shared project/<id>/deps… object", bucket, objs)
	}
}

func TestKubernetesCacheS3(t *testing.T) {
	t.Parallel()
	// Pods reach the host at the node address, not at loopback.
	srv := s3test.Start(t, testcluster.Get(t).NodeIP)
	srv.CreateBucket(t, "k8s-cache")
	e := k8sCacheEnv(t, "e2e-cache-s3", "", k8sS3Cache(srv, "k8s-cache", fmt.Sprintf("      AccessKey = %q\n      SecretKey = %q\n", s3test.AccessKey, s3test.SecretKey)))
	k8sCacheRoundTrip(t, e)
	k8sS3HoldsOneCache(t, srv, "k8s-cache")
	for _, name := range e.podNames() {
		if strings.Contains(e.podJSON(name), s3test.SecretKey) {
			t.Errorf("pod %s holds the S3 secret key in its spec", name)
		}
	}
}

// TestKubernetesCacheS3IAM: AuthenticationType = "iam" with the Kubernetes
// executor. The runner exchanges a web identity token file at STS (IRSA's
// shape: the manager pod's ServiceAccount token) and pre-signs the helper's
// URLs with those credentials; the pod gets no credential of any kind. Not
// parallel: the runner takes the AWS variables from the test's environment
// (t.Setenv).
func TestKubernetesCacheS3IAM(t *testing.T) {
	srv := s3test.Start(t, testcluster.Get(t).NodeIP)
	srv.CreateBucket(t, "k8s-cache-iam")
	sts := s3test.StartSTS(t, "arn:aws:iam::123456789012:role/ci-cache", "irsa-token-e2e")
	// Nothing else of the AWS chain may answer.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	for k, v := range sts.Env() {
		t.Setenv(k, v)
	}
	e := k8sCacheEnv(t, "e2e-cache-s3-iam", "", k8sS3Cache(srv, "k8s-cache-iam", "      AuthenticationType = \"iam\"\n"))
	k8sCacheRoundTrip(t, e)
	if sts.Calls() == 0 {
		t.Error("no credentials were taken from STS")
	}
	k8sS3HoldsOneCache(t, srv, "k8s-cache-iam")
	for _, name := range e.podNames() {
		spec := e.podJSON(name)
		for _, secret := range []string{s3test.SecretKey, s3test.AccessKey, "irsa-token-e2e", "X-Amz-Signature", "AWS_"} {
			if strings.Contains(spec, secret) {
				t.Errorf("pod %s holds %q in its spec", name, secret)
			}
		}
	}
}

// TestKubernetesCacheAzure: the runner signs SAS URLs with the account
// key; the helper in the pod moves the cache through them to Azurite on
// the node address. Neither the key nor a signature reaches the pod spec
// or the trace.
func TestKubernetesCacheAzure(t *testing.T) {
	t.Parallel()
	srv := azuretest.Start(t, testcluster.Get(t).NodeIP)
	srv.CreateContainer(t, "k8s-cache")
	e := k8sCacheEnv(t, "e2e-cache-azure", "", fmt.Sprintf(`  [runners.cache]
    Type = "azure"
    Shared = true
    [runners.cache.azure]
      AccountName = %q
      AccountKey = %q
      ContainerName = "k8s-cache"
      StorageDomain = %q
`, azuretest.AccountName, azuretest.AccountKey, srv.Endpoint))
	k8sCacheRoundTrip(t, e)
	for _, name := range e.podNames() {
		if strings.Contains(e.podJSON(name), azuretest.AccountKey) || strings.Contains(e.podJSON(name), "sig=") {
			t.Errorf("pod %s holds the account key or a SAS in its spec", name)
		}
	}
}

func TestKubernetesCacheHostPath(t *testing.T) {
	t.Parallel()
	host := t.TempDir()
	if err := os.Chmod(host, 0o777); err != nil {
		t.Fatal(err)
	}
	e := k8sCacheEnv(t, "e2e-cache-dir", "  cache_dir = \"/cache\"\n", fmt.Sprintf(`    [[runners.kubernetes.volumes.host_path]]
      name = "cache"
      mount_path = "/cache"
      host_path = %q
`, host))
	k8sCacheRoundTrip(t, e)
	var files []string
	filepath.WalkDir(host, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(host, p)
			files = append(files, rel)
		}
		return nil
	})
	if len(files) != 1 || !strings.HasPrefix(files[0], e.project+"/deps") || !strings.HasSuffix(files[0], "/cache.zip") {
		t.Errorf("host cache dir holds %q, want one %s/deps…/cache.zip", files, e.project)
	}
}

// GCS in pods: the runner signs V4 URLs with a service account key file;
// the helper in the pod moves the cache through them to fake-gcs-server
// on the node's address. Not parallel: the runner finds the emulator
// through STORAGE_EMULATOR_HOST (t.Setenv).
func TestKubernetesCacheGCS(t *testing.T) {
	nodeIP := testcluster.Get(t).NodeIP
	// fake-gcs-server binds Host only with a Port: take a free one of the
	// node's address (pods reach it there).
	l, err := net.Listen("tcp", nodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: nodeIP, Port: uint16(port), PublicHost: nodeIP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "k8s-cache"})
	t.Setenv("STORAGE_EMULATOR_HOST", net.JoinHostPort(nodeIP, strconv.Itoa(port)))
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyJSON, err := json.Marshal(map[string]string{"type": "service_account", "client_email": "ci-cache@project.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))})
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "gcs-key.json")
	if err := os.WriteFile(keyFile, keyJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	e := k8sCacheEnv(t, "e2e-cache-gcs", "", fmt.Sprintf(`  [runners.cache]
    Type = "gcs"
    Shared = true
    [runners.cache.gcs]
      BucketName = "k8s-cache"
      CredentialsFile = %q
`, keyFile))
	k8sCacheRoundTrip(t, e)
	list, err := srv.ListObjectsWithOptionsPaginated("k8s-cache", fakestorage.ListOptions{})
	objs := list.Objects
	if err != nil || len(objs) != 1 || !strings.HasPrefix(objs[0].Name, "project/") {
		t.Errorf("bucket holds %d objects (%v), want the one shared cache under project/", len(objs), err)
	} else {
		t.Logf("cache object %s (%d bytes)", objs[0].Name, objs[0].Size)
	}
	for _, name := range e.podNames() {
		if strings.Contains(e.podJSON(name), "PRIVATE KEY") || strings.Contains(e.podJSON(name), "X-Goog-Signature") {
			t.Errorf("pod %s holds the key or a signature in its spec", name)
		}
	}
}
