package ciyaml

import (
	"os"
	"path/filepath"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		full,
		"build:\n  script: x\n",
		"a: &a [*a]\n",
		"x: &x {<<: *x}\nb:\n  <<: *x\n  script: y\n",
		"spec: {}\n---\nb:\n  script: [[x]]\n",
		"b:\n  script: x\n  timeout: 1:2:3\n",
		"b:\n  script: x\n  allow_failure: {exit_codes: 1}\n",
		"include: ci/ok.yml\n.t: {script: [a]}\nj: {extends: .t, needs: [included], rules: [{if: '$A == \"b\"'}]}\n",
		"j:\n  script: !reference [.t, script]\n.t:\n  script: [x]\n",
		"j:\n  script: x\n  parallel: {matrix: [{A: [1, 2], B: x}]}\nk:\n  script: y\n  needs: [{job: j, parallel: {matrix: [{A: 1}]}}]\n",
		"j:\n  script: x\n  only: {refs: [/^v/, tags], variables: [$A]}\n  except: [main]\n",
		"workflow: {rules: [{if: $X, when: never}, {when: always}]}\nj: {script: x, cache: {key: {files: [a]}}, artifacts: {paths: [a], reports: {dotenv: e}}, retry: {max: 2, when: always}}\n",
	} {
		f.Add([]byte(s))
	}
	files, _ := filepath.Glob("testdata/pipelines/*.yml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseWith("fuzz.yml", data, ParseOptions{ReadFile: memFS(errorFiles)})
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		env := withVars(pushMain, "A", "b", "X", "")
		if _, err := cfg.Evaluate(env); err != nil && err.Error() == "" {
			t.Fatal("empty evaluate error")
		}
	})
}

func FuzzExpression(f *testing.F) {
	for _, s := range []string{
		`$A == "b"`, `$A =~ /^v\d+$/i && ($B || $C != null)`, `${A} != 'x\'y'`, `$A =~ $B`,
		`(($A))`, `$A !~ /a\/b/ms || "x"`, `null == $Z`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseExpression(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		vars := map[string]string{"A": "b", "B": "/b/", "C": ""}
		_ = e.Evaluate(func(n string) (string, bool) { v, ok := vars[n]; return v, ok })
		_ = e.Evaluate(nil)
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1h 30m", "10 minutes", "01:30:00", "3600", "1.5h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Fatalf("negative duration %v for %q", d, s)
		}
	})
}
