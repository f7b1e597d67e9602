package coordinator

import (
	"strings"
	"testing"
)

// TestEnvironmentSlug follows Gitlab::Slug::Environment: lowercase
// letters, digits and single dashes, starting with a letter, no trailing
// dash; a name changed by these rules or longer than 24 characters is cut
// to 17 characters plus "-" and the last 6 base-36 digits of its SHA-256.
func TestEnvironmentSlug(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		wantExact string // empty: a suffixed slug starting with wantPrefix
		wantPre   string
	}{
		{name: "production", wantExact: "production"},
		{name: "staging-1234567890123456", wantExact: "staging-1234567890123456"},
		{name: "PRODUCTION", wantPre: "production-"},
		{name: "review/1-foo", wantPre: "review-1-foo-"},
		{name: "1-foo", wantPre: "env-1-foo-"},
		{name: "staging-12345678901234567", wantPre: "staging-123456789-"},
		{name: "9-staging-123456789012345", wantPre: "env-9-staging-123-"},
		{name: "foo-", wantExact: "foo"},
		{name: "review/feature/x", wantPre: "review-feature-x-"},
	}
	for _, tt := range tests {
		got := environmentSlug(tt.name)
		if tt.wantExact != "" {
			if got != tt.wantExact {
				t.Errorf("environmentSlug(%q) = %q, want %q", tt.name, got, tt.wantExact)
			}
			continue
		}
		suffix, ok := strings.CutPrefix(got, tt.wantPre)
		if !ok || len(suffix) != 6 || strings.Trim(suffix, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Errorf("environmentSlug(%q) = %q, want %q and a 6-character suffix", tt.name, got, tt.wantPre)
		}
		if again := environmentSlug(tt.name); again != got {
			t.Errorf("environmentSlug(%q) not stable: %q then %q", tt.name, got, again)
		}
	}
	if environmentSlug("Review/A") == environmentSlug("review/a") {
		t.Error("names differing only in case share a slug; the suffix must tell them apart")
	}
}

// TestGuessTier follows Environment#guess_tier: the first of development,
// testing, staging, production whose pattern matches the name, else other.
func TestGuessTier(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"review/feature": "development", "dev": "development", "qa": "testing", "test": "testing",
		"staging": "staging", "pre-prod": "staging", "production": "production", "live": "production",
		"prd": "production", "canary": "other",
	} {
		if got := guessTier(name); got != want {
			t.Errorf("guessTier(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestPredefinedVariablesOfGitLab: the environment variables
// (Ci::Build#persisted_environment_variables; name and url expanded), the container registry's
// and the Dependency Proxy's (credentials are the job token, masked), and
// the instance's SSH and template registry host.
func TestPredefinedVariablesOfGitLab(t *testing.T) {
	t.Parallel()
	ci := `deploy:
  script: [x]
  environment:
    name: review/$CI_COMMIT_REF_NAME-Feature
    url: https://$CI_COMMIT_REF_SLUG.example.com
    action: prepare
`
	s, c, tok := setup(t, Options{}, ci)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	got := map[string]string{}
	masked := map[string]bool{}
	for _, v := range p.Variables {
		got[v.Key] = v.Value
		masked[v.Key] = v.Masked
	}
	host := strings.TrimPrefix(s.URL(), "http://")
	hostname := host[:strings.LastIndex(host, ":")]
	for k, want := range map[string]string{
		"CI_ENVIRONMENT_NAME": "review/main-Feature", "CI_ENVIRONMENT_URL": "https://main.example.com",
		"CI_ENVIRONMENT_ACTION": "prepare", "CI_ENVIRONMENT_TIER": "development",
		"CI_REGISTRY": hostname + ":5050", "CI_REGISTRY_IMAGE": hostname + ":5050/group/demo",
		"CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": p.Token,
		"CI_DEPENDENCY_PROXY_SERVER": host, "CI_DEPENDENCY_PROXY_USER": "gitlab-ci-token",
		"CI_DEPENDENCY_PROXY_PASSWORD":                  p.Token,
		"CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX":        host + "/group/dependency_proxy/containers",
		"CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX": host + "/group/dependency_proxy/containers",
		"CI_SERVER_SHELL_SSH_HOST":                      hostname, "CI_SERVER_SHELL_SSH_PORT": "22",
		"CI_TEMPLATE_REGISTRY_HOST": "registry.gitlab.com",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if !strings.HasPrefix(got["CI_ENVIRONMENT_SLUG"], "review-main-featu-") {
		t.Errorf("CI_ENVIRONMENT_SLUG = %q, want review-main-featu- and a suffix", got["CI_ENVIRONMENT_SLUG"])
	}
	for _, k := range []string{"CI_REGISTRY_PASSWORD", "CI_DEPENDENCY_PROXY_PASSWORD"} {
		if !masked[k] {
			t.Errorf("%s is not masked", k)
		}
	}
}

// TestDefaultBranchDecidesProtection: only the project's default branch
// is protected (GitLab protects the default branch, nothing else, unless
// configured); CI_DEFAULT_BRANCH names it.
func TestDefaultBranchDecidesProtection(t *testing.T) {
	t.Parallel()
	repo := makeRepo(t, "job:\n  script: [x]\n")
	gitIn(t, repo, "checkout", "-q", "-b", "feature/x")
	s := newServer(t, Options{})
	if _, err := s.AddProject("group/demo", repo); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultBranch("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultBranch("group/nope", "main"); err == nil {
		t.Error("SetDefaultBranch of an unknown project: no error")
	}
	_, tok := s.CreateRunner(RunnerOptions{RunUntagged: true})
	c := client{t: t, base: s.URL()}
	if _, err := s.CreatePipeline("group/demo", "feature/x"); err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	got := map[string]string{}
	for _, v := range p.Variables {
		got[v.Key] = v.Value
	}
	if got["CI_DEFAULT_BRANCH"] != "main" || got["CI_COMMIT_REF_PROTECTED"] != "false" || got["CI_COMMIT_BRANCH"] != "feature/x" {
		t.Errorf("CI_DEFAULT_BRANCH=%q CI_COMMIT_REF_PROTECTED=%q CI_COMMIT_BRANCH=%q, want main false feature/x",
			got["CI_DEFAULT_BRANCH"], got["CI_COMMIT_REF_PROTECTED"], got["CI_COMMIT_BRANCH"])
	}
	if p.GitInfo.Protected == nil || *p.GitInfo.Protected {
		t.Error("git_info.protected is not false on a feature branch")
	}

	// Told otherwise: a protected feature branch.
	if err := s.ProtectBranch("group/demo", "feature/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePipeline("group/demo", "feature/x"); err != nil {
		t.Fatal(err)
	}
	p = c.payload(c.requestJob(tok, "", nil))
	got = map[string]string{}
	for _, v := range p.Variables {
		got[v.Key] = v.Value
	}
	if got["CI_COMMIT_REF_PROTECTED"] != "true" || p.GitInfo.Protected == nil || !*p.GitInfo.Protected {
		t.Errorf("CI_COMMIT_REF_PROTECTED=%q on a branch protected with ProtectBranch, want true", got["CI_COMMIT_REF_PROTECTED"])
	}
}

// TestInheritVariablesAtRunTime: inherit:variables false gives the job no
// global variable, a list only those named (GitLab's inherit keyword);
// the job's own variables stay.
func TestInheritVariablesAtRunTime(t *testing.T) {
	t.Parallel()
	ci := `variables:
  A: a
  B: b
none:
  inherit: {variables: false}
  variables: {OWN: o}
  script: [x]
some:
  inherit: {variables: [B]}
  script: [x]
all:
  script: [x]
`
	s, c, tok := setup(t, Options{}, ci)
	if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"none": "A= B= OWN=o", "some": "A= B=b OWN=", "all": "A=a B=b OWN="}
	for range 3 {
		p := c.payload(c.requestJob(tok, "", nil))
		got := map[string]string{}
		for _, v := range p.Variables {
			got[v.Key] = v.Value
		}
		line := "A=" + got["A"] + " B=" + got["B"] + " OWN=" + got["OWN"]
		if line != want[p.JobInfo.Name] {
			t.Errorf("job %s: %s, want %s", p.JobInfo.Name, line, want[p.JobInfo.Name])
		}
		delete(want, p.JobInfo.Name)
	}
	if len(want) != 0 {
		t.Errorf("jobs not handed out: %v", want)
	}
}

// TestIncludeRulesAndVariablesInLocalPaths: include:rules are evaluated
// with the pipeline's variables, and include:local paths expand the
// pipeline's (predefined, project, pipeline) variables, not the YAML's
// (GitLab docs, "Use variables with include"); unknown ones stay as they
// are (ExpandVariables.expand_existing).
func TestIncludeRulesAndVariablesInLocalPaths(t *testing.T) {
	t.Parallel()
	ci := `variables:
  YAMLVAR: yaml
include:
  - local: ci/$CI_DEFAULT_BRANCH.yml
  - local: ci/$FLAVOUR.yml
  - local: ci/never.yml
    rules:
      - if: $CI_COMMIT_BRANCH == "nope"
  - local: ci/when-var.yml
    rules:
      - if: $FLAVOUR == "blue"
  - local: ci/yaml-$YAMLVAR.yml
    rules:
      - if: $YAMLVAR == "yaml"
base:
  script: [x]
`
	repo := makeRepo(t, ci)
	for name, job := range map[string]string{
		"ci/main.yml": "from-default-branch", "ci/blue.yml": "from-pipeline-var", "ci/never.yml": "never",
		"ci/when-var.yml": "from-rule", "ci/yaml-yaml.yml": "from-yaml-var",
	} {
		writeFile(t, repo, name, job+":\n  script: [x]\n")
	}
	gitIn(t, repo, "add", ".")
	gitIn(t, repo, "commit", "-q", "-m", "includes")
	s := newServer(t, Options{})
	if _, err := s.AddProject("group/demo", repo); err != nil {
		t.Fatal(err)
	}
	pl, err := s.CreatePipelineWith("group/demo", PipelineOptions{Ref: "main", Variables: []ProjectVariable{{Key: "FLAVOUR", Value: "blue"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(jobNames(pl), " "), "base from-default-branch from-pipeline-var from-rule"; got != want {
		t.Errorf("jobs %q, want %q (never.yml and the YAML-variable include left out)", got, want)
	}
}

// TestSelectedJobsKeepTheirProducers: --job X also runs the jobs X takes
// artifacts from (Ci::BuildDependencies#local): those in dependencies:,
// else, for a stage-ordered job, the earlier stages' jobs with artifacts;
// jobs X neither needs nor downloads from stay out.
func TestSelectedJobsKeepTheirProducers(t *testing.T) {
	t.Parallel()
	ci := `stages: [build, test, deploy]
bin:
  stage: build
  script: [x]
  artifacts: {paths: [bin/]}
docs:
  stage: build
  script: [x]
  artifacts: {paths: [docs/]}
lint:
  stage: build
  script: [x]
unit:
  stage: test
  script: [x]
package:
  stage: deploy
  script: [x]
  dependencies: [bin]
report:
  stage: deploy
  script: [x]
`
	s, _, _ := setup(t, Options{}, ci)
	for _, tt := range []struct {
		job, want string
	}{
		{"package", "bin package"},
		{"report", "bin docs report"},
		{"unit", "bin docs unit"},
		{"bin", "bin"},
	} {
		pl, err := s.CreatePipelineWith("group/demo", PipelineOptions{Jobs: []string{tt.job}})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(jobNames(pl), " "); got != tt.want {
			t.Errorf("--job %s runs %q, want %q", tt.job, got, tt.want)
		}
	}
}
