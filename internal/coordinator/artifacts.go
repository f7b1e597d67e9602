package coordinator

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/job"
)

// Job artifacts as GitLab (Rails behind Workhorse) stores and serves them:
// uploads checked against the job token, the running state and the size
// limit, kept on disk per artifact_type, served to jobs of the same
// project until they expire; dotenv reports become variables of the jobs
// that take the uploader's artifacts.

// DefaultMaxArtifactsSize is GitLab's default maximum artifacts size
// (100 MB, the "Maximum artifacts size" admin setting).
const DefaultMaxArtifactsSize = 100 << 20

// defaultArtifactsExpireIn is GitLab's default_artifacts_expire_in.
const defaultArtifactsExpireIn = 30 * 24 * time.Hour

// dotenvSizeLimit is the dotenv_size plan limit (of the uploaded file).
const dotenvSizeLimit = 5 * 1024

// DefaultMaxDotenvVariables is the dotenv_variables application limit's
// column default.
const DefaultMaxDotenvVariables = 20

type storedArtifact struct {
	typ, format, filename, path string
	size                        int64
	expireAt                    time.Time // zero: never
}

func (a *storedArtifact) expired(now time.Time) bool {
	return !a.expireAt.IsZero() && !now.Before(a.expireAt)
}

// artifactFormats is Ci::JobArtifact::TYPE_AND_FORMAT_PAIRS for the types
// a runner uploads.
var artifactFormats = map[string]string{
	"archive": "zip", "metadata": "gzip", "trace": "raw", "junit": "gzip", "dotenv": "gzip",
	"cobertura": "gzip", "metrics": "gzip", "lsif": "zip", "cyclonedx": "gzip", "annotations": "gzip",
	"jacoco": "gzip", "repository_xray": "gzip",
	"codequality": "raw", "sast": "raw", "secret_detection": "raw", "dependency_scanning": "raw",
	"container_scanning": "raw", "cluster_image_scanning": "raw", "dast": "raw", "license_scanning": "raw",
	"performance": "raw", "browser_performance": "raw", "load_performance": "raw", "terraform": "raw",
	"requirements": "raw", "requirements_v2": "raw", "accessibility": "raw", "api_fuzzing": "raw",
	"coverage_fuzzing": "raw", "network_referee": "gzip",
}

// artifactFileNames is Ci::JobArtifact::DEFAULT_FILE_NAMES (the payload's
// name of a report entry).
var artifactFileNames = map[string]string{
	"archive": "artifacts.zip", "metadata": "metadata.gz", "trace": "job.log", "junit": "junit.xml.gz",
	"dotenv": ".env.gz", "cobertura": "cobertura-coverage.xml.gz", "metrics": "metrics.txt.gz",
	"codequality": "gl-code-quality-report.json", "sast": "gl-sast-report.json",
	"secret_detection": "gl-secret-detection-report.json", "dependency_scanning": "gl-dependency-scanning-report.json",
	"container_scanning": "gl-container-scanning-report.json", "dast": "gl-dast-report.json",
	"license_scanning": "gl-license-scanning-report.json", "terraform": "tfplan.json",
	"accessibility": "gl-accessibility.json", "cyclonedx": "gl-sbom.cdx.json.gz",
	"annotations": "gl-annotations.json.gz", "lsif": "lsif.json",
}

// payloadArtifacts is BuildRunnerPresenter#artifacts: the archive entry
// (when there are paths or untracked), then one entry per report, always
// uploaded, in its own format.
func payloadArtifacts(a *ciyaml.Artifacts) []job.Artifact {
	out := []job.Artifact{}
	if a == nil {
		return out
	}
	if a.Untracked || a.Paths != nil {
		when := a.When
		if when == "" {
			when = ciyaml.WhenOnSuccess
		}
		out = append(out, job.Artifact{
			Name: a.Name, Untracked: a.Untracked, Paths: slices.Clone(a.Paths), Exclude: slices.Clone(a.Exclude),
			When: when, Type: "archive", Format: "zip", ExpireIn: a.ExpireIn,
		})
	}
	for _, typ := range slices.Sorted(maps.Keys(a.Reports)) {
		format := artifactFormats[typ]
		if format == "" {
			format = "raw"
		}
		out = append(out, job.Artifact{
			Name: artifactFileNames[typ], Paths: slices.Clone(a.Reports[typ]), When: ciyaml.WhenAlways,
			Type: typ, Format: format, ExpireIn: a.ExpireIn,
		})
	}
	return out
}

// payloadCache is Ci::Build#cache with the keys computed at creation.
func payloadCache(j *jobState) []job.Cache {
	out := []job.Cache{}
	for i, c := range j.def.Cache {
		suffix := cacheSuffix(j.pipeline.commit, c)
		key := "default"
		if i < len(j.cacheKeys) {
			key = j.cacheKeys[i]
		}
		policy, when := c.Policy, c.When
		if policy == "" {
			policy = "pull-push"
		}
		if when == "" {
			when = ciyaml.WhenOnSuccess
		}
		fallback := []string{}
		for _, k := range c.FallbackKeys {
			fallback = append(fallback, k+suffix)
		}
		out = append(out, job.Cache{
			Key: key + suffix, Untracked: c.Untracked, Policy: policy, Paths: slices.Clone(c.Paths),
			When: when, FallbackKeys: fallback,
		})
	}
	return out
}

// dependencyJobsLocked is Ci::BuildDependencies#local: without needs, the
// latest jobs of earlier stages; with needs, the needed jobs with
// artifacts: true; narrowed to `dependencies:` when given (empty: none).
func (s *Server) dependencyJobsLocked(j *jobState) []*jobState {
	deps := j.def.Dependencies
	if deps != nil && len(deps) == 0 {
		return nil
	}
	var cand []*jobState
	if j.dag {
		for _, n := range j.needs {
			if n.artifacts {
				cand = append(cand, jobsNamed(j.pipeline, n.name)...)
			}
		}
	} else {
		for _, o := range latestLocked(j.pipeline) {
			if o.stageIdx < j.stageIdx {
				cand = append(cand, o)
			}
		}
	}
	if deps == nil {
		return cand
	}
	var out []*jobState
	for _, o := range cand {
		if slices.ContainsFunc(deps, func(n string) bool { return matchesName(o.def, n) }) {
			out = append(out, o)
		}
	}
	return out
}

// dependenciesLocked is the payload's dependencies: every dependency job,
// with the running job's token (GitLab's Dependency entity), and its
// archive only while available (not expired).
func (s *Server) dependenciesLocked(j *jobState) []job.Dependency {
	out := []job.Dependency{}
	now := s.now()
	for _, o := range s.dependencyJobsLocked(j) {
		d := job.Dependency{ID: o.id, Token: j.token, Name: o.def.Name}
		if a := o.files["archive"]; a != nil && !a.expired(now) {
			d.ArtifactsFile.Filename = a.filename
			d.ArtifactsFile.Size = a.size
		}
		out = append(out, d)
	}
	return out
}

// validDependenciesLocked is Ci::Build#valid_dependency? over the
// dependencies: one whose artifacts expired fails the job with
// missing_dependency_failure when a runner picks it.
func (s *Server) validDependenciesLocked(j *jobState) bool {
	now := s.now()
	for _, o := range s.dependencyJobsLocked(j) {
		for _, a := range o.files {
			if a.expired(now) {
				return false
			}
		}
	}
	return true
}

func (s *Server) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

func (s *Server) maxArtifactsSize() int64 {
	if s.opts.MaxArtifactsSize > 0 {
		return s.opts.MaxArtifactsSize
	}
	return DefaultMaxArtifactsSize
}

// badParam answers like Grape's parameter validation.
func badParam(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
}

// handleUploadArtifacts is POST jobs/:id/artifacts behind Workhorse: the
// body is streamed to disk, never held in memory.
func (s *Server) handleUploadArtifacts(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	tok := jobToken(r, q.Get("job_token"))
	s.mu.Lock()
	j := s.authJobLocked(w, id, tok, true)
	s.mu.Unlock()
	if j == nil {
		return
	}
	typ, format := q.Get("artifact_type"), q.Get("artifact_format")
	if typ == "" {
		typ = "archive"
	}
	if format == "" {
		format = "zip"
	}
	want, known := artifactFormats[typ]
	if !known {
		badParam(w, "artifact_type does not have a valid value")
		return
	}
	if format != "zip" && format != "gzip" && format != "raw" {
		badParam(w, "artifact_format does not have a valid value")
		return
	}
	if want != format {
		writeMessage(w, http.StatusBadRequest, "Invalid file format with specified file type")
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "400 Bad request - file is missing")
		return
	}
	var part interface {
		io.Reader
		FileName() string
	}
	for {
		p, err := mr.NextPart()
		if err != nil {
			writeMessage(w, http.StatusBadRequest, "400 Bad request - file is missing")
			return
		}
		if p.FormName() == "file" {
			part = p
			break
		}
	}
	if typ == "metadata" {
		// Workhorse makes the archive's metadata itself; a runner's
		// metadata upload is accepted and dropped.
		_, _ = io.Copy(io.Discard, part)
		writeJSON(w, http.StatusCreated, map[string]any{"id": id})
		return
	}
	dir := filepath.Join(s.dir, "artifacts", strconv.FormatInt(id, 10))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		writeMessage(w, http.StatusInternalServerError, "500 Internal Server Error")
		return
	}
	tmp, err := os.CreateTemp(dir, typ+".upload-*")
	if err != nil {
		writeMessage(w, http.StatusInternalServerError, "500 Internal Server Error")
		return
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	limit := s.maxArtifactsSize()
	n, err := io.Copy(tmp, io.LimitReader(part, limit+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if n > limit {
		writeMessage(w, http.StatusRequestEntityTooLarge, "413 Request Entity Too Large")
		return
	}
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "400 Bad request - could not read file")
		return
	}
	a := &storedArtifact{typ: typ, format: format, filename: part.FileName(), size: n,
		path: filepath.Join(dir, typ)}
	if a.filename == "" {
		a.filename = artifactFileNames[typ]
	}
	// GitLab: expire_in from the request, else the instance default; a
	// value ChronicDuration cannot read (or "never") keeps them forever.
	expireIn := q.Get("expire_in")
	switch d, err := ciyaml.ParseDuration(expireIn); {
	case expireIn == "":
		a.expireAt = s.now().Add(defaultArtifactsExpireIn)
	case err == nil:
		a.expireAt = s.now().Add(d)
	}
	var dotenv []job.Variable
	if typ == "dotenv" {
		dotenv, err = parseDotenvFile(tmp.Name(), n, s.maxDotenvVariables())
		if err != nil {
			writeMessage(w, http.StatusBadRequest, err.Error())
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !j.processingOnRunner() { // canceled while uploading
		w.Header().Set("Job-Status", j.status)
		forbidden(w, "Job is not processing on runner")
		return
	}
	if j.files[typ] != nil {
		writeMessage(w, http.StatusBadRequest, "another artifact of the same type already exists")
		return
	}
	if err := os.Rename(tmp.Name(), a.path); err != nil {
		writeMessage(w, http.StatusInternalServerError, "500 Internal Server Error")
		return
	}
	if j.files == nil {
		j.files = map[string]*storedArtifact{}
	}
	j.files[typ] = a
	if typ == "dotenv" {
		j.dotenv = dotenv
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "artifacts_file": map[string]any{"filename": a.filename, "size": n}})
}

// handleDownloadArtifacts is GET jobs/:id/artifacts (the runner's
// download of a dependency): the token must be a running job's
// (authenticate_job_via_dependent_job!), of the same project; the archive
// must exist and not be expired.
func (s *Server) handleDownloadArtifacts(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	tok := jobToken(r, r.URL.Query().Get("job_token"))
	s.mu.Lock()
	var auth *jobState
	for _, o := range s.jobs {
		if tok != "" && o.token == tok {
			auth = o
			break
		}
	}
	target := s.jobs[id]
	var a *storedArtifact
	if target != nil {
		a = target.files["archive"]
	}
	now := s.now()
	s.mu.Unlock()
	switch {
	case auth == nil:
		forbidden(w, "")
		return
	case !auth.processingOnRunner():
		forbidden(w, "Job is not running")
		return
	case target == nil || target.pipeline.project != auth.pipeline.project:
		forbidden(w, "")
		return
	case a == nil || a.expired(now):
		writeMessage(w, http.StatusNotFound, "404 Not Found")
		return
	}
	f, err := os.Open(a.path)
	if err != nil {
		writeMessage(w, http.StatusNotFound, "404 Not Found")
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", a.filename))
	w.Header().Set("Content-Length", strconv.FormatInt(a.size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

func (s *Server) maxDotenvVariables() int {
	if s.opts.MaxDotenvVariables > 0 {
		return s.opts.MaxDotenvVariables
	}
	return DefaultMaxDotenvVariables
}

var dotenvKeyRe = regexp.MustCompile(`^[a-zA-Z0-9_]+$`)

// parseDotenvFile is Ci::ParseDotenvArtifactService on a gzip dotenv
// report (each gzip member one file).
func parseDotenvFile(name string, size int64, maxVars int) ([]job.Variable, error) {
	if size > dotenvSizeLimit {
		return nil, fmt.Errorf("Dotenv Artifact Too big. Maximum Allowable Size: %d", dotenvSizeLimit)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read dotenv report: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, errors.New("Invalid Format")
	}
	var blobs [][]byte
	for {
		zr.Multistream(false)
		// Bounded: a tiny gzip may inflate to a lot.
		b, err := io.ReadAll(io.LimitReader(zr, 1<<20))
		if err != nil {
			return nil, errors.New("Invalid Format")
		}
		blobs = append(blobs, b)
		if err := zr.Reset(br); err == io.EOF {
			break
		} else if err != nil {
			return nil, errors.New("Invalid Format")
		}
	}
	return parseDotenv(blobs, maxVars)
}

// parseDotenv reads KEY=VALUE lines as GitLab does: the key is up to the
// first "=", key and value are stripped of surrounding whitespace, quotes
// are kept, a line without "=" (an empty line too) is "Invalid Format",
// the last of duplicate keys wins.
func parseDotenv(blobs [][]byte, maxVars int) ([]job.Variable, error) {
	var order []string
	vals := map[string]string{}
	for _, blob := range blobs {
		for _, line := range strings.SplitAfter(string(blob), "\n") {
			if line == "" {
				continue // after the final newline
			}
			line = strings.TrimSuffix(line, "\n")
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, errors.New("Invalid Format")
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !dotenvKeyRe.MatchString(k) {
				return nil, errors.New("Validation failed: Key can contain only letters, digits and '_'.")
			}
			if _, seen := vals[k]; !seen {
				order = append(order, k)
			}
			vals[k] = v
		}
	}
	if len(order) > maxVars {
		return nil, fmt.Errorf("Dotenv files cannot have more than %d variables", maxVars)
	}
	out := make([]job.Variable, 0, len(order))
	for _, k := range order {
		out = append(out, job.Variable{Key: k, Value: vals[k]})
	}
	return out, nil
}
