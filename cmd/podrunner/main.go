// Command podrunner is a GitLab-compatible CI runner whose main executor
// runs each job as a Kubernetes pod.
package main

import "os"

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}
