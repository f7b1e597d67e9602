// Package cache keeps job caches between pipelines: in a local directory
// (shell executor, a PVC on Kubernetes) or in an S3-compatible store,
// streamed in chunks.
package cache

import (
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

// FromConfig turns [runners.cache] into the settings the helper commands
// of the job's scripts receive; nil when no remote store is configured.
func FromConfig(c *config.Cache) *job.CacheStore {
	return nil
}
