package ciyaml

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSeedFiles(t *testing.T) {
	dir := "/work/shared/examples/seed-pipeline"
	tests := []struct {
		file   string
		job    string
		stage  string
		script []string
	}{
		{"runner-test.gitlab-ci.yml", "job-runner-test", "test", []string{`echo "✅ Runner 동작 확인 완료!"`}},
		{"pod-creation.gitlab-ci.yml", "test-pod-creation", "verify", []string{`echo "Running inside a temporary pod!"`, "hostname", "sleep 15"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Skipf("seed file not available: %v", err)
			}
			cfg, err := Parse(tt.file, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Jobs) != 1 {
				t.Fatalf("jobs = %d, want 1", len(cfg.Jobs))
			}
			j := cfg.Jobs[0]
			if j.Name != tt.job || j.Stage != tt.stage || !reflect.DeepEqual(j.Script, tt.script) {
				t.Errorf("job = %q stage %q script %q", j.Name, j.Stage, j.Script)
			}
			if !reflect.DeepEqual(j.Tags, []string{"aks"}) || j.When != WhenOnSuccess || j.AllowFailure {
				t.Errorf("tags %q when %q allow_failure %v", j.Tags, j.When, j.AllowFailure)
			}
			if want := []string{".pre", tt.stage, ".post"}; !reflect.DeepEqual(cfg.Stages, want) {
				t.Errorf("stages = %q, want %q", cfg.Stages, want)
			}
		})
	}
}

const full = `
variables:
  GLOBAL: g
  NUM: 42
  DESC:
    value: "v"
    description: "a described variable"
  RAW:
    value: "$HOME"
    expand: false
default:
  image: alpine:3.20
  services:
    - redis:7
    - name: postgres:16
      alias: db, pg
      entrypoint: ["docker-entrypoint.sh"]
      command: ["postgres", "-c", "fsync=off"]
      variables:
        POSTGRES_PASSWORD: x
  before_script:
    - echo before
  after_script: echo after
  tags: [k8s]
  timeout: 1h 30m
.template: &tpl
  script:
    - echo from template
  variables:
    T: t
stages: [build, test]
build:
  stage: build
  <<: *tpl
  image:
    name: golang:1.26
    entrypoint: [""]
    pull_policy: [always, if-not-present]
test:
  script:
    - - echo nested
      - [echo deeper]
    - echo flat
  before_script: []
  tags: []
  when: always
  allow_failure:
    exit_codes: [3, 4]
  timeout: 10 minutes
manual:
  stage: build
  script: echo m
  when: manual
lenient:
  script: exit 1
  allow_failure: true
  variables:
    J: j
`

func TestParseFull(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".pre", "build", "test", ".post"}; !reflect.DeepEqual(cfg.Stages, want) {
		t.Errorf("stages = %q", cfg.Stages)
	}
	if got := names(cfg.Jobs); !reflect.DeepEqual(got, []string{"build", "test", "manual", "lenient"}) {
		t.Errorf("jobs = %q", got)
	}
	vars := map[string]Variable{}
	for _, v := range cfg.Variables {
		vars[v.Key] = v
	}
	if vars["NUM"].Value != "42" || vars["DESC"].Description != "a described variable" || vars["RAW"].Expand || !vars["GLOBAL"].Expand {
		t.Errorf("variables = %+v", cfg.Variables)
	}
	if vars["GLOBAL"].Pos != (Pos{3, 3}) {
		t.Errorf("GLOBAL pos = %+v", vars["GLOBAL"].Pos)
	}

	b := cfg.Job("build")
	if b.Image.Name != "golang:1.26" || !reflect.DeepEqual(b.Image.Entrypoint, []string{""}) || !reflect.DeepEqual(b.Image.PullPolicy, []string{"always", "if-not-present"}) {
		t.Errorf("build image = %+v", b.Image)
	}
	if !reflect.DeepEqual(b.Script, []string{"echo from template"}) || len(b.Variables) != 1 || b.Variables[0].Key != "T" {
		t.Errorf("merge key: script %q vars %+v", b.Script, b.Variables)
	}
	if !reflect.DeepEqual(b.BeforeScript, []string{"echo before"}) || !reflect.DeepEqual(b.AfterScript, []string{"echo after"}) {
		t.Errorf("inherited scripts %q %q", b.BeforeScript, b.AfterScript)
	}
	if b.Timeout != 90*time.Minute || !reflect.DeepEqual(b.Tags, []string{"k8s"}) || len(b.Services) != 2 {
		t.Errorf("inherited timeout %v tags %q services %d", b.Timeout, b.Tags, len(b.Services))
	}
	pg := b.Services[1]
	if pg.Alias != "db, pg" || pg.Command[2] != "fsync=off" || pg.Variables[0].Value != "x" {
		t.Errorf("service = %+v", pg)
	}

	tj := cfg.Job("test")
	if !reflect.DeepEqual(tj.Script, []string{"echo nested", "echo deeper", "echo flat"}) {
		t.Errorf("nested script = %q", tj.Script)
	}
	if len(tj.BeforeScript) != 0 || len(tj.Tags) != 0 {
		t.Errorf("explicit empty lists must override default: %q %q", tj.BeforeScript, tj.Tags)
	}
	if tj.Stage != "test" || tj.When != WhenAlways || tj.AllowFailure || !reflect.DeepEqual(tj.AllowFailureExitCodes, []int{3, 4}) || tj.Timeout != 10*time.Minute {
		t.Errorf("test job = %+v", tj)
	}
	if m := cfg.Job("manual"); !m.AllowFailure || m.When != WhenManual {
		t.Errorf("manual job allow_failure default must be true: %+v", m)
	}
	if l := cfg.Job("lenient"); !l.AllowFailure || l.Variables[0].Key != "J" {
		t.Errorf("lenient = %+v", l)
	}
}

func names(js []*Job) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.Name)
	}
	return out
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // file:line:col: message
	}{
		{"unknown key", "build:\n  scirpt: x\n  script: y\n", "ci.yml:2:3: jobs:build config contains unknown keys: scirpt"},
		{"no script", "build:\n  stage: test\n", "ci.yml:1:1: jobs:build config should implement the script:, run:, or trigger: keyword"},
		{"job not a hash", "build: echo\n", "ci.yml:1:1: jobs:build config should implement the script:, run:, or trigger: keyword"},
		{"blank script", "build:\n  script:\n", "ci.yml:2:10: jobs:build script can't be blank"},
		{"empty script list", "build:\n  script: []\n", "ci.yml:2:11: jobs:build script can't be blank"},
		{"script number", "build:\n  script: [1]\n", "ci.yml:2:11: jobs:build:script config should be a string or a nested array of strings up to 10 levels deep"},
		{"script too deep", "build:\n  script: [[[[[[[[[[[x]]]]]]]]]]]\n", "ci.yml:2:11: jobs:build:script config should be a string or a nested array of strings up to 10 levels deep"},
		{"bad when", "build:\n  script: x\n  when: never\n", "ci.yml:3:9: jobs:build when should be one of: on_success, on_failure, always, manual, delayed"},
		{"bad stage", "build:\n  script: x\n  stage: nope\n", "ci.yml:3:10: build job: chosen stage nope does not exist; available stages are .pre, build, test, deploy, .post"},
		{"bad timeout", "build:\n  script: x\n  timeout: soon\n", "ci.yml:3:12: jobs:build timeout should be a duration"},
		{"timeout too long", "build:\n  script: x\n  timeout: 2 months\n", "ci.yml:3:12: jobs:build timeout should not exceed the limit"},
		{"tags string", "build:\n  script: x\n  tags: k8s\n", "ci.yml:3:9: jobs:build:tags config should be an array of strings"},
		{"allow_failure string", "build:\n  script: x\n  allow_failure: yes please\n", "ci.yml:3:18: jobs:build:allow_failure config should be a hash or a boolean value"},
		{"exit codes", "build:\n  script: x\n  allow_failure:\n    exit_codes: [a]\n", "ci.yml:4:17: jobs:build:allow_failure exit codes should be an array of integers or an integer"},
		{"image list", "build:\n  script: x\n  image: [a]\n", "ci.yml:3:10: jobs:build:image config should be a hash or a string"},
		{"image alias", "build:\n  script: x\n  image:\n    name: a\n    alias: b\n", "ci.yml:5:5: jobs:build:image config contains unknown keys: alias"},
		{"image no name", "build:\n  script: x\n  image:\n    entrypoint: [a]\n", "ci.yml:4:5: jobs:build:image name can't be blank"},
		{"variables list", "variables: [a]\nbuild:\n  script: x\n", "ci.yml:1:12: variables config should be a hash of key value pairs, value can be a hash"},
		{"variable bool", "build:\n  script: x\n  variables:\n    A: true\n", "ci.yml:4:8: jobs:build:variables config should be a hash of key value pairs, value can be a hash"},
		{"variable data key", "build:\n  script: x\n  variables:\n    A:\n      value: a\n      description: d\n", "ci.yml:5:7: jobs:build:variables config uses invalid data keys: description"},
		{"stages", "stages: build\nbuild:\n  script: x\n", "ci.yml:1:9: stages config should be an array of strings"},
		{"default unknown", "default:\n  script: x\nbuild:\n  script: x\n", "ci.yml:2:3: default config contains unknown keys: script"},
		{"only hidden jobs", ".hidden:\n  script: x\n", "ci.yml:1:1: jobs config should contain at least one visible job"},
		{"not a hash", "- a\n- b\n", "ci.yml:1:1: Invalid configuration format"},
		{"empty", "\n\n", "ci.yml: Please provide content of .gitlab-ci.yml"},
		{"yaml syntax", "build:\n  script: [x\n", "ci.yml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("ci.yml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T is not an ErrorList", err)
			}
			if !strings.HasPrefix(list[0].Error(), tt.want) {
				t.Errorf("error = %q\nwant    %q", list[0].Error(), tt.want)
			}
		})
	}
}

func TestMultipleErrorsReported(t *testing.T) {
	_, err := Parse("ci.yml", []byte("a:\n  script: x\n  foo: 1\nb:\n  script: x\n  when: later\n"))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
	if list[0].Pos.Line != 3 || list[1].Pos.Line != 6 {
		t.Errorf("errors not in file order: %v", err)
	}
}

func TestWarningsForIgnoredKeywords(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte("build:\n  script: x\n  coverage: '/(\\d+)%/'\n  resource_group: prod\n  artifacts:\n    paths: [a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 2 {
		t.Fatalf("warnings = %v", cfg.Warnings)
	}
	if got := cfg.Warnings[1].Error(); got != "ci.yml:4:3: jobs:build:resource_group is not supported by podrunner and is ignored" {
		t.Errorf("warning = %q", got)
	}
	if cfg.Job("build").Keys["coverage"] == nil {
		t.Error("raw node of ignored keyword not kept")
	}
}

func TestSpecHeader(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte("spec:\n  inputs: {}\n---\nbuild:\n  script: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Job("build") == nil {
		t.Fatal("job after spec header missing")
	}
}

func TestDelayed(t *testing.T) {
	cfg, err := Parse("ci.yml", []byte("build:\n  script: x\n  when: delayed\n  start_in: 30 seconds\n"))
	if err != nil {
		t.Fatal(err)
	}
	if j := cfg.Job("build"); j.StartIn != 30*time.Second {
		t.Errorf("start_in = %v", j.StartIn)
	}
	if _, err := Parse("ci.yml", []byte("build:\n  script: x\n  start_in: 1s\n")); err == nil {
		t.Error("start_in without delayed accepted")
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1h 30m", 90 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"10 minutes", 10 * time.Minute, true},
		{"2 hours and 5 minutes", 125 * time.Minute, true},
		{"1.5h", 90 * time.Minute, true},
		{"3600", time.Hour, true},
		{"1 day", 24 * time.Hour, true},
		{"1 week", 7 * 24 * time.Hour, true},
		{"01:30:00", 90 * time.Minute, true},
		{"1 hr, 2 mins, 3 secs", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"", 0, false},
		{"soon", 0, false},
		{"5 parsecs", 0, false},
		{"-5m", 0, false},
		{"200000000:0", 0, false}, // past time.Duration: refused, not negative (found by fuzzing)
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
