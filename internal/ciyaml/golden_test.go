package ciyaml

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/pipelines")

// TestGolden parses every testdata/pipelines/*.yml and evaluates it in
// the environments named by its "# env:" header lines (none: a push to
// main), and compares the job graph with the .golden file next to it.
// Includes are read from testdata/pipelines/repo/.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/pipelines/*.yml")
	if len(files) == 0 {
		t.Fatal("no golden pipelines")
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got := renderPipeline(name, data)
			golden := filepath.Join("testdata/pipelines", strings.TrimSuffix(name, ".yml")+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("job graph differs from %s (go test -update, then review):\n%s", golden, diffLines(string(want), got))
			}
		})
	}
}

func repoReader(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata/pipelines/repo", filepath.FromSlash(path.Clean("/"+name))))
}

func envsOf(data []byte) []string {
	var envs []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "# env:"); ok {
			envs = append(envs, strings.TrimSpace(rest))
		}
	}
	if len(envs) == 0 {
		envs = []string{"ref=main"}
	}
	return envs
}

// parseEnv reads "ref=main tag=1 source=web changes=a/*,b exists=x VAR=v".
func parseEnv(spec string) Env {
	env := Env{Ref: "main", RefType: "branch", Source: "push", Variables: map[string]string{}}
	var changes, exists []string
	hasChanges := false
	for _, f := range strings.Fields(spec) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "ref":
			env.Ref = v
		case "tag":
			env.Ref, env.RefType = v, "tag"
		case "source":
			env.Source = v
		case "changes":
			hasChanges = true
			if v != "" {
				changes = strings.Split(v, ",")
			}
		case "exists":
			exists = strings.Split(v, ",")
		default:
			env.Variables[k] = v
		}
	}
	env.Variables["CI_COMMIT_REF_NAME"] = env.Ref
	env.Variables["CI_PIPELINE_SOURCE"] = env.Source
	env.Variables["CI_DEFAULT_BRANCH"] = "main"
	env.Variables["CI_PROJECT_PATH"] = "group/project"
	if env.RefType == "tag" {
		env.Variables["CI_COMMIT_TAG"] = env.Ref
	} else if env.Source != "merge_request_event" {
		env.Variables["CI_COMMIT_BRANCH"] = env.Ref
	}
	match := func(files []string) func([]string) (bool, error) {
		return func(globs []string) (bool, error) {
			for _, g := range globs {
				for _, f := range files {
					if ok, _ := path.Match(g, f); ok || g == f || (strings.HasSuffix(g, "/**/*") && strings.HasPrefix(f, strings.TrimSuffix(g, "**/*"))) {
						return true, nil
					}
				}
			}
			return false, nil
		}
	}
	if hasChanges {
		env.Changes = match(changes)
	}
	env.Exists = match(exists)
	return env
}

func renderPipeline(name string, data []byte) string {
	var b strings.Builder
	cfg, err := ParseWith(name, data, ParseOptions{ReadFile: repoReader})
	if err != nil {
		fmt.Fprintf(&b, "parse error:\n%s\n", err)
		return b.String()
	}
	fmt.Fprintf(&b, "stages: %s\n", strings.Join(cfg.Stages, ", "))
	if cfg.WorkflowName != "" {
		fmt.Fprintf(&b, "workflow name: %s\n", cfg.WorkflowName)
	}
	for _, v := range cfg.Variables {
		fmt.Fprintf(&b, "variable %s\n", varString(v))
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	for _, spec := range envsOf(data) {
		fmt.Fprintf(&b, "\n=== env: %s\n", spec)
		jobs, err := cfg.Evaluate(parseEnv(spec))
		if errors.Is(err, ErrFiltered) {
			fmt.Fprintf(&b, "filtered: %v\n", err)
			continue
		}
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		for _, j := range jobs {
			renderJob(&b, j)
		}
	}
	return b.String()
}

func varString(v Variable) string {
	s := fmt.Sprintf("%s=%q", v.Key, v.Value)
	if !v.Expand {
		s += " (raw)"
	}
	if v.Description != "" {
		s += fmt.Sprintf(" (description %q)", v.Description)
	}
	return s
}

func renderJob(b *strings.Builder, j *Job) {
	fmt.Fprintf(b, "job %q stage=%s when=%s", j.Name, j.Stage, j.When)
	if j.StartIn != 0 {
		fmt.Fprintf(b, " start_in=%s", j.StartIn)
	}
	fmt.Fprintf(b, " allow_failure=%v", j.AllowFailure)
	if len(j.AllowFailureExitCodes) > 0 {
		fmt.Fprintf(b, " exit_codes=%v", j.AllowFailureExitCodes)
	}
	b.WriteString("\n")
	line := func(k string, v any) { fmt.Fprintf(b, "  %s: %v\n", k, v) }
	if j.ParallelOf != "" {
		line("node", fmt.Sprintf("%d/%d of %q", j.NodeIndex, j.NodeTotal, j.ParallelOf))
	}
	if j.Image != nil {
		line("image", imageString(*j.Image))
	}
	for _, s := range j.Services {
		line("service", imageString(s))
	}
	if len(j.Tags) > 0 {
		line("tags", strings.Join(j.Tags, ", "))
	}
	for _, s := range j.BeforeScript {
		line("before_script", fmt.Sprintf("%q", s))
	}
	for _, s := range j.Script {
		line("script", fmt.Sprintf("%q", s))
	}
	for _, s := range j.AfterScript {
		line("after_script", fmt.Sprintf("%q", s))
	}
	if j.Timeout != 0 {
		line("timeout", j.Timeout)
	}
	for _, v := range j.Variables {
		line("variable", varString(v))
	}
	if j.InheritVariables != nil {
		line("inherit variables", fmt.Sprintf("%q", j.InheritVariables))
	}
	if j.Needs != nil {
		var ns []string
		for _, n := range j.Needs {
			s := n.Job
			var flags []string
			if !n.Artifacts {
				flags = append(flags, "no artifacts")
			}
			if n.Optional {
				flags = append(flags, "optional")
			}
			if len(flags) > 0 {
				s += " (" + strings.Join(flags, ", ") + ")"
			}
			ns = append(ns, fmt.Sprintf("%q", s))
		}
		line("needs", "["+strings.Join(ns, ", ")+"]")
	}
	if j.Dependencies != nil {
		line("dependencies", fmt.Sprintf("%q", j.Dependencies))
	}
	if j.Retry.Max != 0 || len(j.Retry.When) > 0 || len(j.Retry.ExitCodes) > 0 {
		line("retry", fmt.Sprintf("max=%d when=%v exit_codes=%v", j.Retry.Max, j.Retry.When, j.Retry.ExitCodes))
	}
	if a := j.Artifacts; a != nil {
		s := fmt.Sprintf("paths=%q exclude=%q untracked=%v when=%s", a.Paths, a.Exclude, a.Untracked, a.When)
		if a.Name != "" {
			s += fmt.Sprintf(" name=%q", a.Name)
		}
		if a.ExpireIn != "" {
			s += fmt.Sprintf(" expire_in=%q", a.ExpireIn)
		}
		var rs []string
		for k, v := range a.Reports {
			rs = append(rs, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(rs)
		if len(rs) > 0 {
			s += " reports: " + strings.Join(rs, " ")
		}
		line("artifacts", s)
	}
	if j.Cache != nil && len(j.Cache) == 0 {
		line("cache", "none")
	}
	for _, c := range j.Cache {
		key := fmt.Sprintf("%q", c.Key)
		if c.KeyFiles != nil {
			key = fmt.Sprintf("files=%q prefix=%q", c.KeyFiles, c.KeyPrefix)
		}
		s := fmt.Sprintf("key=%s paths=%q untracked=%v policy=%s when=%s", key, c.Paths, c.Untracked, c.Policy, c.When)
		if len(c.FallbackKeys) > 0 {
			s += fmt.Sprintf(" fallback_keys=%q", c.FallbackKeys)
		}
		if c.Unprotect {
			s += " unprotect"
		}
		line("cache", s)
	}
	if j.Environment != "" {
		line("environment", j.Environment)
	}
	if j.Interruptible {
		line("interruptible", true)
	}
}

func imageString(i Image) string {
	s := i.Name
	if i.Alias != "" {
		s += " alias=" + i.Alias
	}
	if i.Entrypoint != nil {
		s += fmt.Sprintf(" entrypoint=%q", i.Entrypoint)
	}
	if i.Command != nil {
		s += fmt.Sprintf(" command=%q", i.Command)
	}
	for _, v := range i.Variables {
		s += " " + varString(v)
	}
	if i.PullPolicy != nil {
		s += fmt.Sprintf(" pull_policy=%q", i.PullPolicy)
	}
	return s
}

// diffLines shows the first differing lines.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\nwant %s\ngot  %s", i+1, a, b)
		}
	}
	return ""
}
