package ciyaml

import (
	"fmt"
	"regexp"
	"strings"
)

// Evaluate returns the jobs GitLab creates for a pipeline in env: after
// `workflow:rules` (an error wrapping ErrFiltered when the pipeline is
// filtered out), `rules:` (the first matching rule wins; no match or
// when: never drops the job; the rule's when, start_in, allow_failure,
// interruptible and needs replace the job's, its variables are appended
// after the job's) and `only`/`except` (default only: [branches, tags]).
// Variables of a matching workflow rule are prepended to every job's
// Variables (they override global ones, job ones override them).
//
// Expressions see variables with GitLab's precedence (see scope): env
// over job YAML over workflow over global YAML, nested references
// expanded. Jobs are copies in file order; the Config is not changed. A kept job that needs a dropped job (not optional) is
// GitLab's pipeline creation error.
func (c *Config) Evaluate(env Env) ([]*Job, error) {
	raw := map[string]string{}
	yaml := map[string]Variable{}
	for _, v := range c.Variables {
		raw[v.Key] = v.Value
		yaml[v.Key] = v
	}
	var wfVars []Variable
	if c.Workflow != nil {
		sc := &scope{env: env.Variables, global: raw, yaml: yaml}
		matched := false
		for i := range c.Workflow {
			r := &c.Workflow[i]
			ok, err := ruleMatches(r, env, sc.lookup)
			if err != nil {
				return nil, fmt.Errorf("workflow:rules: %w", err)
			}
			if !ok {
				continue
			}
			if r.When == WhenNever {
				return nil, fmt.Errorf("%w", ErrFiltered)
			}
			matched = true
			wfVars = r.Variables
			break
		}
		if !matched {
			return nil, fmt.Errorf("%w", ErrFiltered)
		}
		for _, v := range wfVars {
			yaml[v.Key] = v
		}
	}

	var out []*Job
	kept := map[string]bool{}
	for _, j := range c.Jobs {
		jv := make(map[string]Variable, len(yaml)+len(j.Variables))
		for k, v := range yaml {
			if j.InheritVariables == nil || contains(j.InheritVariables, k) {
				jv[k] = v
			}
		}
		for _, v := range j.Variables {
			jv[v.Key] = v
		}
		sc := &scope{env: env.Variables, global: raw, yaml: jv}
		nj := cloneJob(j)
		var inherited []Variable
		for _, v := range wfVars {
			if j.InheritVariables == nil || contains(j.InheritVariables, v.Key) {
				inherited = append(inherited, v)
			}
		}
		if len(inherited) > 0 {
			nj.Variables = append(inherited, nj.Variables...)
		}
		keep, err := applyConditions(nj, env, sc.lookup)
		if err != nil {
			return nil, fmt.Errorf("%s job: %w", j.Name, err)
		}
		if !keep {
			continue
		}
		out = append(out, nj)
		kept[nj.Name] = true
	}
	for _, j := range out {
		var needs []Need
		if j.Needs != nil {
			needs = []Need{}
		}
		for _, n := range j.Needs {
			if kept[n.Job] {
				needs = append(needs, n)
				continue
			}
			if !n.Optional {
				return nil, fmt.Errorf("'%s' job needs '%s' job, but '%s' does not exist in the pipeline. "+
					"This might be because of the only, except, or rules keywords. "+
					"To need a job that sometimes does not exist in the pipeline, use needs:optional.", j.Name, n.Job, n.Job)
			}
		}
		j.Needs = needs
		if j.Dependencies != nil {
			deps := []string{}
			for _, d := range j.Dependencies {
				if kept[d] {
					deps = append(deps, d)
				}
			}
			j.Dependencies = deps
		}
	}
	return out, nil
}

// applyConditions applies rules or only/except to j (a copy) and reports
// whether the job is in the pipeline.
func applyConditions(j *Job, env Env, lookup func(string) (string, bool)) (bool, error) {
	if j.Rules != nil {
		for i := range j.Rules {
			r := &j.Rules[i]
			ok, err := ruleMatches(r, env, lookup)
			if err != nil {
				return false, err
			}
			if !ok {
				continue
			}
			if r.When == WhenNever {
				return false, nil
			}
			if r.When != "" {
				j.When = r.When
			}
			if r.StartIn != 0 {
				j.StartIn = r.StartIn
			}
			// With rules, a manual job does not allow failure unless told.
			if !j.allowFailureSet {
				j.AllowFailure = false
			}
			if r.AllowFailure != nil {
				j.AllowFailure = *r.AllowFailure
				j.AllowFailureExitCodes = nil
			}
			if r.Interruptible != nil {
				j.Interruptible = *r.Interruptible
			}
			if len(r.Variables) > 0 {
				j.Variables = append(append([]Variable{}, j.Variables...), r.Variables...)
			}
			if r.Needs != nil {
				j.Needs = append([]Need{}, r.Needs...)
			}
			return true, nil
		}
		return false, nil
	}
	only := j.Only
	if only == nil {
		only = &Policy{Refs: []string{"branches", "tags"}, HasRefs: true}
	}
	ok, err := policySatisfied(only, env, lookup)
	if err != nil || !ok {
		return false, err
	}
	if j.Except != nil {
		ex, err := policySatisfied(j.Except, env, lookup)
		if err != nil || ex {
			return false, err
		}
	}
	return true, nil
}

func ruleMatches(r *Rule, env Env, lookup func(string) (string, bool)) (bool, error) {
	if r.If != nil && !r.If.Evaluate(lookup) {
		return false, nil
	}
	if r.Changes != nil {
		ok, err := changed(env, expandAll(r.Changes, lookup))
		if err != nil || !ok {
			return false, err
		}
	}
	if r.Exists != nil {
		if env.Exists == nil || len(r.Exists) == 0 {
			return false, nil
		}
		ok, err := env.Exists(expandAll(r.Exists, lookup))
		if err != nil {
			return false, fmt.Errorf("rules:exists: %w", err)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

func changed(env Env, globs []string) (bool, error) {
	if len(globs) == 0 {
		return false, nil
	}
	if env.Changes == nil {
		return true, nil
	}
	ok, err := env.Changes(globs)
	if err != nil {
		return false, fmt.Errorf("changes: %w", err)
	}
	return ok, nil
}

// policySatisfied: every clause given has a matching entry.
func policySatisfied(p *Policy, env Env, lookup func(string) (string, bool)) (bool, error) {
	if p.HasRefs {
		any := false
		for _, r := range p.Refs {
			if refMatches(r, env) {
				any = true
				break
			}
		}
		if !any {
			return false, nil
		}
	}
	if p.HasVariables {
		any := false
		for _, e := range p.Variables {
			if e.Evaluate(lookup) {
				any = true
				break
			}
		}
		if !any {
			return false, nil
		}
	}
	if p.HasChanges {
		ok, err := changed(env, expandAll(p.Changes, lookup))
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// sourceKeywords maps only/except keywords to CI_PIPELINE_SOURCE values.
var sourceKeywords = map[string][]string{
	"api":                    {"api"},
	"chat":                   {"chat"},
	"external":               {"external"},
	"external_pull_requests": {"external_pull_request_event"},
	"merge_requests":         {"merge_request_event"},
	"pipelines":              {"pipeline", "parent_pipeline"},
	"pushes":                 {"push"},
	"schedules":              {"schedule"},
	"triggers":               {"trigger"},
	"web":                    {"web"},
}

func refMatches(ref string, env Env) bool {
	pattern, project, hasProject := strings.Cut(ref, "@")
	if strings.HasPrefix(ref, "/") && patternFromString(ref) != nil {
		pattern, hasProject = ref, false
	}
	if hasProject && project != env.Variables["CI_PROJECT_PATH"] {
		return false
	}
	switch pattern {
	case "branches":
		return env.RefType == "branch" && env.Source != "merge_request_event"
	case "tags":
		return env.RefType == "tag"
	}
	if srcs, ok := sourceKeywords[pattern]; ok {
		for _, s := range srcs {
			if env.Source == s {
				return true
			}
		}
		return false
	}
	if re := patternFromString(pattern); re != nil {
		return re.MatchString(env.Ref)
	}
	return pattern == env.Ref
}

// maxExpandDepth bounds nested variable expansion ($A → $B → …).
const maxExpandDepth = 10

// scope resolves variables for expressions with GitLab's precedence:
// pipeline, project and predefined variables (env) over job YAML
// variables over workflow:rules variables over global YAML variables.
// The coordinator's env also holds the global YAML variables; an env
// value equal to the global YAML value is taken for that YAML variable,
// so a job variable overrides it. YAML values are expanded ($VAR,
// ${VAR}; $$ is a dollar) unless `expand: false`, as GitLab does for
// nested variables in rules.
type scope struct {
	env    map[string]string
	global map[string]string   // raw global YAML values
	yaml   map[string]Variable // global < workflow < job
}

func (s *scope) lookup(name string) (string, bool) { return s.get(name, 0) }

func (s *scope) get(name string, depth int) (string, bool) {
	yv, inYAML := s.yaml[name]
	if ev, ok := s.env[name]; ok {
		g, isGlobal := s.global[name]
		if !isGlobal || g != ev {
			return ev, true
		}
		if !inYAML {
			// A global YAML variable the job does not inherit.
			return "", false
		}
	}
	if !inYAML {
		return "", false
	}
	if !yv.Expand || depth >= maxExpandDepth || !strings.Contains(yv.Value, "$") {
		return yv.Value, true
	}
	return expandString(yv.Value, func(n string) string {
		v, _ := s.get(n, depth+1)
		return v
	}), true
}

var varRefRe = regexp.MustCompile(`\$\$|\$(\w+)|\$\{(\w+)\}`)

// expandString replaces $VAR and ${VAR} (unknown ones become empty) and
// $$ (a dollar).
func expandString(s string, get func(string) string) string {
	return varRefRe.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		return get(strings.Trim(m, "${}"))
	})
}

// expandAll replaces $VAR and ${VAR} in paths (unknown ones become
// empty), as GitLab does for changes and exists.
func expandAll(paths []string, lookup func(string) (string, bool)) []string {
	out := make([]string, len(paths))
	for i, s := range paths {
		out[i] = expandString(s, func(name string) string {
			v, _ := lookup(name)
			return v
		})
	}
	return out
}

// cloneJob copies a job deeply enough that callers may change slices and
// maps of the copy without touching the Config.
func cloneJob(j *Job) *Job {
	c := *j
	c.Services = append([]Image(nil), j.Services...)
	c.Tags = cloneStrings(j.Tags)
	c.BeforeScript = cloneStrings(j.BeforeScript)
	c.Script = cloneStrings(j.Script)
	c.AfterScript = cloneStrings(j.AfterScript)
	c.AllowFailureExitCodes = append([]int(nil), j.AllowFailureExitCodes...)
	c.Variables = append([]Variable(nil), j.Variables...)
	if j.Needs != nil {
		c.Needs = append([]Need{}, j.Needs...)
	}
	c.Dependencies = cloneStrings(j.Dependencies)
	c.InheritVariables = cloneStrings(j.InheritVariables)
	c.Retry.When = cloneStrings(j.Retry.When)
	c.Retry.ExitCodes = append([]int(nil), j.Retry.ExitCodes...)
	if j.Artifacts != nil {
		a := *j.Artifacts
		a.Paths, a.Exclude = cloneStrings(a.Paths), cloneStrings(a.Exclude)
		if a.Reports != nil {
			a.Reports = map[string][]string{}
			for k, v := range j.Artifacts.Reports {
				a.Reports[k] = cloneStrings(v)
			}
		}
		c.Artifacts = &a
	}
	if j.Cache != nil {
		c.Cache = make([]Cache, len(j.Cache))
		for i, ca := range j.Cache {
			ca.KeyFiles, ca.Paths, ca.FallbackKeys = cloneStrings(ca.KeyFiles), cloneStrings(ca.Paths), cloneStrings(ca.FallbackKeys)
			c.Cache[i] = ca
		}
	}
	if j.Image != nil {
		im := *j.Image
		c.Image = &im
	}
	return &c
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}
