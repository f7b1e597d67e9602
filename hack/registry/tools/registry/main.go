// Command registry is the CNCF distribution registry (cmd/registry of
// github.com/distribution/distribution/v3) with only what the local cluster
// needs linked in: the filesystem storage driver and htpasswd auth. Leaving
// out the cloud storage drivers (S3, GCS, Azure) keeps the build cheap.
package main

import (
	"os"

	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if err := registry.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
