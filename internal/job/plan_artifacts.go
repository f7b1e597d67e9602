package job

// Stages that download the artifacts of the job's dependencies and upload
// its own artifacts. As GitLab Runner, the stage scripts call the helper
// binary (podrunner artifacts-downloader / artifacts-uploader), which
// streams archives between the project directory and GitLab; the job
// token reaches it through $CI_JOB_TOKEN, never its command line.

import (
	"net/url"
	"strconv"
	"strings"
)

// Artifact formats and types (artifact_format, artifact_type) podrunner
// defaults to.
const (
	ArtifactFormatZip   = "zip"
	ArtifactFormatGzip  = "gzip"
	ArtifactFormatRaw   = "raw"
	ArtifactTypeArchive = "archive"
)

// artifactsURL is the GitLab URL the helper talks to: clone_url when the
// runner has one (GitLab is reachable there from where jobs run), else
// CI_SERVER_URL.
func artifactsURL(vars Variables, opts ScriptOptions) string {
	if opts.CloneURL != "" {
		if u, err := url.Parse(opts.CloneURL); err == nil && u.Host != "" {
			u.User = nil
			u.RawQuery, u.Fragment = "", ""
			return strings.TrimSuffix(u.String(), "/")
		}
	}
	return vars.Get("CI_SERVER_URL")
}

func downloadArtifactsStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasDependencies(p) {
		return nil
	}
	helper := helperPath(opts)
	var w scriptWriter
	w.exports(vars)
	w.command("cd", vars.Get("CI_PROJECT_DIR"))
	for _, d := range p.Dependencies {
		if d.ArtifactsFile.Filename == "" {
			continue
		}
		w.notice("Downloading artifacts for %s (%d)...", d.Name, d.ID)
		// The dependency's own token.
		w.helperCall(d.Token, helper, "artifacts-downloader", "--url", artifactsURL(vars, opts), "--id", strconv.FormatInt(d.ID, 10), "--name", d.Name)
	}
	return []Stage{{Name: StageDownloadArtifacts, Title: "Downloading artifacts", Kind: KindSystem, When: WhenOnSuccess, Script: w.finish(shell)}}
}

// helperCall writes a helper command with CI_JOB_TOKEN set to token for
// that command only (an assignment, never on its command line).
func (w *scriptWriter) helperCall(token, helper string, args ...string) {
	q := make([]string, 0, len(args)+1)
	q = append(q, quote(helper))
	for _, a := range args {
		q = append(q, quote(a))
	}
	w.line("CI_JOB_TOKEN=" + quote(token) + " " + strings.Join(q, " "))
}

// artifactWhen checks artifacts:when (empty: on_success).
func artifactWhen(raw string) string {
	switch raw {
	case WhenOnFailure, WhenAlways:
		return raw
	}
	return WhenOnSuccess
}

func uploadArtifactsStages(p *Payload, vars Variables, opts ScriptOptions, shell string) []Stage {
	if !hasArtifacts(p) {
		return nil
	}
	helper := helperPath(opts)
	var stages []Stage
	for _, st := range []struct{ name, title, when string }{
		{StageUploadArtifactsOK, "Uploading artifacts for successful job", WhenOnSuccess},
		{StageUploadArtifactsFail, "Uploading artifacts for failed job", WhenOnFailure},
	} {
		var w scriptWriter
		w.exports(vars)
		w.command("cd", vars.Get("CI_PROJECT_DIR"))
		n := 0
		for _, a := range p.Artifacts {
			if len(a.Paths) == 0 && !a.Untracked {
				continue
			}
			if when := artifactWhen(a.When); when != WhenAlways && when != st.when {
				continue
			}
			if n == 0 {
				w.linef("if %s artifacts-uploader --help >/dev/null 2>&1; then", quote(helper))
			}
			n++
			args := []string{"artifacts-uploader", "--url", artifactsURL(vars, opts), "--id", strconv.FormatInt(p.ID, 10)}
			for _, path := range expandPaths(a.Paths, vars) {
				args = append(args, "--path", path)
			}
			for _, ex := range expandPaths(a.Exclude, vars) {
				args = append(args, "--exclude", ex)
			}
			if a.Untracked {
				args = append(args, "--untracked")
			}
			format, typ := a.Format, a.Type
			if format == "" {
				format = ArtifactFormatZip
			}
			if typ == "" {
				typ = ArtifactTypeArchive
			}
			args = append(args, "--artifact-format", format, "--artifact-type", typ)
			if name := vars.ExpandValue(a.Name); name != "" {
				args = append(args, "--name", name)
			}
			if a.ExpireIn != "" {
				args = append(args, "--expire-in", a.ExpireIn)
			}
			w.notice("Uploading artifacts...")
			w.helperCall(p.Token, helper, args...)
		}
		if n == 0 {
			// Kept (not skipped) so the trace says why nothing was sent.
			if st.when == WhenOnFailure {
				w.notice("No artifacts to upload for a failed job (artifacts:when is on_success)")
			} else {
				w.notice("No artifacts to upload for a successful job (artifacts:when is on_failure)")
			}
		} else {
			w.line("else")
			w.warning("Missing %s. Uploading artifacts is disabled.", helper)
			w.line("fi")
		}
		stages = append(stages, Stage{Name: st.name, Title: st.title, Kind: KindSystem, When: st.when, Script: w.finish(shell)})
	}
	return stages
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

// expandPaths expands the job's variables in artifacts: and cache: paths
// (GitLab expands both, e.g. `paths: [$CACHEDIR/**.txt]`).
func expandPaths(paths []string, vars Variables) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		out = append(out, vars.ExpandValue(p))
	}
	return out
}
