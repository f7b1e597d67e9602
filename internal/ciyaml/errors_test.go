package ciyaml

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func memFS(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("open %s: no such file", name)
	}
}

var errorFiles = map[string]string{
	"ci/ok.yml":       "included:\n  script: x\n",
	"ci/bad.yml":      "inc:\n  scirpt: x\n  script: y\n",
	"ci/syntax.yml":   "a: [\n",
	"ci/empty.yml":    "\n",
	"ci/loop-a.yml":   "include: ci/loop-b.yml\n",
	"ci/loop-b.yml":   "include: ci/loop-a.yml\n",
	"ci/remote-2.yml": "include:\n  - project: g/p\n    file: x.yml\n",
	"ci/needs.yml":    "inc-job:\n  script: x\n  needs: [ghost]\n",
}

// TestComposeAndValidationErrors asserts message and position of every
// error case beyond the basic keyword checks of TestParseErrors.
func TestComposeAndValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // first error: file:line:col: message
	}{
		// needs and dependencies
		{"undefined need", "build:\n  script: x\ntest:\n  script: y\n  needs: [buidl]\n",
			"ci.yml:5:11: jobs:test job: undefined need: buidl"},
		{"undefined need hash", "test:\n  script: y\n  needs:\n    - job: nope\n      artifacts: false\n",
			"ci.yml:4:7: jobs:test job: undefined need: nope"},
		{"need later stage", "build:\n  stage: build\n  script: x\n  needs: [deploy]\ndeploy:\n  stage: deploy\n  script: y\n",
			"ci.yml:4:11: jobs:build job: need deploy is not defined in current or prior stages"},
		{"needs cycle", "a:\n  script: x\n  needs: [b]\nb:\n  script: y\n  needs: [a]\n",
			"ci.yml:3:10: The pipeline has circular dependencies"},
		{"need self", "a:\n  script: x\n  needs: [a]\n", "ci.yml:3:10: The pipeline has circular dependencies"},
		{"duplicate need", "a:\n  script: x\nb:\n  script: x\n  needs: [a, a]\n",
			"ci.yml:5:14: b has the following needs duplicated: a."},
		{"needs not a list", "a:\n  script: x\n  needs: a\n", "ci.yml:3:10: jobs:a:needs config can only be a Hash or an Array"},
		// $[[ ]] interpolation is refused with one error, never run as text.
		{"inputs in a script", "spec:\n  inputs:\n    x:\n---\na:\n  script: echo $[[ inputs.x ]]\n",
			"ci.yml:6:11: `$[[ ... ]]` interpolation (spec:inputs, include:inputs, CI/CD components) is not supported by podrunner exec: replace it with the values (or variables) for a local run"},
		{"inputs in a job name", "build-$[[ inputs.env ]]:\n  script: x\n",
			"ci.yml:1:1: `$[[ ... ]]` interpolation (spec:inputs, include:inputs, CI/CD components) is not supported by podrunner exec: replace it with the values (or variables) for a local run"},
		// Local files are read at the path as written: ./ is not stripped.
		{"include dot slash", "include: ./ci/ok.yml\na:\n  script: x\n", "ci.yml:1:10: Local file `./ci/ok.yml` does not exist!"},
		// Entry::Rules validates presence: an empty list is an error.
		{"rules empty", "a:\n  script: x\n  rules: []\n", "ci.yml:3:10: jobs:a:rules config can't be blank"},
		{"need unknown key", "a:\n  script: x\nb:\n  script: x\n  needs:\n    - job: a\n      artifact: false\n",
			"ci.yml:7:7: jobs:b:needs:need config contains unknown keys: artifact"},
		{"undefined dependency", "a:\n  script: x\n  dependencies: [nope]\n", "ci.yml:3:17: jobs:a job: undefined dependency: nope"},
		{"dependency same stage", "a:\n  script: x\nb:\n  script: x\n  dependencies: [a]\n",
			"ci.yml:5:17: jobs:b job: dependency a is not defined in prior stages"},
		{"dependency not in needs", "a:\n  stage: build\n  script: x\nc:\n  stage: build\n  script: x\nb:\n  script: x\n  needs: [a]\n  dependencies: [c]\n",
			"ci.yml:10:17: jobs:b dependencies the c should be part of needs"},
		// rules, only/except, workflow
		{"bad rules if", "a:\n  script: x\n  rules:\n    - if: $A == \n", "ci.yml:4:11: jobs:a:rules:rule if invalid expression syntax (unexpected end of expression)"},
		{"bad rules if operator", "a:\n  script: x\n  rules:\n    - if: $A = \"x\"\n", "ci.yml:4:11: jobs:a:rules:rule if invalid expression syntax"},
		{"bad rules if regex", "a:\n  script: x\n  rules:\n    - if: $A =~ /(/\n", "ci.yml:4:11: jobs:a:rules:rule if invalid expression syntax (invalid pattern"},
		{"rules not a list", "a:\n  script: x\n  rules: {if: $A}\n", "ci.yml:3:10: jobs:a:rules config should be an array of hashes"},
		{"rule unknown key", "a:\n  script: x\n  rules:\n    - iff: $A\n", "ci.yml:4:7: jobs:a:rules:rule config contains unknown keys: iff"},
		{"rule when", "a:\n  script: x\n  rules:\n    - when: sometimes\n", "ci.yml:4:13: jobs:a:rules:rule when unknown value: sometimes"},
		{"rules with only", "a:\n  script: x\n  only: [main]\n  rules:\n    - when: always\n", "ci.yml:3:3: jobs:a config key may not be used with `rules`: only"},
		{"only bad regex", "a:\n  script: x\n  only: ['/(/']\n", "ci.yml:3:9: jobs:a:only config should be an array of strings or regular expressions"},
		{"only variables syntax", "a:\n  script: x\n  only:\n    variables: ['$A ==']\n", "ci.yml:4:17: jobs:a:only:variables config invalid expression syntax"},
		{"only unknown key", "a:\n  script: x\n  only:\n    ref: [main]\n", "ci.yml:4:5: jobs:a:only config contains unknown keys: ref"},
		{"workflow when", "workflow:\n  rules:\n    - when: manual\na:\n  script: x\n", "ci.yml:3:13: workflow:rules:rule when unknown value: manual"},
		// YAML
		{"bad yaml", "a:\n  script: x\n b: y\n", "ci.yml:2:1: Invalid configuration format: did not find expected key"},
		{"bad yaml tab", "a:\n\tscript: x\n", "ci.yml:2:1: Invalid configuration format: found character that cannot start any token"},
		{"unknown alias", "a:\n  script: *nope\n", "ci.yml:2:11: Invalid configuration format: unknown anchor 'nope' referenced"},
		// include
		{"include remote", "include: https://example.com/ci.yml\na:\n  script: x\n", "ci.yml:1:10: include:remote is not supported by podrunner exec"},
		{"include remote hash", "include:\n  - remote: https://example.com/ci.yml\na:\n  script: x\n", "ci.yml:2:5: include:remote is not supported by podrunner exec"},
		{"include template", "include:\n  template: Auto-DevOps.gitlab-ci.yml\n", "ci.yml:2:3: include:template is not supported by podrunner exec"},
		{"include project", "include:\n  project: g/p\n  file: x.yml\n", "ci.yml:2:3: include:project is not supported by podrunner exec"},
		{"include nested project", "include: ci/remote-2.yml\n", "ci/remote-2.yml:2:5: include:project is not supported by podrunner exec"},
		{"include missing", "include: ci/nope.yml\na:\n  script: x\n", "ci.yml:1:10: Local file `ci/nope.yml` does not exist!"},
		{"include extension", "include: ci/ok.json\n", "ci.yml:1:10: Included file `ci/ok.json` does not have YAML extension!"},
		{"include bad yaml", "include:\n  local: ci/syntax.yml\n", "ci.yml:2:3: Included file `ci/syntax.yml` does not have valid YAML syntax!"},
		{"include empty", "include: [ci/empty.yml]\na:\n  script: x\n", "ci.yml:1:11: Local file `ci/empty.yml` is empty!"},
		{"include loop", "include: ci/loop-a.yml\n", "ci/loop-b.yml:1:10: Maximum of 150 nested includes are allowed!"},
		{"include wildcard", "include: 'ci/*.yml'\n", "ci.yml:1:10: Included file `ci/*.yml`: wildcard paths are not supported"},
		{"need error in included file", "include: ci/needs.yml\n", "ci/needs.yml:3:11: jobs:inc-job job: undefined need: ghost"},
		{"error in included file", "include: ci/bad.yml\n", "ci/bad.yml:2:3: jobs:inc config contains unknown keys: scirpt"},
		// extends and !reference
		{"extends unknown", "a:\n  extends: .nope\n  script: x\n", "ci.yml:2:12: a: unknown keys in `extends` (.nope)"},
		{"extends invalid base", ".b: [x]\na:\n  extends: .b\n  script: x\n", "ci.yml:3:12: a: invalid base hashes in `extends` (.b)"},
		{"extends circular", ".a:\n  extends: .b\n.b:\n  extends: .a\nj:\n  extends: .a\n  script: x\n", "ci.yml:2:12: .a: circular dependency detected in `extends`"},
		{"extends self", "j:\n  extends: j\n  script: x\n", "ci.yml:2:12: j: circular dependency detected in `extends`"},
		{"extends too deep", deepExtends(12), "ci.yml:26:12: job: nesting too deep in `extends`"},
		{"extends not string", "j:\n  extends: {a: b}\n  script: x\n", "ci.yml:2:12: jobs:j extends should be an array of strings or a string"},
		{"reference missing", "j:\n  script: !reference [.nope, script]\n", "ci.yml:2:11: !reference [\".nope\", \"script\"] could not be found"},
		{"reference circular", ".a:\n  script: !reference [.b, script]\n.b:\n  script: !reference [.a, script]\nj:\n  script: !reference [.a, script]\n",
			"ci.yml:2:11: !reference [\".b\", \"script\"] is part of a circular chain"},
		{"reference not a list", "j:\n  script: !reference x\n", "ci.yml:2:11: !reference should be an array of strings"},
		{"default stage missing", "stages: [build]\nj:\n  script: x\n", "ci.yml:2:1: j job: chosen stage test does not exist; available stages are .pre, build, .post"},
		// keyword values
		{"retry too big", "j:\n  script: x\n  retry: 3\n", "ci.yml:3:10: jobs:j:retry config must be between 0 and 2"},
		{"retry max", "j:\n  script: x\n  retry:\n    max: -1\n", "ci.yml:4:10: jobs:j:retry max must be between 0 and 2"},
		{"retry when", "j:\n  script: x\n  retry:\n    when: [script_failure, flaky]\n", "ci.yml:4:11: jobs:j:retry when contains unknown values: flaky"},
		{"retry unknown key", "j:\n  script: x\n  retry:\n    maximum: 1\n", "ci.yml:4:5: jobs:j:retry config contains unknown keys: maximum"},
		{"artifacts when", "j:\n  script: x\n  artifacts:\n    when: later\n", "ci.yml:4:11: jobs:j:artifacts when should be on_success, on_failure or always"},
		{"artifacts expire", "j:\n  script: x\n  artifacts:\n    expire_in: soon\n", "ci.yml:4:16: jobs:j:artifacts expire in should be a duration"},
		{"artifacts report", "j:\n  script: x\n  artifacts:\n    reports:\n      junk: x\n", "ci.yml:5:7: jobs:j:artifacts:reports config contains unknown keys: junk"},
		{"cache policy", "j:\n  script: x\n  cache:\n    policy: pul\n", "ci.yml:4:13: jobs:j:cache policy should be pull-push, push, or pull"},
		{"cache too many", "j:\n  script: x\n  cache: [{key: a}, {key: b}, {key: c}, {key: d}, {key: e}]\n", "ci.yml:3:10: jobs:j:cache config no more than 4 caches can be created"},
		{"cache key slash", "j:\n  script: x\n  cache:\n    key: a/b\n", "ci.yml:4:10: jobs:j:cache:key config cannot contain the \"/\" character"},
		{"cache key files", "j:\n  script: x\n  cache:\n    key:\n      files: [a, b, c]\n", "ci.yml:5:14: jobs:j:cache:key:files config has to be an array of one or two file paths"},
		{"parallel zero", "j:\n  script: x\n  parallel: 0\n", "ci.yml:3:13: jobs:j:parallel config must be greater than or equal to 1"},
		{"parallel too many", "j:\n  script: x\n  parallel: 201\n", "ci.yml:3:13: jobs:j:parallel config must be less than or equal to 200"},
		{"matrix too many", "j:\n  script: x\n  parallel:\n    matrix:\n      - A: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]\n        B: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]\n",
			"ci.yml:5:7: jobs:j:parallel:matrix config generates too many jobs (maximum is 200)"},
		{"matrix not a list", "j:\n  script: x\n  parallel:\n    matrix: {A: b}\n", "ci.yml:4:13: jobs:j:parallel:matrix config should be an array of hashes"},
		{"environment", "j:\n  script: x\n  environment: [a]\n", "ci.yml:3:16: jobs:j:environment config should be a hash or a string"},
		// Entry::Environment: ALLOWED_ACTIONS and Environment.deployment_tiers.
		{"environment action", "j:\n  script: x\n  environment: {name: e, action: deploy}\n", "ci.yml:3:34: jobs:j:environment action should be start, stop, prepare, verify, or access"},
		{"environment tier", "j:\n  script: x\n  environment: {name: e, deployment_tier: prod}\n", "ci.yml:3:43: jobs:j:environment deployment tier must be one of production, staging, testing, development, other"},
		{"interruptible", "j:\n  script: x\n  interruptible: yes please\n", "ci.yml:3:18: jobs:j interruptible should be a boolean value"},
		{"need to a later parallel job", "a:\n  script: x\n  needs: [b]\nb:\n  stage: deploy\n  script: y\n  parallel: 2\n",
			"ci.yml:3:11: jobs:a job: need b 1/2 is not defined in current or prior stages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseWith("ci.yml", []byte(tt.yaml), ParseOptions{ReadFile: memFS(errorFiles)})
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T is not an ErrorList: %v", err, err)
			}
			if !strings.HasPrefix(list[0].Error(), tt.want) {
				t.Errorf("error = %q\nwant    %q", list[0].Error(), tt.want)
			}
		})
	}
}

func deepExtends(n int) string {
	var b strings.Builder
	b.WriteString(".l0:\n  script: x\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, ".l%d:\n  extends: .l%d\n", i, i-1)
	}
	fmt.Fprintf(&b, "job:\n  extends: .l%d\n", n-1)
	return b.String()
}

func TestExtendsElevenLevels(t *testing.T) {
	if _, err := Parse("ci.yml", []byte(deepExtends(11))); err != nil {
		t.Fatalf("11 levels must be accepted: %v", err)
	}
}

func TestIncludeWithoutReader(t *testing.T) {
	_, err := Parse("ci.yml", []byte("include: a.yml\nj:\n  script: x\n"))
	if err == nil || !strings.Contains(err.Error(), "ci.yml:1:10: Local file `a.yml` does not exist!") {
		t.Fatalf("err = %v", err)
	}
}

// TestExpansionBombs: alias, merge-key, extends and !reference bombs
// must fail fast with a clear error instead of exhausting memory.
func TestExpansionBombs(t *testing.T) {
	laughs := "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		laughs += fmt.Sprintf("%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", n, n, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = n
	}
	merge := "x0: &x0 {k0: v}\n"
	for i := 1; i < 40; i++ {
		merge += fmt.Sprintf("x%d: &x%d {<<: [*x%d, *x%d], k%d: v}\n", i, i, i-1, i-1, i)
	}
	refs := ".r0: {script: [a, b, c, d, e, f, g, h]}\n"
	for i := 1; i < 9; i++ {
		refs += fmt.Sprintf(".r%d: {script: [!reference [.r%d, script], !reference [.r%d, script], !reference [.r%d, script], !reference [.r%d, script], !reference [.r%d, script], !reference [.r%d, script], !reference [.r%d, script], !reference [.r%d, script]]}\n", i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	refs += "j: {script: !reference [.r8, script]}\n"
	ext := ".big: {script: [" + strings.Repeat("x, ", 5000) + "x]}\n"
	for i := 0; i < 200; i++ {
		ext += fmt.Sprintf("j%d: {extends: .big}\n", i)
	}
	for name, doc := range map[string]string{"laughs": laughs + "j:\n  script: *i\n", "merge": merge + "j:\n  script: x\n  variables: *x39\n", "references": refs, "extends": ext} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse("ci.yml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), "too large") {
				t.Fatalf("err = %v", err)
			}
			t.Logf("failed in %v", time.Since(start))
		})
	}
}
