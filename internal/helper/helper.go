// Package helper holds the commands that run inside a job's environment
// (GitLab Runner's helper role): the artifacts uploader and downloader and
// the cache archiver and extractor. Both binaries carry them:
// podrunner-helper, the slim image of job pods, and podrunner itself, which
// the shell executor calls. The Kubernetes executor's agent is
// podrunner-helper's alone (package agentcmd).
package helper

import "github.com/spf13/cobra"

// Commands are the helper's commands, to be added to a root made by
// cli.NewRoot.
func Commands() []*cobra.Command {
	return []*cobra.Command{
		newArtifactsUploaderCmd(), newArtifactsDownloaderCmd(),
		newCacheExtractorCmd(), newCacheArchiverCmd(),
	}
}
