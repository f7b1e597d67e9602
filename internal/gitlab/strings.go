package gitlab

// String names for logs.

func (s RequestJobStatus) String() string {
	switch s {
	case JobReceived:
		return "received"
	case NoJob:
		return "no_job"
	case JobForbidden:
		return "forbidden"
	case JobUnavailable:
		return "unavailable"
	case JobFailed:
		return "failed"
	}
	return "unknown"
}

func (s UpdateState) String() string {
	switch s {
	case UpdateSucceeded:
		return "succeeded"
	case UpdateAcceptedNotComplete:
		return "accepted_not_complete"
	case UpdateTraceValidationFailed:
		return "trace_validation_failed"
	case UpdateAbort:
		return "abort"
	case UpdateFailed:
		return "failed"
	}
	return "unknown"
}

func (s PatchState) String() string {
	switch s {
	case PatchSucceeded:
		return "succeeded"
	case PatchNotFound:
		return "not_found"
	case PatchRangeMismatch:
		return "range_mismatch"
	case PatchAbort:
		return "abort"
	case PatchFailed:
		return "failed"
	}
	return "unknown"
}
