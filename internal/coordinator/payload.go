package coordinator

import (
	"crypto/sha256"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/job"
)

var slugRe = regexp.MustCompile(`[^a-z0-9]+`)

// slugify is GitLab's *_SLUG: lowercased, non-alphanumerics to "-",
// at most 63 bytes, no leading/trailing "-".
func slugify(s string) string {
	out := slugRe.ReplaceAllString(strings.ToLower(s), "-")
	out = strings.TrimLeft(out, "-")
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.TrimRight(out, "-")
}

func (s *Server) serverURL() *url.URL {
	if s.external != nil {
		return s.external
	}
	return &url.URL{Scheme: "http", Host: "localhost"}
}

// buildPayloadLocked is the 201 body of jobs/request for j taken by rn.
func (s *Server) buildPayloadLocked(j *jobState, rn *runner) *job.Payload {
	pl, p, d, c := j.pipeline, j.pipeline.project, j.def, j.pipeline.commit
	srv := s.serverURL()
	projectURL := srv.String() + "/" + p.fullPath
	repoURL := *srv
	repoURL.User = url.UserPassword("gitlab-ci-token", j.token)
	repoURL.Path = "/" + p.fullPath + ".git"

	timeout := int(p.timeout.Seconds())
	if d.Timeout > 0 {
		timeout = int(d.Timeout.Seconds())
	}
	if rn.maxTimeout > 0 && rn.maxTimeout < timeout {
		timeout = rn.maxTimeout
	}

	pending := 0
	for _, o := range s.jobs {
		if o.status == StatusPending && o.runner == nil && o != j {
			pending++
		}
	}
	protected := c.protected
	payload := &job.Payload{
		ID:            j.id,
		Token:         j.token,
		AllowGitFetch: true,
		JobInfo: job.JobInfo{
			Name: d.Name, Stage: d.Stage, PipelineID: pl.id, ProjectID: p.id,
			ProjectName: projectName(p.fullPath), ProjectFullPath: p.fullPath,
			NamespaceID: 1, RootNamespaceID: 1, UserID: s.opts.User.ID,
			TimeInQueue: time.Since(j.queuedAt).Seconds(), QueueSize: int64(pending), QueueDepth: int64(pending),
		},
		GitInfo: job.GitInfo{
			RepoURL: repoURL.String(), RepoObjectFormat: p.objectFormat, Ref: c.ref, Sha: c.sha,
			BeforeSha: c.beforeSha, RefType: c.refType, Refspecs: s.refspecs(pl), Depth: s.opts.GitDepth,
			Protected: &protected,
		},
		RunnerInfo:   job.RunnerInfo{Timeout: timeout},
		Variables:    s.variablesLocked(j, rn, projectURL, repoURL.String()),
		Steps:        steps(d, timeout),
		Services:     []job.Image{},
		Artifacts:    payloadArtifacts(d.Artifacts),
		Cache:        payloadCache(j),
		Credentials:  []job.Credential{},
		Dependencies: s.dependenciesLocked(j),
		Features: job.Features{
			TraceSections:     true,
			TokenMaskPrefixes: append([]string(nil), tokenMaskPrefixes...),
			FailureReasons:    slices.Clone(failureReasons),
		},
	}
	if r := s.opts.Registry; r != nil {
		user, pass := registryLogin(r, j.token)
		payload.Credentials = append(payload.Credentials, job.Credential{Type: "registry", URL: r.Host, Username: user, Password: pass})
	}
	if d.Image != nil {
		payload.Image = image(*d.Image)
	}
	for _, svc := range d.Services {
		payload.Services = append(payload.Services, image(svc))
	}
	return payload
}

// refspecs are what GitLab's BuildRunnerPresenter sends: the pipeline's
// persistent ref, plus the branch or tag (all of them for full clones).
func (s *Server) refspecs(pl *pipeline) []string {
	specs := []string{fmt.Sprintf("+refs/pipelines/%d:refs/pipelines/%d", pl.id, pl.id)}
	c := pl.commit
	if s.opts.GitDepth > 0 {
		if c.refType == "tag" {
			specs = append(specs, fmt.Sprintf("+refs/tags/%s:refs/tags/%s", c.ref, c.ref))
		} else {
			specs = append(specs, fmt.Sprintf("+refs/heads/%s:refs/remotes/origin/%s", c.ref, c.ref))
		}
		return specs
	}
	return append(specs, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
}

func steps(d *ciyaml.Job, timeout int) []job.Step {
	script := append(append([]string{}, d.BeforeScript...), d.Script...)
	out := []job.Step{{Name: job.StepScript, Script: script, Timeout: timeout, When: job.WhenOnSuccess}}
	if len(d.AfterScript) > 0 {
		out = append(out, job.Step{Name: job.StepAfterScript, Script: append([]string{}, d.AfterScript...),
			Timeout: timeout, When: job.WhenAlways, AllowFailure: true})
	}
	return out
}

func image(i ciyaml.Image) job.Image {
	out := job.Image{Name: i.Name, Alias: i.Alias, Entrypoint: i.Entrypoint, Command: i.Command, PullPolicy: i.PullPolicy}
	for _, v := range i.Variables {
		out.Variables = append(out.Variables, job.Variable{Key: v.Key, Value: v.Value, Public: true, Raw: !v.Expand})
	}
	return out
}

// variablesLocked builds the job's variables in GitLab's order
// (Ci::Build#variables): persisted job variables, predefined, project,
// pipeline (commit), runner, YAML (global then job), project CI/CD
// variables, pipeline variables. Later entries win.
func (s *Server) variablesLocked(j *jobState, rn *runner, projectURL, repoURL string) job.Variables {
	pl, p, d, c := j.pipeline, j.pipeline.project, j.def, j.pipeline.commit
	var vs job.Variables
	pub := func(k, v string) { vs = append(vs, job.Variable{Key: k, Value: v, Public: true}) }
	id := strconv.FormatInt(j.id, 10)
	pipelineURL := fmt.Sprintf("%s/-/pipelines/%d", projectURL, pl.id)
	started := j.startedAt
	if started.IsZero() {
		started = time.Now()
	}

	// Persisted variables.
	pub("CI_PIPELINE_ID", strconv.FormatInt(pl.id, 10))
	pub("CI_PIPELINE_URL", pipelineURL)
	pub("CI_JOB_ID", id)
	pub("CI_JOB_URL", fmt.Sprintf("%s/-/jobs/%d", projectURL, j.id))
	vs = append(vs, job.Variable{Key: "CI_JOB_TOKEN", Value: j.token, Masked: true})
	pub("CI_JOB_STARTED_AT", started.UTC().Format(time.RFC3339))
	pub("CI_BUILD_ID", id)
	vs = append(vs, job.Variable{Key: "CI_BUILD_TOKEN", Value: j.token, Masked: true})
	vs = append(vs, job.Variable{Key: "CI_REPOSITORY_URL", Value: repoURL})

	s.serverVars(pub)
	pub("CI_JOB_NAME", d.Name)
	pub("CI_JOB_NAME_SLUG", slugify(d.Name))
	pub("CI_JOB_STAGE", d.Stage)
	if d.When == ciyaml.WhenManual {
		pub("CI_JOB_MANUAL", "true")
	}
	if d.ParallelOf != "" || d.NodeTotal > 1 {
		pub("CI_NODE_INDEX", strconv.Itoa(d.NodeIndex))
		pub("CI_NODE_TOTAL", strconv.Itoa(d.NodeTotal))
	} else {
		pub("CI_NODE_TOTAL", "1")
	}
	pub("CI_BUILD_NAME", d.Name)
	pub("CI_BUILD_STAGE", d.Stage)

	envAt := len(vs) // the environment's variables go here, once the rest can expand its name
	// Registry and Dependency Proxy credentials are the job token.
	regUser, regPass := "gitlab-ci-token", j.token
	if r := s.opts.Registry; r != nil {
		regUser, regPass = registryLogin(r, j.token)
	}
	vs = append(vs, job.Variable{Key: "CI_REGISTRY_USER", Value: regUser, Public: true},
		job.Variable{Key: "CI_REGISTRY_PASSWORD", Value: regPass, Masked: true},
		job.Variable{Key: "CI_DEPENDENCY_PROXY_USER", Value: "gitlab-ci-token", Public: true},
		job.Variable{Key: "CI_DEPENDENCY_PROXY_PASSWORD", Value: j.token, Masked: true})
	s.projectPipelineVars(pl, pub)

	// Runner.
	pub("CI_RUNNER_ID", strconv.FormatInt(rn.id, 10))
	pub("CI_RUNNER_DESCRIPTION", rn.description)
	pub("CI_RUNNER_TAGS", rubyArray(rn.tags))

	// YAML: global, then the job's (job wins; rule variables are in the
	// job's).
	for _, v := range pl.cfg.Variables {
		// inherit:variables false or a list (Ci::Build#yaml_variables).
		if d.InheritVariables != nil && !slices.Contains(d.InheritVariables, v.Key) {
			continue
		}
		vs = append(vs, job.Variable{Key: v.Key, Value: v.Value, Public: true, Raw: !v.Expand})
	}
	for _, v := range d.Variables {
		vs = append(vs, job.Variable{Key: v.Key, Value: v.Value, Public: true, Raw: !v.Expand})
	}
	// dotenv reports of the jobs it takes artifacts from
	// (Ci::Build#dependency_variables).
	for _, dep := range s.dependencyJobsLocked(j) {
		vs = append(vs, dep.dotenv...)
	}
	vs = append(vs, projectVarsFor(p, c)...)
	vs = append(vs, pl.vars...)
	if d.Environment != "" {
		vs = slices.Insert(vs, envAt, environmentVars(d, vs)...)
	}
	return vs
}

// environmentVars are Ci::Build#persisted_environment_variables: name and
// url expanded with the job's other variables, as GitLab does.
func environmentVars(d *ciyaml.Job, vs job.Variables) []job.Variable {
	var out []job.Variable
	pub := func(k, v string) { out = append(out, job.Variable{Key: k, Value: v, Public: true}) }
	name := vs.ExpandValue(d.Environment)
	pub("CI_ENVIRONMENT_NAME", name)
	pub("CI_ENVIRONMENT_SLUG", environmentSlug(name))
	if d.EnvironmentURL != "" {
		pub("CI_ENVIRONMENT_URL", vs.ExpandValue(d.EnvironmentURL))
	}
	action := d.EnvironmentAction
	if action == "" {
		action = "start"
	}
	pub("CI_ENVIRONMENT_ACTION", action)
	tier := d.EnvironmentTier
	if tier == "" {
		tier = guessTier(name)
	}
	pub("CI_ENVIRONMENT_TIER", tier)
	return out
}

// projectVarsFor are the project CI/CD variables a pipeline gets: never
// public; protected ones only on protected refs.
func projectVarsFor(p *project, c commit) []job.Variable {
	var out []job.Variable
	for _, v := range p.vars {
		if v.Protected && !c.protected {
			continue
		}
		out = append(out, v.Variable)
	}
	return out
}

// pipelineEnvLocked are the variables rules are evaluated with: the
// pipeline's predefined variables, the global YAML variables, the project
// and the pipeline variables (later wins).
func (s *Server) pipelineEnvLocked(pl *pipeline) map[string]string {
	env := map[string]string{}
	pub := func(k, v string) { env[k] = v }
	pub("CI_PIPELINE_ID", strconv.FormatInt(pl.id, 10))
	s.serverVars(pub)
	s.projectPipelineVars(pl, pub)
	for _, v := range pl.cfg.Variables {
		env[v.Key] = v.Value
	}
	for _, v := range projectVarsFor(pl.project, pl.commit) {
		env[v.Key] = v.Value
	}
	for _, v := range pl.vars {
		env[v.Key] = v.Value
	}
	return env
}

// serverVars are the instance's predefined variables.
func (s *Server) serverVars(pub func(k, v string)) {
	srv := s.serverURL()
	pub("CI", "true")
	pub("GITLAB_CI", "true")
	host := srv.Hostname()
	port := srv.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[srv.Scheme]
	}
	pub("CI_SERVER_URL", srv.String())
	pub("CI_SERVER_HOST", host)
	pub("CI_SERVER_PORT", port)
	pub("CI_SERVER_PROTOCOL", srv.Scheme)
	pub("CI_SERVER_FQDN", srv.Host)
	pub("CI_SERVER_NAME", "GitLab")
	pub("CI_SERVER_VERSION", s.opts.ServerVersion)
	parts := strings.SplitN(s.opts.ServerVersion, ".", 3)
	for i, k := range []string{"CI_SERVER_VERSION_MAJOR", "CI_SERVER_VERSION_MINOR", "CI_SERVER_VERSION_PATCH"} {
		if i < len(parts) {
			pub(k, parts[i])
		}
	}
	pub("CI_SERVER_REVISION", "gitlabtest")
	pub("GITLAB_FEATURES", "")
	pub("CI_API_V4_URL", srv.String()+"/api/v4")
	pub("CI_API_GRAPHQL_URL", srv.String()+"/api/graphql")
	pub("CI_SERVER_SHELL_SSH_HOST", host)
	pub("CI_SERVER_SHELL_SSH_PORT", "22")
	pub("CI_TEMPLATE_REGISTRY_HOST", "registry.gitlab.com")
	pub("CI_REGISTRY", s.registryHost())
	pub("CI_DEPENDENCY_PROXY_SERVER", dependencyProxyServer(srv))
}

// registryHost is the container registry's host:port: Omnibus' default
// registry on the instance's own host listens on 5050. Nothing serves it
// here; jobs only see the names GitLab would give them.
func (s *Server) registryHost() string {
	if r := s.opts.Registry; r != nil {
		return r.Host
	}
	return net.JoinHostPort(s.serverURL().Hostname(), "5050")
}

// dependencyProxyServer is Gitlab.host_with_port: the port only when it is
// not the scheme's default.
func dependencyProxyServer(srv *url.URL) string {
	if p := srv.Port(); p != "" && p != map[string]string{"http": "80", "https": "443"}[srv.Scheme] {
		return srv.Hostname() + ":" + p
	}
	return srv.Hostname()
}

// environmentSlug is Gitlab::Slug::Environment: lowercase letters, digits
// and single dashes, starting with a letter; a name that is longer than 24
// characters or changed by these rules is cut to 17 and gets a 6-character
// suffix from its SHA-256, so different names keep different slugs.
func environmentSlug(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	slug := b.String()
	if slug == "" || slug[0] < 'a' || slug[0] > 'z' {
		slug = "env-" + slug
	}
	for strings.Contains(slug, "--") {
		slug = strings.ReplaceAll(slug, "--", "-")
	}
	if len(slug) <= 24 && slug == name {
		return strings.TrimSuffix(slug, "-")
	}
	slug = slug[:min(17, len(slug))]
	if !strings.HasSuffix(slug, "-") {
		slug += "-"
	}
	sum := sha256.Sum256([]byte(name))
	b36 := new(big.Int).SetBytes(sum[:]).Text(36)
	return slug + b36[max(0, len(b36)-6):]
}

// guessTier is Environment#guess_tier, the tier of an environment without
// deployment_tier, from its name; the first matching rule wins.
func guessTier(name string) string {
	for _, t := range tierGuesses {
		if t.re.MatchString(name) {
			return t.tier
		}
	}
	return "other"
}

var tierGuesses = []struct {
	re   *regexp.Regexp
	tier string
}{
	{regexp.MustCompile(`(?i)(dev|review|trunk)`), "development"},
	{regexp.MustCompile(`(?i)(test|tst|int|ac(ce|)pt|qa|qc|control|quality)`), "testing"},
	{regexp.MustCompile(`(?i)(st(a|)g|mod(e|)l|pre|demo|non)`), "staging"},
	{regexp.MustCompile(`(?i)(pr(o|)d|live)`), "production"},
}

// projectPipelineVars are the project's, the pipeline's and the commit's
// predefined variables.
func (s *Server) projectPipelineVars(pl *pipeline, pub func(k, v string)) {
	p, c := pl.project, pl.commit
	projectURL := s.serverURL().String() + "/" + p.fullPath
	// Project.
	pub("CI_PROJECT_ID", strconv.FormatInt(p.id, 10))
	pub("CI_PROJECT_NAME", projectName(p.fullPath))
	pub("CI_PROJECT_TITLE", projectName(p.fullPath))
	pub("CI_PROJECT_DESCRIPTION", "")
	pub("CI_PROJECT_PATH", p.fullPath)
	pub("CI_PROJECT_PATH_SLUG", slugify(p.fullPath))
	pub("CI_PROJECT_NAMESPACE", projectNamespace(p.fullPath))
	pub("CI_PROJECT_NAMESPACE_ID", "1")
	pub("CI_PROJECT_NAMESPACE_SLUG", slugify(projectNamespace(p.fullPath)))
	pub("CI_PROJECT_ROOT_NAMESPACE", strings.SplitN(p.fullPath, "/", 2)[0])
	pub("CI_PROJECT_URL", projectURL)
	pub("CI_PROJECT_VISIBILITY", "private")
	pub("CI_PROJECT_REPOSITORY_LANGUAGES", "")
	pub("CI_PROJECT_CLASSIFICATION_LABEL", "")
	pub("CI_DEFAULT_BRANCH", p.defaultBranch)
	pub("CI_CONFIG_PATH", ".gitlab-ci.yml")
	// Ci::Build#container_registry_variables and dependency_proxy_variables.
	pub("CI_REGISTRY_IMAGE", s.registryHost()+"/"+strings.ToLower(p.fullPath))
	proxy := dependencyProxyServer(s.serverURL())
	pub("CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX", proxy+"/"+strings.SplitN(p.fullPath, "/", 2)[0]+"/dependency_proxy/containers")
	pub("CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX", proxy+"/"+strings.ToLower(projectNamespace(p.fullPath))+"/dependency_proxy/containers")

	// Pipeline and commit.
	pub("CI_PIPELINE_IID", strconv.FormatInt(pl.iid, 10))
	pub("CI_PIPELINE_SOURCE", pl.source)
	pub("CI_PIPELINE_CREATED_AT", pl.createdAt.UTC().Format(time.RFC3339))
	pub("CI_PIPELINE_NAME", "")
	pub("CI_COMMIT_SHA", c.sha)
	pub("CI_COMMIT_SHORT_SHA", c.sha[:min(8, len(c.sha))])
	pub("CI_COMMIT_BEFORE_SHA", c.beforeSha)
	pub("CI_COMMIT_REF_NAME", c.ref)
	pub("CI_COMMIT_REF_SLUG", slugify(c.ref))
	if c.refType == "tag" {
		pub("CI_COMMIT_TAG", c.ref)
	} else {
		pub("CI_COMMIT_BRANCH", c.ref)
	}
	pub("CI_COMMIT_MESSAGE", c.message)
	pub("CI_COMMIT_TITLE", c.title)
	pub("CI_COMMIT_DESCRIPTION", c.description)
	pub("CI_COMMIT_REF_PROTECTED", strconv.FormatBool(c.protected))
	pub("CI_COMMIT_TIMESTAMP", c.timestamp)
	pub("CI_COMMIT_AUTHOR", fmt.Sprintf("%s <%s>", c.authorName, c.authorEmail))
	pub("CI_BUILD_REF", c.sha)
	pub("CI_BUILD_BEFORE_SHA", c.beforeSha)
	pub("CI_BUILD_REF_NAME", c.ref)
	pub("CI_BUILD_REF_SLUG", slugify(c.ref))
	if c.refType == "tag" {
		pub("CI_BUILD_TAG", c.ref)
	}
	pub("GITLAB_USER_ID", strconv.FormatInt(s.opts.User.ID, 10))
	pub("GITLAB_USER_EMAIL", s.opts.User.Email)
	pub("GITLAB_USER_LOGIN", s.opts.User.Login)
	pub("GITLAB_USER_NAME", s.opts.User.Name)

}

// rubyArray formats tags like Ruby's Array#to_s, which is what GitLab
// puts in CI_RUNNER_TAGS: ["a", "b"].
func rubyArray(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// registryLogin is the job's registry login: the configured account, or
// GitLab's gitlab-ci-token with the job token.
func registryLogin(r *Registry, jobToken string) (user, pass string) {
	if r.Username != "" {
		return r.Username, r.Password
	}
	return "gitlab-ci-token", jobToken
}
