package ciyaml

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestExpressions(t *testing.T) {
	vars := map[string]string{
		"BRANCH": "main", "EMPTY": "", "TAG": "v1.2.3", "MIXED": "Feature/Login",
		"QUOTE": `say "hi"`, "PAT": "/^v\\d/", "NOTPAT": "v1", "ONE": "1", "MULTI": "a\nb",
	}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct {
		expr string
		want bool
	}{
		{`$BRANCH == "main"`, true},
		{`$BRANCH == 'main'`, true},
		{`"main" == $BRANCH`, true},
		{`$BRANCH != "main"`, false},
		{`$BRANCH`, true},
		{`$EMPTY`, false},
		{`$UNDEFINED`, false},
		{`$UNDEFINED == null`, true},
		{`$EMPTY == null`, false},
		{`$EMPTY == ""`, true},
		{`$UNDEFINED == ""`, false},
		{`$UNDEFINED != null`, false},
		{`null == null`, true},
		{`$EMPTY != null`, true},
		{`$TAG =~ /^v\d+\.\d+\.\d+$/`, true},
		{`$TAG =~ /^V/`, false},
		{`$TAG =~ /^V/i`, true},
		{`$MIXED =~ /^feature\//i`, true},
		{`$MIXED =~ /^feature\//`, false},
		{`$MIXED !~ /^feature\//`, true},
		{`$UNDEFINED =~ /.*/`, false},
		{`$UNDEFINED !~ /x/`, true},
		{`$MULTI =~ /^b$/`, false},
		{`$MULTI =~ /^b$/m`, true},
		{`$MULTI =~ /a.b/`, false},
		{`$MULTI =~ /a.b/s`, true},
		{`$TAG =~ $PAT`, true},
		{`$TAG =~ $NOTPAT`, false},
		{`$TAG =~ "/^v1/"`, true},
		{`$QUOTE == "say \"hi\""`, true},
		{`$QUOTE == 'say "hi"'`, true},
		{`'it\'s' == "it's"`, true},
		{`"a\\b" == 'a\\b'`, true},
		// && binds tighter than ||.
		{`$BRANCH == "x" && $TAG || $ONE`, true},
		{`$ONE || $BRANCH == "x" && $TAG == "y"`, true},
		{`($ONE || $BRANCH == "x") && $TAG == "y"`, false},
		{`$BRANCH == "main" && ($TAG == "nope" || $ONE == "1")`, true},
		{`(($BRANCH == "main"))`, true},
		{`$EMPTY || $UNDEFINED`, false},
		{`$EMPTY && $ONE`, true}, // Ruby: "" is truthy, so && returns $ONE
		{`$UNDEFINED && $ONE`, false},
		{`$BRANCH=="main"&&$ONE=="1"`, true},
		{`"literal"`, true},
		{`""`, false},
	}
	for _, tt := range tests {
		e, err := ParseExpression(tt.expr)
		if err != nil {
			t.Errorf("ParseExpression(%s): %v", tt.expr, err)
			continue
		}
		if got := e.Evaluate(lookup); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func TestExpressionSyntaxErrors(t *testing.T) {
	for _, s := range []string{
		// ${A}: GitLab's lexer knows only $A (Lexeme::Variable).
		``, `$`, `${A`, `${}`, `${A} == "b"`, `$A ==`, `== $A`, `$A = "b"`, `$A == "b`, `$A =~ /x`, `$A =~ /(/`,
		`$A =~ /x/g`, `($A`, `$A)`, `$A $B`, `$A == $B == $C`, `$A && `, `|| $A`,
		`nullx`, `$A & $B`, strings.Repeat("(", 60) + "$A" + strings.Repeat(")", 60),
	} {
		if _, err := ParseExpression(s); err == nil {
			t.Errorf("ParseExpression(%q) accepted", s)
		}
	}
}

func TestEvaluateDoesNotMutate(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(`
a:
  script: x
  variables: {A: "1"}
  rules:
    - if: $A == "1"
      variables: {B: "2"}
      allow_failure: true
      needs: []
`))
	if err != nil {
		t.Fatal(err)
	}
	before := *cfg.Jobs[0]
	beforeVars := append([]Variable(nil), cfg.Jobs[0].Variables...)
	jobs, err := cfg.Evaluate(Env{})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v err %v", jobs, err)
	}
	j := jobs[0]
	if j == cfg.Jobs[0] || !j.AllowFailure || j.Needs == nil || len(j.Variables) != 2 {
		t.Fatalf("evaluated job = %+v", j)
	}
	j.Variables[0].Value = "changed"
	j.Script[0] = "changed"
	if !reflect.DeepEqual(cfg.Jobs[0].Variables, beforeVars) || cfg.Jobs[0].Script[0] != "x" || cfg.Jobs[0].AllowFailure != before.AllowFailure || cfg.Jobs[0].Needs != nil {
		t.Errorf("Config changed by Evaluate or by changing its result: %+v", cfg.Jobs[0])
	}
}

var pushMain = Env{Ref: "main", RefType: "branch", Source: "push"}

func withVars(env Env, kv ...string) Env {
	env.Variables = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		env.Variables[kv[i]] = kv[i+1]
	}
	return env
}

func TestEvaluateNeedsOfDroppedJobs(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(`
build:
  stage: build
  script: x
  rules:
    - if: $BUILD
test:
  script: y
  needs: [build]
opt:
  script: z
  needs:
    - job: build
      optional: true
  dependencies: [build]
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.Evaluate(pushMain)
	want := "'test' job needs 'build' job, but 'build' does not exist in the pipeline."
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	jobs, err := cfg.Evaluate(withVars(pushMain, "BUILD", "1"))
	if err != nil || len(jobs) != 3 {
		t.Fatalf("with build: %v %v", jobs, err)
	}
	// Without test, opt's optional need and its dependency are dropped.
	cfg.Jobs = []*Job{cfg.Jobs[0], cfg.Jobs[2]}
	jobs, err = cfg.Evaluate(pushMain)
	if err != nil || len(jobs) != 1 || len(jobs[0].Needs) != 0 || jobs[0].Needs == nil || len(jobs[0].Dependencies) != 0 {
		t.Fatalf("optional: %+v %v", jobs, err)
	}
}

func TestEvaluateWorkflowFiltered(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte("workflow:\n  rules:\n    - if: $GO\nj:\n  script: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Evaluate(pushMain); !errors.Is(err, ErrFiltered) {
		t.Fatalf("err = %v, want ErrFiltered", err)
	}
	if jobs, err := cfg.Evaluate(withVars(pushMain, "GO", "y")); err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v err %v", jobs, err)
	}
}

func TestEvaluateRulesChangesAndExists(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(`
j:
  script: x
  variables: {DIR: src}
  rules:
    - changes: [$DIR/*.go]
      exists: ["${DIR}/main.go"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var gotChanges, gotExists []string
	env := Env{
		Changes: func(g []string) (bool, error) { gotChanges = g; return true, nil },
		Exists:  func(g []string) (bool, error) { gotExists = g; return true, nil },
	}
	jobs, err := cfg.Evaluate(env)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v err %v", jobs, err)
	}
	if !reflect.DeepEqual(gotChanges, []string{"src/*.go"}) || !reflect.DeepEqual(gotExists, []string{"src/main.go"}) {
		t.Errorf("globs: changes %q exists %q", gotChanges, gotExists)
	}
	env.Exists = func([]string) (bool, error) { return false, errors.New("boom") }
	if _, err := cfg.Evaluate(env); err == nil || !strings.Contains(err.Error(), "j job: rules:exists: boom") {
		t.Errorf("err = %v", err)
	}
}

// TestMergeKeyLikePsych: GitLab loads YAML with Ruby's Psych, where a
// merge key overrides keys written before it and, in a list of merged
// hashes, the first one wins.
func TestMergeKeyLikePsych(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(`
.a: &a {stage: build, variables: {X: a}}
.b: &b {stage: deploy, image: b}
j:
  stage: test
  <<: [*a, *b]
  image: own
  script: x
`))
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Job("j")
	if j.Stage != "build" || j.Image.Name != "own" || j.Variables[0].Value != "a" {
		t.Errorf("stage %q image %q vars %+v", j.Stage, j.Image.Name, j.Variables)
	}
}

func TestEvaluateVariablePrecedence(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(`
variables:
  TARGET: staging
  BASE: main
  BRANCH_REF: refs/$BASE
  RAW: {value: "$BASE", expand: false}
job-override:
  script: x
  variables: {TARGET: prod}
  rules:
    - if: $TARGET == "prod"
nested:
  script: x
  rules:
    - if: $BRANCH_REF == "refs/main" && $RAW == "$BASE"
pipeline-var-wins:
  script: x
  variables: {MODE: yaml}
  rules:
    - if: $MODE == "cli"
no-inherit:
  script: x
  inherit: {variables: false}
  rules:
    - if: $TARGET == null && $MODE == "cli"
`))
	if err != nil {
		t.Fatal(err)
	}
	// Like the coordinator: env holds predefined, global YAML and
	// pipeline variables.
	env := withVars(pushMain, "TARGET", "staging", "BASE", "main", "BRANCH_REF", "refs/$BASE", "RAW", "$BASE", "MODE", "cli")
	jobs, err := cfg.Evaluate(env)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(jobs); !reflect.DeepEqual(got, []string{"job-override", "nested", "pipeline-var-wins", "no-inherit"}) {
		t.Errorf("jobs = %q", got)
	}
}

func TestTriggerJobsSkipped(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(`
child:
  stage: build
  trigger:
    include: child.yml
after:
  script: x
  needs: [child]
  dependencies: [child]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cfg.Jobs); !reflect.DeepEqual(got, []string{"after"}) {
		t.Fatalf("jobs = %q", got)
	}
	if j := cfg.Jobs[0]; len(j.Needs) != 0 || j.Needs == nil || len(j.Dependencies) != 0 {
		t.Errorf("needs %+v dependencies %q", j.Needs, j.Dependencies)
	}
	var msgs []string
	for _, w := range cfg.Warnings {
		msgs = append(msgs, w.Error())
	}
	want := []string{
		"ci.yml:2:1: jobs:child: trigger: and run: jobs are not supported by podrunner and are skipped",
		"ci.yml:8:11: jobs:after: need child is a trigger: or run: job, skipped by podrunner; the need is ignored",
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Errorf("warnings:\n%s", strings.Join(msgs, "\n"))
	}
}

func TestIncludeRules(t *testing.T) {
	files := memFS(map[string]string{
		"ci/docker.yml":  "docker:\n  script: docker build .\n",
		"ci/nightly.yml": "nightly:\n  script: echo\n",
	})
	doc := []byte(`
include:
  - local: ci/docker.yml
    rules:
      - exists: [Dockerfile]
  - local: ci/nightly.yml
    rules:
      - if: $CI_PIPELINE_SOURCE == "schedule"
        when: never
      - if: $NIGHTLY
main:
  script: x
`)
	tests := []struct {
		env  *Env
		want []string
	}{
		{nil, []string{"docker", "nightly", "main"}},
		{&Env{Variables: map[string]string{"NIGHTLY": "1"}}, []string{"nightly", "main"}},
		{&Env{Variables: map[string]string{"NIGHTLY": "1", "CI_PIPELINE_SOURCE": "schedule"},
			Exists: func([]string) (bool, error) { return true, nil }}, []string{"docker", "main"}},
	}
	for _, tt := range tests {
		cfg, err := ParseWith("ci.yml", doc, ParseOptions{ReadFile: files, IncludeEnv: tt.env})
		if err != nil {
			t.Fatal(err)
		}
		if got := names(cfg.Jobs); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("env %+v: jobs %q, want %q", tt.env, got, tt.want)
		}
		if tt.env == nil && len(cfg.Warnings) != 2 {
			t.Errorf("warnings = %v", cfg.Warnings)
		}
	}
}
