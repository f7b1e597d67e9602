package job

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestCacheTargetStoreArgs: each store's settings go on the helper's
// command line, its credentials only into the command's environment.
func TestCacheTargetStoreArgs(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(keyFile, []byte(`{"type":"service_account"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Payload{}
	p.JobInfo.ProjectID = 7
	for _, tc := range []struct {
		name     string
		store    *CacheStore
		args     []string
		env      []string
		errorful string
	}{
		{"azure key", &CacheStore{Type: "azure", Shared: true, Azure: &CacheAzure{AccountName: "acct", AccountKey: "s3cr3t==", ContainerName: "c", StorageDomain: "blob.core.usgovcloudapi.net"}},
			[]string{"--azure-object", "project/7/k", "--azure-account-name", "acct", "--azure-container-name", "c", "--azure-storage-domain", "blob.core.usgovcloudapi.net"},
			[]string{EnvCacheAzureAccountKey + "=s3cr3t=="}, ""},
		{"azure identity", &CacheStore{Type: "azure", Shared: true, Azure: &CacheAzure{AccountName: "acct", ContainerName: "c"}},
			[]string{"--azure-object", "project/7/k", "--azure-account-name", "acct", "--azure-container-name", "c"}, nil, ""},
		{"gcs file", &CacheStore{Type: "gcs", Path: "ci", Shared: true, GCS: &CacheGCS{BucketName: "b", CredentialsFile: keyFile}},
			[]string{"--gcs-object", "ci/project/7/k", "--gcs-bucket-name", "b"},
			[]string{EnvCacheGCSCredentials + `='{"type":"service_account"}'`}, ""},
		{"gcs key", &CacheStore{Type: "gcs", Shared: true, GCS: &CacheGCS{BucketName: "b", AccessID: "sa@p", PrivateKey: "pem"}},
			[]string{"--gcs-object", "project/7/k", "--gcs-bucket-name", "b"},
			[]string{EnvCacheGCSAccessID + "=sa@p", EnvCacheGCSPrivateKey + "=pem"}, ""},
		{"gcs default", &CacheStore{Type: "gcs", Shared: true, GCS: &CacheGCS{BucketName: "b"}},
			[]string{"--gcs-object", "project/7/k", "--gcs-bucket-name", "b"}, nil, ""},
		{"gcs missing file", &CacheStore{Type: "gcs", Shared: true, GCS: &CacheGCS{BucketName: "b", CredentialsFile: "/nonexistent/key.json"}},
			nil, nil, "[runners.cache.gcs] CredentialsFile"},
	} {
		target := cacheTarget{store: tc.store, p: p}
		args, env, err := target.args("k")
		if tc.errorful != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errorful) {
				t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.errorful)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(args, tc.args) || !reflect.DeepEqual(env, tc.env) {
			t.Errorf("%s:\nargs %q\nwant %q\nenv  %q\nwant %q", tc.name, args, tc.args, env, tc.env)
		}
	}
}
