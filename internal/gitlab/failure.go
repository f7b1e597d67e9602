package gitlab

import "slices"

// FailureReason is a job's failure_reason as sent with PUT jobs/:id and
// listed in a job payload's features.failure_reasons.
type FailureReason string

// GitLab's failure_reason enum (Enums::Ci::CommitStatus.failure_reasons),
// the values GitLab stores for a failed job.
const (
	UnknownFailure                  FailureReason = "unknown_failure"
	ScriptFailure                   FailureReason = "script_failure"
	APIFailure                      FailureReason = "api_failure"
	StuckOrTimeoutFailure           FailureReason = "stuck_or_timeout_failure"
	RunnerSystemFailure             FailureReason = "runner_system_failure"
	MissingDependencyFailure        FailureReason = "missing_dependency_failure"
	RunnerUnsupported               FailureReason = "runner_unsupported"
	StaleSchedule                   FailureReason = "stale_schedule"
	JobExecutionTimeout             FailureReason = "job_execution_timeout"
	ArchivedFailure                 FailureReason = "archived_failure"
	UnmetPrerequisites              FailureReason = "unmet_prerequisites"
	SchedulerFailure                FailureReason = "scheduler_failure"
	DataIntegrityFailure            FailureReason = "data_integrity_failure"
	ForwardDeploymentFailure        FailureReason = "forward_deployment_failure"
	UserBlocked                     FailureReason = "user_blocked"
	ProjectDeleted                  FailureReason = "project_deleted"
	CIQuotaExceeded                 FailureReason = "ci_quota_exceeded"
	PipelineLoopDetected            FailureReason = "pipeline_loop_detected"
	NoMatchingRunner                FailureReason = "no_matching_runner"
	TraceSizeExceeded               FailureReason = "trace_size_exceeded"
	BuildsDisabled                  FailureReason = "builds_disabled"
	EnvironmentCreationFailure      FailureReason = "environment_creation_failure"
	DeploymentRejected              FailureReason = "deployment_rejected"
	FailedOutdatedDeploymentJob     FailureReason = "failed_outdated_deployment_job"
	JobExecutionServerTimeout       FailureReason = "job_execution_server_timeout"
	StuckPendingWithMatchingRunners FailureReason = "stuck_pending_with_matching_runners"
	StuckPendingNoMatchingRunners   FailureReason = "stuck_pending_no_matching_runners"
	NoUpdatesRunning                FailureReason = "no_updates_running"
	NoUpdatesCanceling              FailureReason = "no_updates_canceling"
	ServerTimeoutRunning            FailureReason = "server_timeout_running"
	ServerTimeoutCanceling          FailureReason = "server_timeout_canceling"
	RunnerConfigurationError        FailureReason = "runner_configuration_error"
	RunnerExternalDependencyFailure FailureReason = "runner_external_dependency_failure"
	RunnerInterrupted               FailureReason = "runner_interrupted"
	ProtectedEnvironmentFailure     FailureReason = "protected_environment_failure"
	InsufficientBridgePermissions   FailureReason = "insufficient_bridge_permissions"
	DownstreamBridgeProjectNotFound FailureReason = "downstream_bridge_project_not_found"
	InvalidBridgeTrigger            FailureReason = "invalid_bridge_trigger"
	UpstreamBridgeProjectNotFound   FailureReason = "upstream_bridge_project_not_found"
	InsufficientUpstreamPermissions FailureReason = "insufficient_upstream_permissions"
	BridgePipelineIsChildPipeline   FailureReason = "bridge_pipeline_is_child_pipeline"
	DownstreamPipelineCreationFail  FailureReason = "downstream_pipeline_creation_failed"
	SecretsProviderNotFound         FailureReason = "secrets_provider_not_found"
	ReachedMaxDescendantDepth       FailureReason = "reached_max_descendant_pipelines_depth"
	IPRestrictionFailure            FailureReason = "ip_restriction_failure"
	ReachedMaxPipelineHierarchySize FailureReason = "reached_max_pipeline_hierarchy_size"
)

// Reasons GitLab Runner produces that are not in GitLab's enum: they are
// always mapped (MapFailureReason) before they reach GitLab.
const (
	// ImagePullFailure falls back to runner_system_failure unless the
	// job's features.failure_reasons lists it.
	ImagePullFailure FailureReason = "image_pull_failure"
	// JobCanceled is internal: GitLab keeps a canceled job's state
	// whatever the runner reports, and the reason maps to unknown_failure.
	JobCanceled FailureReason = "job_canceled"
)

// KnownFailureReasons is GitLab's failure_reason enum, in its order.
var KnownFailureReasons = []FailureReason{
	UnknownFailure, ScriptFailure, APIFailure, StuckOrTimeoutFailure, RunnerSystemFailure,
	MissingDependencyFailure, RunnerUnsupported, StaleSchedule, JobExecutionTimeout,
	ArchivedFailure, UnmetPrerequisites, SchedulerFailure, DataIntegrityFailure,
	ForwardDeploymentFailure, UserBlocked, ProjectDeleted, CIQuotaExceeded, PipelineLoopDetected,
	NoMatchingRunner, TraceSizeExceeded, BuildsDisabled, EnvironmentCreationFailure,
	DeploymentRejected, FailedOutdatedDeploymentJob, JobExecutionServerTimeout,
	StuckPendingWithMatchingRunners, StuckPendingNoMatchingRunners, NoUpdatesRunning,
	NoUpdatesCanceling, ServerTimeoutRunning, ServerTimeoutCanceling, RunnerConfigurationError,
	RunnerExternalDependencyFailure, RunnerInterrupted, ProtectedEnvironmentFailure,
	InsufficientBridgePermissions, DownstreamBridgeProjectNotFound, InvalidBridgeTrigger,
	UpstreamBridgeProjectNotFound, InsufficientUpstreamPermissions, BridgePipelineIsChildPipeline,
	DownstreamPipelineCreationFail, SecretsProviderNotFound, ReachedMaxDescendantDepth,
	IPRestrictionFailure, ReachedMaxPipelineHierarchySize,
}

// alwaysAccepted are reasons every GitLab understands.
var alwaysAccepted = []FailureReason{ScriptFailure, RunnerSystemFailure, JobExecutionTimeout}

// compatibility maps newer reasons to the older ones they were split from.
var compatibility = map[FailureReason]FailureReason{
	ImagePullFailure:                RunnerSystemFailure,
	RunnerConfigurationError:        ScriptFailure,
	RunnerExternalDependencyFailure: RunnerSystemFailure,
}

// MapFailureReason maps reason to one GitLab accepts, given the job's
// features.failure_reasons: empty → script_failure; accepted (or one of
// script_failure, runner_system_failure, job_execution_timeout) → as is;
// else its compatibility fallback when accepted; else unknown_failure.
func MapFailureReason(reason FailureReason, accepted []FailureReason) FailureReason {
	if reason == "" {
		return ScriptFailure
	}
	ok := func(r FailureReason) bool { return slices.Contains(alwaysAccepted, r) || slices.Contains(accepted, r) }
	// Bounded walk through the fallbacks, in case the table ever chains.
	for range 10 {
		if ok(reason) {
			return reason
		}
		next, found := compatibility[reason]
		if !found {
			return UnknownFailure
		}
		reason = next
	}
	return UnknownFailure
}
