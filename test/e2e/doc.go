// Package e2e holds end-to-end tests that run against the real single-node
// Kubernetes cluster of hack/cluster (API server, scheduler, controller
// manager, kubelet, containerd, runc). They skip unless PODRUNNER_E2E=1; run
//
//	hack/cluster/with-cluster go test -count=1 ./test/e2e/...
//
// Shared helpers live in internal/testcluster (testcluster.Get, Namespace,
// ServiceAccountConfig, WaitForPod, PodLogs). Each test works in its own
// namespace, so test files can be added here independently.
package e2e
