package acceptance

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/podrunner/podrunner/internal/cache/azuretest"
	"github.com/podrunner/podrunner/internal/coordinator"
)

// fallbackPipeline: a branch-keyed cache that falls back to the key
// another branch pushed (cache:fallback_keys).
const fallbackPipeline = `
build:
  script:
    - echo "restored=$(cat deps/stamp 2>/dev/null || echo none)"
  cache:
    key: deps-other-branch
    fallback_keys: [deps-$CI_COMMIT_REF_SLUG]
    paths: [deps/]
    policy: pull
`

func azureCacheConfig(e *env, srv *azuretest.Server, key string) string {
	return e.config(1, fmt.Sprintf(`  cache_dir = %q
  [runners.cache]
    Type = "azure"
    Path = "ci"
    [runners.cache.azure]
      AccountName = %q
      AccountKey = %q
      ContainerName = "runner-cache"
      StorageDomain = %q
`, filepath.Join(e.dir, "cache"), azuretest.AccountName, key, srv.Endpoint))
}

func TestCacheRoundTripAzure(t *testing.T) {
	t.Parallel()
	srv := azuretest.Start(t, "127.0.0.1")
	srv.CreateContainer(t, "runner-cache")
	e := newEnv(t, cachePipeline, coordinator.Options{})
	e.runConfig(azureCacheConfig(e, srv, azuretest.AccountKey))
	first, second := runCachePipelines(t, e)
	blobs := azureBlobs(t, srv.Container(t, "runner-cache"))
	if len(blobs) != 1 || !strings.HasPrefix(blobs[0], "ci/runner/") || !strings.Contains(blobs[0], "/project/") ||
		!strings.Contains(blobs[0], "/deps-main") {
		t.Errorf("container holds %q, want one ci/runner/<token>/project/<id>/deps-main… blob", blobs)
	}
	noSecretInTraces(t, e, []coordinator.PipelineView{first, second}, azuretest.AccountKey)
	noSecretInTraces(t, e, []coordinator.PipelineView{first, second}, "sig=")

	e.setCI(t, fallbackPipeline)
	fb := e.pipeline(3 * time.Minute)
	contains(t, e.coord.Trace(jobByName(t, fb, "build").ID), fmt.Sprintf("restored=pipeline-%d", second.ID))
}

// TestCacheAzureWrongKey: a cache the store refuses never fails the job;
// the trace says which store and what to check, and no key.
func TestCacheAzureWrongKey(t *testing.T) {
	t.Parallel()
	srv := azuretest.Start(t, "127.0.0.1")
	srv.CreateContainer(t, "runner-cache")
	e := newEnv(t, cachePipeline, coordinator.Options{})
	const wrong = "d3Jvbmcga2V5IGZvciBhenVyaXRl"
	e.runConfig(azureCacheConfig(e, srv, wrong))
	p := e.pipeline(3 * time.Minute)
	// (check then fails: without a restored cache it has no deps/.)
	if b := jobByName(t, p, "build"); b.Status != "success" {
		t.Fatalf("build: %s (a cache failure must not fail the job)\n%s", b.Status, e.coord.Trace(b.ID))
	}
	tr := e.coord.Trace(jobByName(t, p, "build").ID)
	contains(t, tr, "WARNING", "Azure Blob Storage refused the runner's pre-signed URL", "[runners.cache.azure]", srv.Endpoint+"/"+azuretest.AccountName+"/runner-cache/ci/")
	noSecretInTraces(t, e, []coordinator.PipelineView{p}, wrong)
	noSecretInTraces(t, e, []coordinator.PipelineView{p}, "sig=")
}

// startGCS runs fake-gcs-server's library; it serves signed URLs on its
// public host (without checking their signatures).
func startGCS(t *testing.T) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "runner-cache"})
	return srv
}

// gcsCacheConfig has a service account key file (a key made here): the
// runner signs the URLs with it; STORAGE_EMULATOR_HOST (in the runner's
// environment) points them at the emulator.
func gcsCacheConfig(t *testing.T, e *env, bucket string) string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyJSON, err := json.Marshal(map[string]string{"type": "service_account", "client_email": "ci-cache@project.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))})
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(e.dir, "gcs-key.json")
	if err := os.WriteFile(keyFile, keyJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	return e.config(1, fmt.Sprintf(`  cache_dir = %q
  [runners.cache]
    Type = "gcs"
    Path = "ci"
    [runners.cache.gcs]
      BucketName = %q
      CredentialsFile = %q
`, filepath.Join(e.dir, "cache"), bucket, keyFile))
}

// TestCacheRoundTripGCS: the runner signs V4 URLs with the credentials
// file's key; the helper moves the cache through them to fake-gcs-server.
func TestCacheRoundTripGCS(t *testing.T) {
	t.Parallel()
	srv := startGCS(t)
	e := newEnv(t, cachePipeline, coordinator.Options{})
	e.extraEnv = []string{"STORAGE_EMULATOR_HOST=" + strings.TrimPrefix(srv.URL(), "http://")}
	e.runConfig(gcsCacheConfig(t, e, "runner-cache"))
	first, second := runCachePipelines(t, e)
	list, err := srv.ListObjectsWithOptionsPaginated("runner-cache", fakestorage.ListOptions{})
	objs := list.Objects
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || !strings.HasPrefix(objs[0].Name, "ci/runner/") || !strings.Contains(objs[0].Name, "/project/") ||
		!strings.Contains(objs[0].Name, "/deps-main") {
		t.Errorf("bucket holds %d objects, want one ci/runner/<token>/project/<id>/deps-main…", len(objs))
	}
	noSecretInTraces(t, e, []coordinator.PipelineView{first, second}, "X-Goog-Signature")

	e.setCI(t, fallbackPipeline)
	fb := e.pipeline(3 * time.Minute)
	contains(t, e.coord.Trace(jobByName(t, fb, "build").ID), fmt.Sprintf("restored=pipeline-%d", second.ID))
}

func TestCacheGCSMissingBucket(t *testing.T) {
	t.Parallel()
	srv := startGCS(t)
	e := newEnv(t, cachePipeline, coordinator.Options{})
	e.extraEnv = []string{"STORAGE_EMULATOR_HOST=" + strings.TrimPrefix(srv.URL(), "http://")}
	e.runConfig(gcsCacheConfig(t, e, "no-such-bucket"))
	p := e.pipeline(3 * time.Minute)
	// (check then fails: without a restored cache it has no deps/.)
	if b := jobByName(t, p, "build"); b.Status != "success" {
		t.Fatalf("build: %s (a cache failure must not fail the job)\n%s", b.Status, e.coord.Trace(b.ID))
	}
	contains(t, e.coord.Trace(jobByName(t, p, "build").ID), "WARNING", "Google Cloud Storage has no such bucket or container", "[runners.cache.gcs]")
}

func azureBlobs(t *testing.T, c *container.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	pager := c.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	return names
}

func noSecretInTraces(t *testing.T, e *env, views []coordinator.PipelineView, secret string) {
	t.Helper()
	for _, v := range views {
		for _, j := range v.Jobs {
			if strings.Contains(string(e.coord.Trace(j.ID)), secret) {
				t.Errorf("job %s's trace holds a cache credential", j.Name)
			}
		}
	}
}

// setCI commits a new .gitlab-ci.yml for the next pipeline.
func (e *env) setCI(t *testing.T, ciYAML string) {
	t.Helper()
	repo := filepath.Join(e.dir, "repo")
	if err := os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte(ciYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGit(t, repo, "add", "-A")
	mustGit(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "ci")
}
