package gitlab

import (
	"slices"
	"testing"
)

// TestFailureReasonsKnownToGitLab spells every reason's wire value as
// GitLab's enum (Enums::Ci::CommitStatus) does: a typo in a constant, a
// value GitLab does not store, or a runner-only reason without a mapping
// to one it does, fails here.
func TestFailureReasonsKnownToGitLab(t *testing.T) {
	tests := []struct {
		reason FailureReason
		wire   string
		inEnum bool // false: runner-side only, mapped before it is sent
	}{
		{UnknownFailure, "unknown_failure", true},
		{ScriptFailure, "script_failure", true},
		{APIFailure, "api_failure", true},
		{StuckOrTimeoutFailure, "stuck_or_timeout_failure", true},
		{RunnerSystemFailure, "runner_system_failure", true},
		{MissingDependencyFailure, "missing_dependency_failure", true},
		{RunnerUnsupported, "runner_unsupported", true},
		{StaleSchedule, "stale_schedule", true},
		{JobExecutionTimeout, "job_execution_timeout", true},
		{ArchivedFailure, "archived_failure", true},
		{UnmetPrerequisites, "unmet_prerequisites", true},
		{SchedulerFailure, "scheduler_failure", true},
		{DataIntegrityFailure, "data_integrity_failure", true},
		{ForwardDeploymentFailure, "forward_deployment_failure", true},
		{UserBlocked, "user_blocked", true},
		{ProjectDeleted, "project_deleted", true},
		{CIQuotaExceeded, "ci_quota_exceeded", true},
		{PipelineLoopDetected, "pipeline_loop_detected", true},
		{NoMatchingRunner, "no_matching_runner", true},
		{TraceSizeExceeded, "trace_size_exceeded", true},
		{BuildsDisabled, "builds_disabled", true},
		{EnvironmentCreationFailure, "environment_creation_failure", true},
		{DeploymentRejected, "deployment_rejected", true},
		{FailedOutdatedDeploymentJob, "failed_outdated_deployment_job", true},
		{JobExecutionServerTimeout, "job_execution_server_timeout", true},
		{StuckPendingWithMatchingRunners, "stuck_pending_with_matching_runners", true},
		{StuckPendingNoMatchingRunners, "stuck_pending_no_matching_runners", true},
		{NoUpdatesRunning, "no_updates_running", true},
		{NoUpdatesCanceling, "no_updates_canceling", true},
		{ServerTimeoutRunning, "server_timeout_running", true},
		{ServerTimeoutCanceling, "server_timeout_canceling", true},
		{RunnerConfigurationError, "runner_configuration_error", true},
		{RunnerExternalDependencyFailure, "runner_external_dependency_failure", true},
		{RunnerInterrupted, "runner_interrupted", true},
		{ProtectedEnvironmentFailure, "protected_environment_failure", true},
		{InsufficientBridgePermissions, "insufficient_bridge_permissions", true},
		{DownstreamBridgeProjectNotFound, "downstream_bridge_project_not_found", true},
		{InvalidBridgeTrigger, "invalid_bridge_trigger", true},
		{UpstreamBridgeProjectNotFound, "upstream_bridge_project_not_found", true},
		{InsufficientUpstreamPermissions, "insufficient_upstream_permissions", true},
		{BridgePipelineIsChildPipeline, "bridge_pipeline_is_child_pipeline", true},
		{DownstreamPipelineCreationFail, "downstream_pipeline_creation_failed", true},
		{SecretsProviderNotFound, "secrets_provider_not_found", true},
		{ReachedMaxDescendantDepth, "reached_max_descendant_pipelines_depth", true},
		{IPRestrictionFailure, "ip_restriction_failure", true},
		{ReachedMaxPipelineHierarchySize, "reached_max_pipeline_hierarchy_size", true},
		{ImagePullFailure, "image_pull_failure", false},
		{JobCanceled, "job_canceled", false},
	}
	inTable := 0
	for _, tt := range tests {
		if string(tt.reason) != tt.wire {
			t.Errorf("constant for %s is %q", tt.wire, tt.reason)
		}
		if got := slices.Contains(KnownFailureReasons, tt.reason); got != tt.inEnum {
			t.Errorf("%s in KnownFailureReasons: %v, want %v", tt.reason, got, tt.inEnum)
		}
		if tt.inEnum {
			inTable++
		}
		// Whatever the runner produces reaches a GitLab with the whole
		// enum as a value it stores.
		if got := MapFailureReason(tt.reason, KnownFailureReasons); !slices.Contains(KnownFailureReasons, got) {
			t.Errorf("MapFailureReason(%s, all of GitLab's) = %s, not in GitLab's enum", tt.reason, got)
		}
	}
	if inTable != len(KnownFailureReasons) {
		t.Errorf("KnownFailureReasons has %d values, the table %d", len(KnownFailureReasons), inTable)
	}
	seen := map[FailureReason]bool{}
	for _, r := range KnownFailureReasons {
		if seen[r] {
			t.Errorf("KnownFailureReasons lists %s twice", r)
		}
		seen[r] = true
	}
}
