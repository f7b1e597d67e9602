// Package cache keeps job caches between pipelines: in a local directory
// (shell executor, a PVC or host path on Kubernetes) or in an S3-compatible
// store, Azure Blob Storage or Google Cloud Storage, as zip archives in GitLab Runner's layout, in bounded memory both ways.
package cache

import (
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

// FromConfig turns [runners.cache] into the settings the helper commands
// of the job's scripts receive; nil when no remote store is configured.
// An unsupported Type is kept: the job's scripts report it and fall back
// to the local cache_dir (as GitLab Runner does without a usable adapter).
func FromConfig(c *config.Cache) *job.CacheStore {
	if c == nil || c.Type == "" {
		return nil
	}
	s := &job.CacheStore{Type: c.Type, Path: c.Path, Shared: c.Shared, MaxUploadedArchiveSize: c.MaxUploadedArchiveSize}
	if c.S3 != nil {
		s.S3 = &job.CacheS3{
			ServerAddress: c.S3.ServerAddress, BucketName: c.S3.BucketName, BucketLocation: c.S3.BucketLocation,
			Insecure: c.S3.Insecure, PathStyle: c.S3.PathStyle, AuthenticationType: c.S3.AuthenticationType,
			AccessKey: c.S3.AccessKey, SecretKey: c.S3.SecretKey, SessionToken: c.S3.SessionToken,
		}
	}
	if c.Azure != nil {
		s.Azure = &job.CacheAzure{AccountName: c.Azure.AccountName, AccountKey: c.Azure.AccountKey,
			ContainerName: c.Azure.ContainerName, StorageDomain: c.Azure.StorageDomain}
	}
	if c.GCS != nil {
		s.GCS = &job.CacheGCS{BucketName: c.GCS.BucketName, CredentialsFile: c.GCS.CredentialsFile,
			AccessID: c.GCS.AccessID, PrivateKey: c.GCS.PrivateKey}
	}
	return s
}
