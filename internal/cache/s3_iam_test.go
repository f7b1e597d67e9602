package cache

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/cache/s3test"
)

// TestS3IAMWebIdentity: AuthenticationType = "iam" takes its credentials
// from the environment chain, here a web identity token file exchanged at
// STS as on EKS with IRSA; no key is in the configuration.
func TestS3IAMWebIdentity(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "cache")
	sts := s3test.StartSTS(t, "arn:aws:iam::123456789012:role/ci-cache", "irsa-token-1")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	for k, v := range sts.Env() {
		t.Setenv(k, v)
	}
	iam := func(c *S3Config) { c.AuthenticationType = "iam"; c.AccessKey, c.SecretKey = "", "" }

	s := newTestS3(t, srv, "cache", iam)
	testArchiveRoundTrip(t, s, "runner/abc/project/1/iam")
	if sts.Calls() == 0 {
		t.Error("the credentials did not come from STS")
	}

	// A token STS refuses: the store's error says the credentials failed.
	if err := os.WriteFile(sts.TokenFile, []byte("stolen"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := newTestS3(t, srv, "cache", iam)
	err := bad.Put(context.Background(), "k", strings.NewReader("x"))
	if err == nil || !strings.Contains(err.Error(), "AWS_WEB_IDENTITY_TOKEN_FILE") || strings.Contains(err.Error(), "AccessKey and SecretKey") {
		t.Errorf("put with a refused token: %v", err)
	}
}
