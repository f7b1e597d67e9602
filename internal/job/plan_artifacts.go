package job

// Stages that download the artifacts of the job's dependencies and upload
// its own artifacts.

func downloadArtifactsStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasDependencies(p) {
		return nil
	}
	return []Stage{placeholder(StageDownloadArtifacts, "Downloading artifacts", WhenOnSuccess, "artifact downloads are not supported by podrunner yet; dependencies skipped", shell)}
}

func uploadArtifactsStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasArtifacts(p) {
		return nil
	}
	return []Stage{
		placeholder(StageUploadArtifactsOK, "Uploading artifacts for successful job", WhenOnSuccess, "artifact uploads are not supported by podrunner yet; nothing uploaded", shell),
		placeholder(StageUploadArtifactsFail, "Uploading artifacts for failed job", WhenOnFailure, "artifact uploads are not supported by podrunner yet; nothing uploaded", shell),
	}
}

func hasArtifacts(p *Payload) bool {
	for _, a := range p.Artifacts {
		if len(a.Paths) > 0 || a.Untracked {
			return true
		}
	}
	return false
}

func hasDependencies(p *Payload) bool {
	for _, d := range p.Dependencies {
		if d.ArtifactsFile.Filename != "" {
			return true
		}
	}
	return false
}
