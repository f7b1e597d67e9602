package gitlab

import "slices"

// Failure reasons the runner produces (1.15). JobCanceled is internal.
const (
	ScriptFailure                   = "script_failure"
	RunnerSystemFailure             = "runner_system_failure"
	JobExecutionTimeout             = "job_execution_timeout"
	ImagePullFailure                = "image_pull_failure"
	UnknownFailure                  = "unknown_failure"
	RunnerConfigurationError        = "runner_configuration_error"
	RunnerExternalDependencyFailure = "runner_external_dependency_failure"
	RunnerInterrupted               = "runner_interrupted"
	JobCanceled                     = "job_canceled"
)

// alwaysAccepted are reasons every GitLab understands.
var alwaysAccepted = []string{ScriptFailure, RunnerSystemFailure, JobExecutionTimeout}

// compatibility maps newer reasons to the older ones they were split from.
var compatibility = map[string]string{
	ImagePullFailure:                RunnerSystemFailure,
	RunnerConfigurationError:        ScriptFailure,
	RunnerExternalDependencyFailure: RunnerSystemFailure,
}

// MapFailureReason maps reason to one GitLab accepts, given the job's
// features.failure_reasons: empty → script_failure; accepted (or one of
// script_failure, runner_system_failure, job_execution_timeout) → as is;
// else its compatibility fallback when accepted; else unknown_failure.
func MapFailureReason(reason string, accepted []string) string {
	if reason == "" {
		return ScriptFailure
	}
	ok := func(r string) bool { return slices.Contains(alwaysAccepted, r) || slices.Contains(accepted, r) }
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
