// Package presign makes the pre-signed URLs through which the cache helper
// in a job reaches a remote cache store (S3, Azure Blob Storage, Google
// Cloud Storage), as GitLab Runner does: the runner holds the store's
// credentials and signs one URL per object and operation; the helper
// (internal/cache's HTTP store) only does plain GET and PUT and never
// links a cloud SDK.
package presign

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

// MaxTTL bounds the lifetime of every URL: S3's SigV4 and GCS's V4
// signatures allow at most 7 days, and a shorter bound keeps a leaked
// URL's use short for Azure too.
const MaxTTL = 7 * 24 * time.Hour

// clampTTL bounds ttl to (0, MaxTTL].
func clampTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 || ttl > MaxTTL {
		return MaxTTL
	}
	return ttl
}

// FromConfig turns [runners.cache] into the store the job's scripts use;
// nil when no remote store is configured. Settings that keep the store
// from being used are kept in the result's Err: the job's log says them
// and caches stay in the local cache_dir (as GitLab Runner does without a
// usable adapter).
func FromConfig(c *config.Cache) *job.CacheStore {
	if c == nil || c.Type == "" {
		return nil
	}
	s := &job.CacheStore{Type: c.Type, Path: c.Path, Shared: c.Shared, MaxUploadedArchiveSize: c.MaxUploadedArchiveSize}
	s.Signer, s.Err = New(context.Background(), c)
	return s
}

// New builds the signer of the configured store (no request is made,
// except for GCS's default credentials, which are looked up).
func New(ctx context.Context, c *config.Cache) (job.CacheURLSigner, error) {
	switch c.Type {
	case "s3":
		if c.S3 == nil {
			return nil, errors.New("[runners.cache.s3] BucketName is not set")
		}
		return NewS3(S3Config{CacheS3: *c.S3})
	case "azure":
		if c.Azure == nil {
			return nil, errors.New("[runners.cache.azure] AccountName and ContainerName must be set")
		}
		return NewAzure(AzureConfig{CacheAzure: *c.Azure})
	case "gcs":
		if c.GCS == nil {
			return nil, errors.New("[runners.cache.gcs] BucketName is not set")
		}
		return NewGCS(ctx, GCSConfig{CacheGCS: *c.GCS})
	}
	return nil, fmt.Errorf("[runners.cache] Type %q is not supported: use \"s3\", \"azure\" or \"gcs\"", c.Type)
}

// IAM reports whether S3 credentials come from the environment rather
// than from AccessKey/SecretKey: AuthenticationType "iam", or empty
// without an AccessKey (GitLab Runner's rule).
func IAM(c config.CacheS3) bool {
	switch strings.ToLower(c.AuthenticationType) {
	case "iam":
		return true
	case "":
		return c.AccessKey == ""
	}
	return false
}
