package job

// Stages that restore the job's caches before its scripts and save them
// after.

// CacheStore is the remote cache store of the runner ([runners.cache]),
// as the helper commands need it.
type CacheStore struct {
	Type string // "s3"
}

func restoreCacheStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasCache(p) {
		return nil
	}
	return []Stage{placeholder(StageRestoreCache, "Restoring cache", WhenOnSuccess, "caches are not supported by podrunner yet; nothing restored", shell)}
}

func archiveCacheStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasCache(p) {
		return nil
	}
	return []Stage{
		placeholder(StageArchiveCache, "Saving cache for successful job", WhenOnSuccess, "caches are not supported by podrunner yet; nothing saved", shell),
		placeholder(StageArchiveCacheOnFail, "Saving cache for failed job", WhenOnFailure, "caches are not supported by podrunner yet; nothing saved", shell),
	}
}

func hasCache(p *Payload) bool {
	for _, c := range p.Cache {
		if len(c.Paths) > 0 || c.Untracked {
			return true
		}
	}
	return false
}
